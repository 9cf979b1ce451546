"""Typed values of the standard optional parameters (TLVs) of SMPP 3.4 §5.3.

A PDU keeps its TLVs as raw octets (``pdu.tlvs``, tag -> value) so that
unknown and vendor tags survive a decode/encode round trip byte for byte.
This module knows the type of every standard tag (§5.3.2) and converts
between the raw octets and a Python value:

* Integer (1, 2 or 4 octets, big-endian)  <->  ``int``
* C-Octet String (NUL terminated)          <->  ``str`` (latin-1, so any octet survives)
* Octet String                             <->  ``bytes``

Errors are plain ``ValueError``/``TypeError``; ``pdu.get_tlv``/``pdu.set_tlv``
turn them into SMPP errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from .constants import Tag

#: The Length field of a TLV is a 2-octet Integer (§5.3.1).
TLV_MAX_LENGTH: Final = 0xFFFF


class TlvKind(Enum):
    INTEGER = "integer"
    C_OCTET_STRING = "c-octet string"
    OCTET_STRING = "octet string"


@dataclass(frozen=True, slots=True)
class TlvFormat:
    kind: TlvKind
    #: INTEGER: width in octets.  Strings: maximum length in octets (for a
    #: C-Octet String including its NUL), or TLV_MAX_LENGTH when the spec
    #: gives no bound.
    size: int


def _integer(width: int) -> TlvFormat:
    return TlvFormat(TlvKind.INTEGER, width)


def _c_string(max_octets: int) -> TlvFormat:
    return TlvFormat(TlvKind.C_OCTET_STRING, max_octets)


def _octets(max_octets: int = TLV_MAX_LENGTH) -> TlvFormat:
    return TlvFormat(TlvKind.OCTET_STRING, max_octets)


#: Type and size of every TLV of §5.3.2 (Table 5-6 and the per-tag sections).
TLV_FORMATS: Final[dict[int, TlvFormat]] = {
    Tag.DEST_ADDR_SUBUNIT: _integer(1),
    Tag.DEST_NETWORK_TYPE: _integer(1),
    Tag.DEST_BEARER_TYPE: _integer(1),
    Tag.DEST_TELEMATICS_ID: _integer(2),
    Tag.SOURCE_ADDR_SUBUNIT: _integer(1),
    Tag.SOURCE_NETWORK_TYPE: _integer(1),
    Tag.SOURCE_BEARER_TYPE: _integer(1),
    # Implementations disagree on the width of source_telematics_id (Kannel
    # and jsmpp: 1 octet, others: 2); we send 1 and read either.
    Tag.SOURCE_TELEMATICS_ID: _integer(1),
    Tag.QOS_TIME_TO_LIVE: _integer(4),
    Tag.PAYLOAD_TYPE: _integer(1),
    Tag.ADDITIONAL_STATUS_INFO_TEXT: _c_string(256),
    Tag.RECEIPTED_MESSAGE_ID: _c_string(65),
    Tag.MS_MSG_WAIT_FACILITIES: _integer(1),  # a bit mask
    Tag.PRIVACY_INDICATOR: _integer(1),
    Tag.SOURCE_SUBADDRESS: _octets(23),
    Tag.DEST_SUBADDRESS: _octets(23),
    Tag.USER_MESSAGE_REFERENCE: _integer(2),
    Tag.USER_RESPONSE_CODE: _integer(1),
    Tag.SOURCE_PORT: _integer(2),
    Tag.DESTINATION_PORT: _integer(2),
    Tag.SAR_MSG_REF_NUM: _integer(2),
    Tag.LANGUAGE_INDICATOR: _integer(1),
    Tag.SAR_TOTAL_SEGMENTS: _integer(1),
    Tag.SAR_SEGMENT_SEQNUM: _integer(1),
    Tag.SC_INTERFACE_VERSION: _integer(1),
    Tag.CALLBACK_NUM_PRES_IND: _integer(1),  # a bit mask
    Tag.CALLBACK_NUM_ATAG: _octets(65),
    Tag.NUMBER_OF_MESSAGES: _integer(1),
    Tag.CALLBACK_NUM: _octets(19),
    Tag.DPF_RESULT: _integer(1),
    Tag.SET_DPF: _integer(1),
    Tag.MS_AVAILABILITY_STATUS: _integer(1),
    # One octet network type followed by a two octet error code.
    Tag.NETWORK_ERROR_CODE: _octets(3),
    # §5.3.2 message_payload: up to 64K octets, bounded by the Length field.
    Tag.MESSAGE_PAYLOAD: _octets(),
    Tag.DELIVERY_FAILURE_REASON: _integer(1),
    Tag.MORE_MESSAGES_TO_SEND: _integer(1),
    Tag.MESSAGE_STATE: _integer(1),
    Tag.USSD_SERVICE_OP: _octets(1),
    Tag.DISPLAY_TIME: _integer(1),
    Tag.SMS_SIGNAL: _integer(2),
    Tag.MS_VALIDITY: _integer(1),
    # A flag: its presence is the value, so the Length is 0.
    Tag.ALERT_ON_MESSAGE_DELIVERY: _octets(0),
    Tag.ITS_REPLY_TYPE: _integer(1),
    Tag.ITS_SESSION_INFO: _octets(2),
}


def decode_tlv_value(tag: int, raw: bytes) -> int | str | bytes:
    """Convert the raw octets of TLV ``tag`` to its typed value.

    Reading is lenient where peers are known to stray from §5.3.2: an Integer
    of any width from 1 to 4 octets is accepted, and a C-Octet String without
    its NUL (seen in receipted_message_id from some SMSCs) is taken whole.
    Unknown and vendor tags come back as ``bytes``.
    """
    fmt = TLV_FORMATS.get(tag)
    if fmt is None or fmt.kind is TlvKind.OCTET_STRING:
        return bytes(raw)
    if fmt.kind is TlvKind.INTEGER:
        if not 1 <= len(raw) <= 4:
            raise ValueError(f"TLV 0x{tag:04X}: an Integer of {len(raw)} octets")
        return int.from_bytes(raw, "big")
    nul = raw.find(b"\0")
    return bytes(raw[: nul if nul >= 0 else len(raw)]).decode("latin-1")


def encode_tlv_value(tag: int, value: int | str | bytes) -> bytes:
    """Convert a typed value to the raw octets of TLV ``tag`` (§5.3.2 types).

    Raises ``TypeError`` when the value's type does not match the tag's type
    and ``ValueError`` when it does not fit.
    """
    fmt = TLV_FORMATS.get(tag)
    if fmt is None or fmt.kind is TlvKind.OCTET_STRING:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"TLV 0x{tag:04X} is an Octet String: give bytes")
        raw = bytes(value)
        limit = TLV_MAX_LENGTH if fmt is None else fmt.size
        if len(raw) > limit:
            raise ValueError(f"TLV 0x{tag:04X}: {len(raw)} octets, at most {limit} allowed")
        return raw
    if fmt.kind is TlvKind.INTEGER:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"TLV 0x{tag:04X} is an Integer: give an int")
        if not 0 <= value < 1 << (8 * fmt.size):
            raise ValueError(f"TLV 0x{tag:04X}: {value} does not fit {fmt.size} octet(s)")
        return value.to_bytes(fmt.size, "big")
    if not isinstance(value, str):
        raise TypeError(f"TLV 0x{tag:04X} is a C-Octet String: give a str")
    if "\0" in value:
        raise ValueError(f"TLV 0x{tag:04X}: a C-Octet String cannot contain NUL")
    raw = value.encode("latin-1") + b"\0"  # UnicodeEncodeError is a ValueError
    if len(raw) > fmt.size:
        raise ValueError(f"TLV 0x{tag:04X}: {len(raw)} octets with NUL, at most {fmt.size}")
    return raw
