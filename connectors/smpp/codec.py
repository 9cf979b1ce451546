"""SMPP 3.4 wire format: ``encode(pdu) -> bytes`` and ``decode(bytes) -> pdu``.

Layout rules (§3.1, §3.2):

* header: command_length, command_id, command_status, sequence_number, four
  big-endian 4-octet Integers; command_length counts the whole PDU;
* Integer fields are unsigned big-endian; mandatory body Integers are 1 octet;
* a C-Octet String is its octets and a NUL; its "Var. max N" size in §4
  counts the NUL, so at most N-1 octets of text;
* short_message is an Octet String announced by the 1-octet sm_length;
* after the mandatory fields come optional parameters, each a 2-octet Tag, a
  2-octet Length and Length octets of value (§5.3.1), up to command_length.

Decoding never raises anything but ``PduError``, whose ``command_status`` is
the status to answer the peer with.  submit_sm, deliver_sm and their
responses, the bulk of the traffic, have hand-written codecs; the rarer PDUs
go through a small interpreter over a per-command layout table.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import fields
from typing import Final

from .constants import HEADER_SIZE, CommandStatus, DestFlag
from .pdu import (
    PDU_CLASSES,
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    DistributionList,
    EncodeError,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Outbind,
    Pdu,
    PduError,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    ReplaceSmResp,
    SmeAddress,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    UnsuccessSme,
)

__all__ = ["EncodeError", "PduError", "decode", "encode", "read_header"]

_HEADER: Final = struct.Struct(">IIII")
_TLV_HEAD: Final = struct.Struct(">HH")
_U8: Final = struct.Struct(">B")
_U32: Final = struct.Struct(">I")
# registered_delivery, replace_if_present_flag, data_coding, sm_default_msg_id, sm_length
_SM_TAIL: Final = struct.Struct(">5B")

_S = CommandStatus


# ---------------------------------------------------------------------------
# Errors shared by both directions


def _missing_nul(
    buf: bytes, pos: int, size: int, name: str, status: int, command_id: int, seq: int
) -> PduError:
    """The error for a C-Octet String whose NUL is not within its ``size`` octets.

    If the body ends first the PDU is short (ESME_RINVCMDLEN); otherwise the
    field is longer than §4 allows and the field's own status is the
    better answer (e.g. ESME_RINVDSTADR for destination_addr).
    """
    if len(buf) - pos < size:
        return PduError(_S.ESME_RINVCMDLEN, command_id, seq, f"{name}: body ends before its NUL")
    return PduError(status, command_id, seq, f"{name}: longer than {size - 1} octets")


def _too_long(pdu: Pdu, name: str, size: int) -> EncodeError:
    return EncodeError(
        f"{type(pdu).__name__}.{name}: a C-Octet String of at most {size - 1} "
        "latin-1 characters without NUL"
    )


# ---------------------------------------------------------------------------
# Optional parameters (§5.3.1)


def _decode_tlvs(buf: bytes, pos: int, end: int, command_id: int, seq: int) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    unpack = _TLV_HEAD.unpack_from
    while pos < end:
        if pos + 4 > end:
            raise PduError(
                _S.ESME_RINVOPTPARSTREAM, command_id, seq, "optional part ends inside a TLV header"
            )
        tag, length = unpack(buf, pos)
        pos += 4
        stop = pos + length
        if stop > end:
            raise PduError(
                _S.ESME_RINVOPTPARSTREAM,
                command_id,
                seq,
                f"TLV 0x{tag:04X} of length {length} runs past command_length",
            )
        tlvs[tag] = buf[pos:stop]
        pos = stop
    return tlvs


def _encode_tlvs(tlvs: dict[int, bytes]) -> bytes:
    # struct.error (tag or length beyond 16 bits) and TypeError (value not
    # bytes) surface as EncodeError in encode().
    pack = _TLV_HEAD.pack
    out = b""
    for tag, value in tlvs.items():  # faster than join() for the usual one to three TLVs
        out += pack(tag, len(value)) + value
    return out


# short_message is "Var. 0-254" octets (SMPP 3.4 §4.4.1, §4.5.1, §4.6.1,
# §4.10.1); longer user data belongs in message_payload. Decoding stays
# lenient and takes 255, as other stacks do.
MAX_SHORT_MESSAGE: Final = 254


def _short_message_too_long(pdu: Pdu) -> EncodeError:
    return EncodeError(
        f"{type(pdu).__name__}.short_message: {len(pdu.short_message)} octets, at most "  # type: ignore[attr-defined]
        f"{MAX_SHORT_MESSAGE} (use message_payload)"
    )


# ---------------------------------------------------------------------------
# Hand-written codecs for the hot PDUs.  submit_sm (§4.4.1) and deliver_sm
# (§4.6.1) share one layout.


def _encode_sm(pdu: SubmitSm | DeliverSm) -> bytes:
    service_type = pdu.service_type.encode("latin-1")
    source_addr = pdu.source_addr.encode("latin-1")
    destination_addr = pdu.destination_addr.encode("latin-1")
    schedule = pdu.schedule_delivery_time.encode("latin-1")
    validity = pdu.validity_period.encode("latin-1")
    short_message = pdu.short_message
    if len(short_message) > MAX_SHORT_MESSAGE:
        raise _short_message_too_long(pdu)
    if (
        len(service_type) > 5
        or len(source_addr) > 20
        or len(destination_addr) > 20
        or len(schedule) > 16
        or len(validity) > 16
        or b"\0" in service_type + source_addr + destination_addr + schedule + validity
    ):
        for name, size in _SM_CSTRINGS:
            value = getattr(pdu, name)
            if len(value) >= size or "\0" in value:
                raise _too_long(pdu, name, size)
    body = b"%b\0%c%c%b\0%c%c%b\0%c%c%c%b\0%b\0%c%c%c%c%c%b" % (
        service_type,
        pdu.source_addr_ton,
        pdu.source_addr_npi,
        source_addr,
        pdu.dest_addr_ton,
        pdu.dest_addr_npi,
        destination_addr,
        pdu.esm_class,
        pdu.protocol_id,
        pdu.priority_flag,
        schedule,
        validity,
        pdu.registered_delivery,
        pdu.replace_if_present_flag,
        pdu.data_coding,
        pdu.sm_default_msg_id,
        len(short_message),  # sm_length: %c refuses > 255
        short_message,
    )
    if pdu.tlvs:
        body += _encode_tlvs(pdu.tlvs)
    return (
        _HEADER.pack(
            HEADER_SIZE + len(body), pdu.command_id, pdu.command_status, pdu.sequence_number
        )
        + body
    )


_SM_CSTRINGS: Final = (
    ("service_type", 6),
    ("source_addr", 21),
    ("destination_addr", 21),
    ("schedule_delivery_time", 17),
    ("validity_period", 17),
)


def _decode_sm(cls: type[SubmitSm | DeliverSm], buf: bytes, status: int, seq: int) -> Pdu:
    find = buf.find
    # service_type, Var. max 6
    z = find(b"\0", 16, 22)
    if z < 0:
        raise _missing_nul(buf, 16, 6, "service_type", _S.ESME_RINVSERTYP, cls.command_id, seq)
    service_type = buf[16:z].decode("latin-1") if z > 16 else ""
    source_addr_ton = buf[z + 1]
    source_addr_npi = buf[z + 2]
    # source_addr, Var. max 21
    p = z + 3
    z = find(b"\0", p, p + 21)
    if z < 0:
        raise _missing_nul(buf, p, 21, "source_addr", _S.ESME_RINVSRCADR, cls.command_id, seq)
    source_addr = buf[p:z].decode("latin-1")
    dest_addr_ton = buf[z + 1]
    dest_addr_npi = buf[z + 2]
    # destination_addr, Var. max 21
    p = z + 3
    z = find(b"\0", p, p + 21)
    if z < 0:
        raise _missing_nul(buf, p, 21, "destination_addr", _S.ESME_RINVDSTADR, cls.command_id, seq)
    destination_addr = buf[p:z].decode("latin-1")
    esm_class = buf[z + 1]
    protocol_id = buf[z + 2]
    priority_flag = buf[z + 3]
    # schedule_delivery_time and validity_period, NULL or 17 octets (§7.1)
    p = z + 4
    z = find(b"\0", p, p + 17)
    if z < 0:
        raise _missing_nul(
            buf, p, 17, "schedule_delivery_time", _S.ESME_RINVSCHED, cls.command_id, seq
        )
    schedule = buf[p:z].decode("latin-1") if z > p else ""
    p = z + 1
    z = find(b"\0", p, p + 17)
    if z < 0:
        raise _missing_nul(buf, p, 17, "validity_period", _S.ESME_RINVEXPIRY, cls.command_id, seq)
    validity = buf[p:z].decode("latin-1") if z > p else ""
    registered, replace, data_coding, default_msg_id, sm_length = _SM_TAIL.unpack_from(buf, z + 1)
    p = z + 6
    end = p + sm_length
    n = len(buf)
    if end > n:
        raise PduError(
            _S.ESME_RINVMSGLEN,
            cls.command_id,
            seq,
            f"sm_length {sm_length} runs past command_length",
        )
    return cls(
        status,
        seq,
        service_type,
        source_addr_ton,
        source_addr_npi,
        source_addr,
        dest_addr_ton,
        dest_addr_npi,
        destination_addr,
        esm_class,
        protocol_id,
        priority_flag,
        schedule,
        validity,
        registered,
        replace,
        data_coding,
        default_msg_id,
        buf[p:end],
        _decode_tlvs(buf, end, n, cls.command_id, seq) if end < n else {},
    )


def _encode_message_id_resp(pdu: SubmitSmResp | DeliverSmResp | DataSmResp) -> bytes:
    message_id = pdu.message_id.encode("latin-1")
    if len(message_id) > 64 or b"\0" in message_id:
        raise _too_long(pdu, "message_id", 65)
    body = message_id + b"\0"
    if pdu.tlvs:
        body += _encode_tlvs(pdu.tlvs)
    return (
        _HEADER.pack(
            HEADER_SIZE + len(body), pdu.command_id, pdu.command_status, pdu.sequence_number
        )
        + body
    )


def _decode_message_id_resp(
    cls: type[SubmitSmResp | DeliverSmResp | DataSmResp], buf: bytes, status: int, seq: int
) -> Pdu:
    n = len(buf)
    if n == HEADER_SIZE and (status or cls is DeliverSmResp):
        # §4.4.2: the submit_sm_resp body "is not returned if the
        # command_status field contains a non-zero value", and SMSCs carry
        # that habit to data_sm_resp.  deliver_sm_resp's message_id is unused
        # (§4.6.2) and many ESMEs leave it out even on success.
        return cls(status, seq)
    z = buf.find(b"\0", 16, 81)
    if z < 0:
        raise _missing_nul(buf, 16, 65, "message_id", _S.ESME_RINVMSGID, cls.command_id, seq)
    return cls(
        status,
        seq,
        buf[16:z].decode("latin-1"),
        _decode_tlvs(buf, z + 1, n, cls.command_id, seq) if z + 1 < n else {},
    )


# ---------------------------------------------------------------------------
# Layout tables for the other PDUs (§4), read by a small interpreter.  Each
# entry is (kind, field name, size, status for a bad value); sizes of
# C-Octet Strings count the NUL, as in the spec's "Var. max" column.

_CSTR: Final = 0  # C-Octet String
_INT8: Final = 1  # 1-octet Integer
_SHORT_MESSAGE: Final = 2  # sm_length + short_message
_DEST_ADDRESSES: Final = 3  # number_of_dests + dest_address list (§4.5.1.1)
_UNSUCCESS_SMES: Final = 4  # no_unsuccess + unsuccess_sme list (§4.5.2.1)

_Layout = tuple[tuple[int, str, int, int], ...]


def _c(name: str, size: int, status: int = _S.ESME_RUNKNOWNERR) -> tuple[int, str, int, int]:
    return (_CSTR, name, size, status)


def _i(name: str) -> tuple[int, str, int, int]:
    return (_INT8, name, 1, _S.ESME_RUNKNOWNERR)


# §5.2.2 caps password at 9 octets with its NUL, but SMSCs in the field
# (Kannel, Jasmin, most commercial ones) take longer passwords and accounts
# carry them (the contract's demo account has a 9-character one): passwords
# up to the size of a message id are accepted in both directions.
_PASSWORD_SIZE: Final = 65

_BIND: Final[_Layout] = (
    _c("system_id", 16, _S.ESME_RINVSYSID),
    _c("password", _PASSWORD_SIZE, _S.ESME_RINVPASWD),
    _c("system_type", 13, _S.ESME_RINVSYSTYP),
    _i("interface_version"),
    _i("addr_ton"),
    _i("addr_npi"),
    _c("address_range", 41, _S.ESME_RBINDFAIL),
)
_BIND_RESP: Final[_Layout] = (_c("system_id", 16, _S.ESME_RINVSYSID),)
_MESSAGE_ID_RESP: Final[_Layout] = (_c("message_id", 65, _S.ESME_RINVMSGID),)
_SM: Final[_Layout] = (
    _c("service_type", 6, _S.ESME_RINVSERTYP),
    _i("source_addr_ton"),
    _i("source_addr_npi"),
    _c("source_addr", 21, _S.ESME_RINVSRCADR),
    _i("dest_addr_ton"),
    _i("dest_addr_npi"),
    _c("destination_addr", 21, _S.ESME_RINVDSTADR),
    _i("esm_class"),
    _i("protocol_id"),
    _i("priority_flag"),
    _c("schedule_delivery_time", 17, _S.ESME_RINVSCHED),
    _c("validity_period", 17, _S.ESME_RINVEXPIRY),
    _i("registered_delivery"),
    _i("replace_if_present_flag"),
    _i("data_coding"),
    _i("sm_default_msg_id"),
    (_SHORT_MESSAGE, "short_message", 255, _S.ESME_RINVMSGLEN),
)

_LAYOUTS: Final[dict[type[Pdu], _Layout]] = {
    GenericNack: (),
    BindTransmitter: _BIND,
    BindTransmitterResp: _BIND_RESP,
    BindReceiver: _BIND,
    BindReceiverResp: _BIND_RESP,
    BindTransceiver: _BIND,
    BindTransceiverResp: _BIND_RESP,
    Outbind: (
        _c("system_id", 16, _S.ESME_RINVSYSID),
        _c("password", _PASSWORD_SIZE, _S.ESME_RINVPASWD),
    ),
    Unbind: (),
    UnbindResp: (),
    SubmitSm: _SM,
    SubmitSmResp: _MESSAGE_ID_RESP,
    SubmitMulti: (
        _c("service_type", 6, _S.ESME_RINVSERTYP),
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 21, _S.ESME_RINVSRCADR),
        (_DEST_ADDRESSES, "dest_address", 21, _S.ESME_RINVDSTADR),
        _i("esm_class"),
        _i("protocol_id"),
        _i("priority_flag"),
        _c("schedule_delivery_time", 17, _S.ESME_RINVSCHED),
        _c("validity_period", 17, _S.ESME_RINVEXPIRY),
        _i("registered_delivery"),
        _i("replace_if_present_flag"),
        _i("data_coding"),
        _i("sm_default_msg_id"),
        (_SHORT_MESSAGE, "short_message", 255, _S.ESME_RINVMSGLEN),
    ),
    SubmitMultiResp: (
        _c("message_id", 65, _S.ESME_RINVMSGID),
        (_UNSUCCESS_SMES, "unsuccess_sme", 21, _S.ESME_RINVDSTADR),
    ),
    DeliverSm: _SM,
    DeliverSmResp: _MESSAGE_ID_RESP,
    # data_sm addresses are Var. max 65, unlike submit_sm's 21 (§4.7.1).
    DataSm: (
        _c("service_type", 6, _S.ESME_RINVSERTYP),
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 65, _S.ESME_RINVSRCADR),
        _i("dest_addr_ton"),
        _i("dest_addr_npi"),
        _c("destination_addr", 65, _S.ESME_RINVDSTADR),
        _i("esm_class"),
        _i("registered_delivery"),
        _i("data_coding"),
    ),
    DataSmResp: _MESSAGE_ID_RESP,
    QuerySm: (
        _c("message_id", 65, _S.ESME_RINVMSGID),
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 21, _S.ESME_RINVSRCADR),
    ),
    QuerySmResp: (
        _c("message_id", 65, _S.ESME_RINVMSGID),
        _c("final_date", 17),
        _i("message_state"),
        _i("error_code"),
    ),
    CancelSm: (
        _c("service_type", 6, _S.ESME_RINVSERTYP),
        _c("message_id", 65, _S.ESME_RINVMSGID),
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 21, _S.ESME_RINVSRCADR),
        _i("dest_addr_ton"),
        _i("dest_addr_npi"),
        _c("destination_addr", 21, _S.ESME_RINVDSTADR),
    ),
    CancelSmResp: (),
    ReplaceSm: (
        _c("message_id", 65, _S.ESME_RINVMSGID),
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 21, _S.ESME_RINVSRCADR),
        _c("schedule_delivery_time", 17, _S.ESME_RINVSCHED),
        _c("validity_period", 17, _S.ESME_RINVEXPIRY),
        _i("registered_delivery"),
        _i("sm_default_msg_id"),
        (_SHORT_MESSAGE, "short_message", 255, _S.ESME_RINVMSGLEN),
    ),
    ReplaceSmResp: (),
    EnquireLink: (),
    EnquireLinkResp: (),
    AlertNotification: (
        _i("source_addr_ton"),
        _i("source_addr_npi"),
        _c("source_addr", 65, _S.ESME_RINVSRCADR),
        _i("esme_addr_ton"),
        _i("esme_addr_npi"),
        _c("esme_addr", 65, _S.ESME_RINVDSTADR),
    ),
}

# Responses whose body may be missing when command_status is non-zero
# (§4.1.2, §4.4.2 "the body is not returned"); they decode to defaults.
_BODY_OPTIONAL_ON_ERROR: Final = frozenset(
    {
        BindTransmitterResp,
        BindReceiverResp,
        BindTransceiverResp,
        SubmitSmResp,
        SubmitMultiResp,
        DeliverSmResp,
        DataSmResp,
        QuerySmResp,
    }
)


def _cstring(pdu: Pdu, name: str, value: str, size: int) -> bytes:
    raw = value.encode("latin-1")
    if len(raw) >= size or b"\0" in raw:
        raise _too_long(pdu, name, size)
    return raw + b"\0"


def _encode_generic(pdu: Pdu) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    for kind, name, size, _status in _LAYOUTS[type(pdu)]:
        value = getattr(pdu, name)
        if kind == _CSTR:
            append(_cstring(pdu, name, value, size))
        elif kind == _INT8:
            append(_U8.pack(value))
        elif kind == _SHORT_MESSAGE:
            if len(value) > MAX_SHORT_MESSAGE:
                raise _short_message_too_long(pdu)
            append(_U8.pack(len(value)))
            append(bytes(value))
        elif kind == _DEST_ADDRESSES:
            append(_U8.pack(len(value)))  # number_of_dests
            for dest in value:
                if isinstance(dest, SmeAddress):
                    append(
                        b"%c%c%c" % (DestFlag.SME_ADDRESS, dest.dest_addr_ton, dest.dest_addr_npi)
                    )
                    append(_cstring(pdu, "destination_addr", dest.destination_addr, size))
                elif isinstance(dest, DistributionList):
                    append(b"%c" % DestFlag.DISTRIBUTION_LIST)
                    append(_cstring(pdu, "dl_name", dest.dl_name, size))
                else:
                    raise EncodeError(
                        f"dest_address entries are SmeAddress or DistributionList, not {dest!r}"
                    )
        else:  # _UNSUCCESS_SMES
            append(_U8.pack(len(value)))  # no_unsuccess
            for sme in value:
                append(b"%c%c" % (sme.dest_addr_ton, sme.dest_addr_npi))
                append(_cstring(pdu, "destination_addr", sme.destination_addr, size))
                append(_U32.pack(sme.error_status_code))
    if pdu.tlvs:
        append(_encode_tlvs(pdu.tlvs))
    body = b"".join(parts)
    return (
        _HEADER.pack(
            HEADER_SIZE + len(body), pdu.command_id, pdu.command_status, pdu.sequence_number
        )
        + body
    )


def _decode_generic(cls: type[Pdu], buf: bytes, status: int, seq: int) -> Pdu:
    layout = _LAYOUTS[cls]
    n = len(buf)
    if n == HEADER_SIZE and status and cls in _BODY_OPTIONAL_ON_ERROR:
        return cls(status, seq)  # type: ignore[call-arg]
    command_id = cls.command_id
    values: list[object] = []
    append = values.append
    p = HEADER_SIZE
    find = buf.find
    for kind, name, size, err in layout:
        if kind == _CSTR:
            z = find(b"\0", p, p + size)
            if z < 0:
                raise _missing_nul(buf, p, size, name, err, command_id, seq)
            append(buf[p:z].decode("latin-1"))
            p = z + 1
        elif kind == _INT8:
            append(buf[p])
            p += 1
        elif kind == _SHORT_MESSAGE:
            stop = p + 1 + buf[p]
            if stop > n:
                raise PduError(err, command_id, seq, f"sm_length {buf[p]} runs past command_length")
            append(buf[p + 1 : stop])
            p = stop
        elif kind == _DEST_ADDRESSES:
            count = buf[p]
            p += 1
            dests: list[SmeAddress | DistributionList] = []
            for _ in range(count):
                flag = buf[p]
                if flag == DestFlag.SME_ADDRESS:
                    ton, npi = buf[p + 1], buf[p + 2]
                    p += 3
                    z = find(b"\0", p, p + size)
                    if z < 0:
                        raise _missing_nul(buf, p, size, "destination_addr", err, command_id, seq)
                    dests.append(SmeAddress(ton, npi, buf[p:z].decode("latin-1")))
                elif flag == DestFlag.DISTRIBUTION_LIST:
                    p += 1
                    z = find(b"\0", p, p + size)
                    if z < 0:
                        raise _missing_nul(
                            buf, p, size, "dl_name", _S.ESME_RINVDLNAME, command_id, seq
                        )
                    dests.append(DistributionList(buf[p:z].decode("latin-1")))
                else:
                    raise PduError(
                        _S.ESME_RINVDESTFLAG, command_id, seq, f"dest_flag {flag} is not 1 or 2"
                    )
                p = z + 1
            append(dests)
        else:  # _UNSUCCESS_SMES
            count = buf[p]
            p += 1
            smes: list[UnsuccessSme] = []
            for _ in range(count):
                ton, npi = buf[p], buf[p + 1]
                p += 2
                z = find(b"\0", p, p + size)
                if z < 0:
                    raise _missing_nul(buf, p, size, "destination_addr", err, command_id, seq)
                (error_status_code,) = _U32.unpack_from(buf, z + 1)
                smes.append(UnsuccessSme(ton, npi, buf[p:z].decode("latin-1"), error_status_code))
                p = z + 5
            append(smes)
    tlvs = _decode_tlvs(buf, p, n, command_id, seq) if p < n else {}
    return cls(status, seq, *values, tlvs)  # type: ignore[call-arg]


# The interpreter builds PDUs positionally, so each layout must list the
# dataclass fields in declaration order; check once at import.
for _cls, _layout in _LAYOUTS.items():
    _names = [f.name for f in fields(_cls)]  # type: ignore[arg-type]
    if _names != ["command_status", "sequence_number", *(e[1] for e in _layout), "tlvs"]:
        raise RuntimeError(f"codec layout of {_cls.__name__} does not match its fields")
if set(_LAYOUTS) != set(PDU_CLASSES.values()):
    raise RuntimeError("codec layouts do not cover every PDU class")

# ---------------------------------------------------------------------------
# Dispatch

_DecodeFunc = Callable[[type, bytes, int, int], Pdu]

_ENCODERS: Final[dict[type[Pdu], Callable[[Pdu], bytes]]] = {
    cls: _encode_generic for cls in _LAYOUTS
}
_ENCODERS.update(
    {
        SubmitSm: _encode_sm,  # type: ignore[dict-item]
        DeliverSm: _encode_sm,  # type: ignore[dict-item]
        SubmitSmResp: _encode_message_id_resp,  # type: ignore[dict-item]
        DeliverSmResp: _encode_message_id_resp,  # type: ignore[dict-item]
        DataSmResp: _encode_message_id_resp,  # type: ignore[dict-item]
    }
)

#: command_id -> (decode function, PDU class it builds).
_DECODERS: Final[dict[int, tuple[_DecodeFunc, type[Pdu]]]] = {
    cls.command_id: (_decode_generic, cls) for cls in _LAYOUTS
}
_DECODERS.update(
    {
        SubmitSm.command_id: (_decode_sm, SubmitSm),
        DeliverSm.command_id: (_decode_sm, DeliverSm),
        SubmitSmResp.command_id: (_decode_message_id_resp, SubmitSmResp),
        DeliverSmResp.command_id: (_decode_message_id_resp, DeliverSmResp),
        DataSmResp.command_id: (_decode_message_id_resp, DataSmResp),
    }
)


def encode(pdu: Pdu) -> bytes:
    """The complete PDU, header included (§3.2).

    Raises ``EncodeError`` for a field that cannot be put on the wire: a
    C-Octet String longer than §4 allows or containing NUL, a character
    outside latin-1, an Integer outside its octets, a TLV over 65535 octets.
    """
    try:
        return _ENCODERS[type(pdu)](pdu)
    except KeyError:
        raise EncodeError(f"not an SMPP PDU: {pdu!r}") from None
    except (OverflowError, TypeError, ValueError, AttributeError, struct.error) as exc:
        raise EncodeError(f"cannot encode {type(pdu).__name__}: {exc}") from None


def read_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """(command_length, command_id, command_status, sequence_number) of §3.2."""
    if len(data) < HEADER_SIZE:
        raise PduError(_S.ESME_RINVCMDLEN, 0, 0, f"{len(data)} octets, a header is 16")
    return _HEADER.unpack_from(data)


def decode(data: bytes | bytearray | memoryview) -> Pdu:
    """Decode exactly one complete PDU, header included.

    Raises ``PduError`` (and nothing else, for any input) when the octets
    are not a valid PDU; its ``command_status`` is what to answer:
    ESME_RINVCMDLEN for a command_length that does not match the data or a
    body shorter than its mandatory fields, ESME_RINVCMDID for an unknown
    command_id, ESME_RINVMSGLEN for an sm_length past the end,
    ESME_RINVOPTPARSTREAM for a broken TLV, or the field's own status for a
    C-Octet String longer than its maximum.
    """
    buf = data if type(data) is bytes else bytes(data)
    n = len(buf)
    if n < HEADER_SIZE:
        raise PduError(_S.ESME_RINVCMDLEN, 0, 0, f"{n} octets, a header is 16")
    command_length, command_id, status, seq = _HEADER.unpack_from(buf)
    if command_length != n:
        raise PduError(
            _S.ESME_RINVCMDLEN,
            command_id,
            seq,
            f"command_length {command_length}, {n} octets given",
        )
    return _decode_frame(buf, command_id, status, seq)


def _decode_frame(buf: bytes, command_id: int, status: int, seq: int) -> Pdu:
    """Decode ``buf``, exactly one PDU whose header the caller has already read."""
    entry = _DECODERS.get(command_id)
    if entry is None:
        raise PduError(_S.ESME_RINVCMDID, command_id, seq, f"unknown command_id 0x{command_id:08X}")
    func, cls = entry
    try:
        return func(cls, buf, status, seq)
    except (IndexError, struct.error):
        # The decoders read 1-octet Integers by indexing and fixed groups with
        # struct; running off the end of ``buf`` is how a body shorter than
        # its mandatory fields shows (§5.1.1: command_length counts the whole PDU).
        raise PduError(
            _S.ESME_RINVCMDLEN, command_id, seq, "body shorter than its mandatory fields"
        ) from None
