"""SMPP 3.4 PDU types: one dataclass per command of §4, plus the errors.

Field names are the spec's.  C-Octet Strings are ``str`` decoded as latin-1,
so every octet a peer sends survives a round trip; Octet Strings
(``short_message``) are ``bytes``.  Length fields (sm_length,
number_of_dests, no_unsuccess) are derived from the data and are not fields.
Optional parameters stay raw in ``tlvs`` (tag -> value octets, wire order);
``get_tlv``/``set_tlv`` give typed access to the standard ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from .constants import INTERFACE_VERSION, RESPONSE_BIT, CommandId, CommandStatus
from .tlv import decode_tlv_value, encode_tlv_value

# ---------------------------------------------------------------------------
# Errors


class SmppError(Exception):
    """Base of every error raised by ``connectors.smpp``."""


class PduError(SmppError):
    """Octets that are not a valid SMPP 3.4 PDU.

    ``command_status`` is the error to answer the peer with (§5.1.3); the
    header fields are those of the offending PDU as far as they could be read
    (0 when not).
    """

    def __init__(
        self, command_status: int, command_id: int, sequence_number: int, detail: str
    ) -> None:
        super().__init__(command_status, command_id, sequence_number, detail)
        self.command_status = command_status
        self.command_id = command_id
        self.sequence_number = sequence_number
        self.detail = detail

    def __str__(self) -> str:
        return (
            f"{self.detail} (command_id=0x{self.command_id:08X}, "
            f"sequence_number={self.sequence_number}, "
            f"command_status=0x{self.command_status:08X})"
        )


class LocalProtocolError(SmppError):
    """Our side tried something SMPP does not allow (wrong state, bad field)."""


class EncodeError(LocalProtocolError):
    """A PDU field cannot be put on the wire (too long, out of range, NUL in a C-string)."""


# ---------------------------------------------------------------------------
# Base


class Pdu:
    """Common shape of every PDU class (they are ``@dataclass(slots=True)``)."""

    __slots__ = ()

    command_id: ClassVar[CommandId]
    command_status: int
    sequence_number: int
    tlvs: dict[int, bytes]


def is_response(pdu: Pdu) -> bool:
    """True for response PDUs, generic_nack included (§5.1.2.1: bit 31 of command_id)."""
    return bool(pdu.command_id & RESPONSE_BIT)


def get_tlv(pdu: Pdu, tag: int) -> int | str | bytes | None:
    """The typed value of optional parameter ``tag``, or None when absent.

    Integer TLVs give ``int``, C-Octet String TLVs ``str``, Octet String and
    unknown/vendor TLVs ``bytes`` (types of §5.3.2).  An Integer TLV of an
    impossible width raises ``PduError(ESME_RINVPARLEN)``, ready to be put in
    the response.
    """
    raw = pdu.tlvs.get(tag)
    if raw is None:
        return None
    try:
        return decode_tlv_value(tag, raw)
    except ValueError as exc:
        raise PduError(
            CommandStatus.ESME_RINVPARLEN, pdu.command_id, pdu.sequence_number, str(exc)
        ) from None


def set_tlv(pdu: Pdu, tag: int, value: int | str | bytes | None) -> None:
    """Set optional parameter ``tag`` from a typed value (None removes it).

    Raises ``EncodeError`` when the value does not have the tag's §5.3.2 type
    or does not fit it.
    """
    if value is None:
        pdu.tlvs.pop(tag, None)
        return
    if not 0 <= tag <= 0xFFFF:
        raise EncodeError(f"TLV tag {tag} is not a 2-octet Integer")
    try:
        pdu.tlvs[tag] = encode_tlv_value(tag, value)
    except (TypeError, ValueError) as exc:
        raise EncodeError(str(exc)) from None


# ---------------------------------------------------------------------------
# Session management: §4.1 bind / outbind, §4.2 unbind, §4.3 generic_nack


@dataclass(slots=True)
class GenericNack(Pdu):
    """§4.3.1: the answer to a PDU whose header cannot be acted upon."""

    command_id: ClassVar[CommandId] = CommandId.GENERIC_NACK
    command_status: int = 0
    sequence_number: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class BindTransmitterResp(Pdu):
    """§4.1.2.  On error the SMSC may leave the body out (§4.1.2 note)."""

    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSMITTER_RESP
    command_status: int = 0
    sequence_number: int = 0
    system_id: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class BindTransmitter(Pdu):
    """§4.1.1."""

    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSMITTER
    command_status: int = 0
    sequence_number: int = 0
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def response(self, command_status: int = 0, **fields: Any) -> BindTransmitterResp:
        return BindTransmitterResp(command_status, self.sequence_number, **fields)


@dataclass(slots=True)
class BindReceiverResp(Pdu):
    """§4.1.4."""

    command_id: ClassVar[CommandId] = CommandId.BIND_RECEIVER_RESP
    command_status: int = 0
    sequence_number: int = 0
    system_id: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class BindReceiver(Pdu):
    """§4.1.3."""

    command_id: ClassVar[CommandId] = CommandId.BIND_RECEIVER
    command_status: int = 0
    sequence_number: int = 0
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def response(self, command_status: int = 0, **fields: Any) -> BindReceiverResp:
        return BindReceiverResp(command_status, self.sequence_number, **fields)


@dataclass(slots=True)
class BindTransceiverResp(Pdu):
    """§4.1.6."""

    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSCEIVER_RESP
    command_status: int = 0
    sequence_number: int = 0
    system_id: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class BindTransceiver(Pdu):
    """§4.1.5."""

    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSCEIVER
    command_status: int = 0
    sequence_number: int = 0
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def response(self, command_status: int = 0, **fields: Any) -> BindTransceiverResp:
        return BindTransceiverResp(command_status, self.sequence_number, **fields)


@dataclass(slots=True)
class Outbind(Pdu):
    """§4.1.7: an SMSC asks an ESME to bind_receiver; there is no response PDU."""

    command_id: ClassVar[CommandId] = CommandId.OUTBIND
    command_status: int = 0
    sequence_number: int = 0
    system_id: str = ""
    password: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class UnbindResp(Pdu):
    """§4.2.2."""

    command_id: ClassVar[CommandId] = CommandId.UNBIND_RESP
    command_status: int = 0
    sequence_number: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class Unbind(Pdu):
    """§4.2.1."""

    command_id: ClassVar[CommandId] = CommandId.UNBIND
    command_status: int = 0
    sequence_number: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def response(self, command_status: int = 0, **fields: Any) -> UnbindResp:
        return UnbindResp(command_status, self.sequence_number, **fields)


# ---------------------------------------------------------------------------
# Message submission and delivery: §4.4 submit_sm, §4.5 submit_multi,
# §4.6 deliver_sm, §4.7 data_sm


# The PDUs of every message (submit_sm, deliver_sm and their responses)
# write their __init__ out so that mypyc compiles it (setup.py:
# COMPILED_INITS), once per layout; the commands that share a layout
# subclass it.


@dataclass(slots=True)
class MessageIdResp(Pdu):
    """The layout of submit_sm_resp, deliver_sm_resp and data_sm_resp
    (§4.4.2, §4.6.2, §4.7.2): message_id, then optional parameters."""

    command_status: int = 0
    sequence_number: int = 0
    message_id: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def __init__(
        self,
        command_status: int = 0,
        sequence_number: int = 0,
        message_id: str = "",
        tlvs: dict[int, bytes] | None = None,
    ) -> None:
        self.command_status = command_status
        self.sequence_number = sequence_number
        self.message_id = message_id
        self.tlvs = {} if tlvs is None else tlvs


class SubmitSmResp(MessageIdResp):
    """§4.4.2.  Some SMSCs leave the body out on error; that decodes as message_id ""."""

    __slots__ = ()
    command_id: ClassVar[CommandId] = CommandId.SUBMIT_SM_RESP


@dataclass(slots=True)
class ShortMessagePdu(Pdu):
    """The layout of submit_sm and deliver_sm (§4.4.1, §4.6.1)."""

    command_status: int = 0
    sequence_number: int = 0
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def __init__(
        self,
        command_status: int = 0,
        sequence_number: int = 0,
        service_type: str = "",
        source_addr_ton: int = 0,
        source_addr_npi: int = 0,
        source_addr: str = "",
        dest_addr_ton: int = 0,
        dest_addr_npi: int = 0,
        destination_addr: str = "",
        esm_class: int = 0,
        protocol_id: int = 0,
        priority_flag: int = 0,
        schedule_delivery_time: str = "",
        validity_period: str = "",
        registered_delivery: int = 0,
        replace_if_present_flag: int = 0,
        data_coding: int = 0,
        sm_default_msg_id: int = 0,
        short_message: bytes = b"",
        tlvs: dict[int, bytes] | None = None,
    ) -> None:
        self.command_status = command_status
        self.sequence_number = sequence_number
        self.service_type = service_type
        self.source_addr_ton = source_addr_ton
        self.source_addr_npi = source_addr_npi
        self.source_addr = source_addr
        self.dest_addr_ton = dest_addr_ton
        self.dest_addr_npi = dest_addr_npi
        self.destination_addr = destination_addr
        self.esm_class = esm_class
        self.protocol_id = protocol_id
        self.priority_flag = priority_flag
        self.schedule_delivery_time = schedule_delivery_time
        self.validity_period = validity_period
        self.registered_delivery = registered_delivery
        self.replace_if_present_flag = replace_if_present_flag
        self.data_coding = data_coding
        self.sm_default_msg_id = sm_default_msg_id
        self.short_message = short_message
        self.tlvs = {} if tlvs is None else tlvs


class SubmitSm(ShortMessagePdu):
    """§4.4.1."""

    __slots__ = ()
    command_id: ClassVar[CommandId] = CommandId.SUBMIT_SM

    def response(self, command_status: int = 0, **fields: Any) -> SubmitSmResp:
        return SubmitSmResp(command_status, self.sequence_number, **fields)


@dataclass(frozen=True, slots=True)
class SmeAddress:
    """A submit_multi destination with dest_flag 1 (§4.5.1.1)."""

    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""


@dataclass(frozen=True, slots=True)
class DistributionList:
    """A submit_multi destination with dest_flag 2 (§4.5.1.2)."""

    dl_name: str = ""


@dataclass(frozen=True, slots=True)
class UnsuccessSme:
    """One failed destination of a submit_multi_resp (§4.5.2.1)."""

    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    error_status_code: int = 0


@dataclass(slots=True)
class SubmitMultiResp(Pdu):
    """§4.5.2; no_unsuccess is ``len(unsuccess_sme)``."""

    command_id: ClassVar[CommandId] = CommandId.SUBMIT_MULTI_RESP
    command_status: int = 0
    sequence_number: int = 0
    message_id: str = ""
    unsuccess_sme: list[UnsuccessSme] = field(default_factory=list)
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class SubmitMulti(Pdu):
    """§4.5.1; number_of_dests is ``len(dest_address)``."""

    command_id: ClassVar[CommandId] = CommandId.SUBMIT_MULTI
    command_status: int = 0
    sequence_number: int = 0
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_address: list[SmeAddress | DistributionList] = field(default_factory=list)
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def response(self, command_status: int = 0, **fields: Any) -> SubmitMultiResp:
        return SubmitMultiResp(command_status, self.sequence_number, **fields)


class DeliverSmResp(MessageIdResp):
    """§4.6.2; message_id is unused and NULL."""

    __slots__ = ()
    command_id: ClassVar[CommandId] = CommandId.DELIVER_SM_RESP


class DeliverSm(ShortMessagePdu):
    """§4.6.1: same layout as submit_sm; carries MOs and delivery receipts."""

    __slots__ = ()
    command_id: ClassVar[CommandId] = CommandId.DELIVER_SM

    def response(self, command_status: int = 0, **fields: Any) -> DeliverSmResp:
        return DeliverSmResp(command_status, self.sequence_number, **fields)


class DataSmResp(MessageIdResp):
    """§4.7.2."""

    __slots__ = ()
    command_id: ClassVar[CommandId] = CommandId.DATA_SM_RESP


@dataclass(slots=True)
class DataSm(Pdu):
    """§4.7.1: the user data travels in the message_payload TLV."""

    command_id: ClassVar[CommandId] = CommandId.DATA_SM
    command_status: int = 0
    sequence_number: int = 0
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def response(self, command_status: int = 0, **fields: Any) -> DataSmResp:
        return DataSmResp(command_status, self.sequence_number, **fields)


# ---------------------------------------------------------------------------
# Message management: §4.8 query_sm, §4.9 cancel_sm, §4.10 replace_sm


@dataclass(slots=True)
class QuerySmResp(Pdu):
    """§4.8.2."""

    command_id: ClassVar[CommandId] = CommandId.QUERY_SM_RESP
    command_status: int = 0
    sequence_number: int = 0
    message_id: str = ""
    final_date: str = ""
    message_state: int = 0
    error_code: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class QuerySm(Pdu):
    """§4.8.1."""

    command_id: ClassVar[CommandId] = CommandId.QUERY_SM
    command_status: int = 0
    sequence_number: int = 0
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def response(self, command_status: int = 0, **fields: Any) -> QuerySmResp:
        return QuerySmResp(command_status, self.sequence_number, **fields)


@dataclass(slots=True)
class CancelSmResp(Pdu):
    """§4.9.2."""

    command_id: ClassVar[CommandId] = CommandId.CANCEL_SM_RESP
    command_status: int = 0
    sequence_number: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class CancelSm(Pdu):
    """§4.9.1."""

    command_id: ClassVar[CommandId] = CommandId.CANCEL_SM
    command_status: int = 0
    sequence_number: int = 0
    service_type: str = ""
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def response(self, command_status: int = 0, **fields: Any) -> CancelSmResp:
        return CancelSmResp(command_status, self.sequence_number, **fields)


@dataclass(slots=True)
class ReplaceSmResp(Pdu):
    """§4.10.2."""

    command_id: ClassVar[CommandId] = CommandId.REPLACE_SM_RESP
    command_status: int = 0
    sequence_number: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class ReplaceSm(Pdu):
    """§4.10.1."""

    command_id: ClassVar[CommandId] = CommandId.REPLACE_SM
    command_status: int = 0
    sequence_number: int = 0
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def response(self, command_status: int = 0, **fields: Any) -> ReplaceSmResp:
        return ReplaceSmResp(command_status, self.sequence_number, **fields)


# ---------------------------------------------------------------------------
# Ancillary: §4.11 enquire_link, §4.12 alert_notification


@dataclass(slots=True)
class EnquireLinkResp(Pdu):
    """§4.11.2."""

    command_id: ClassVar[CommandId] = CommandId.ENQUIRE_LINK_RESP
    command_status: int = 0
    sequence_number: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class EnquireLink(Pdu):
    """§4.11.1."""

    command_id: ClassVar[CommandId] = CommandId.ENQUIRE_LINK
    command_status: int = 0
    sequence_number: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def response(self, command_status: int = 0, **fields: Any) -> EnquireLinkResp:
        return EnquireLinkResp(command_status, self.sequence_number, **fields)


@dataclass(slots=True)
class AlertNotification(Pdu):
    """§4.12.1: an SMSC tells an ESME a mobile became available; no response PDU."""

    command_id: ClassVar[CommandId] = CommandId.ALERT_NOTIFICATION
    command_status: int = 0
    sequence_number: int = 0
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    esme_addr_ton: int = 0
    esme_addr_npi: int = 0
    esme_addr: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)


#: Every PDU class by command_id.
PDU_CLASSES: Final[dict[int, type[Pdu]]] = {
    cls.command_id: cls
    for cls in (
        GenericNack,
        BindTransmitter,
        BindTransmitterResp,
        BindReceiver,
        BindReceiverResp,
        BindTransceiver,
        BindTransceiverResp,
        Outbind,
        Unbind,
        UnbindResp,
        SubmitSm,
        SubmitSmResp,
        SubmitMulti,
        SubmitMultiResp,
        DeliverSm,
        DeliverSmResp,
        DataSm,
        DataSmResp,
        QuerySm,
        QuerySmResp,
        CancelSm,
        CancelSmResp,
        ReplaceSm,
        ReplaceSmResp,
        EnquireLink,
        EnquireLinkResp,
        AlertNotification,
    )
}

#: The response class of every request that has one (outbind and
#: alert_notification have none: §4.1.7, §4.12).
RESPONSE_CLASSES: Final[dict[int, type[Pdu]]] = {
    cid: PDU_CLASSES[cid | RESPONSE_BIT]
    for cid in PDU_CLASSES
    if not cid & RESPONSE_BIT and cid | RESPONSE_BIT in PDU_CLASSES
}
