"""The SMPP 3.4 wire codec (connectors/smpp/codec.py) and the PDU types.

Field sizes below are written from the spec tables of SMPP 3.4 §4, not read
from the codec, so a wrong layout in the codec cannot make its own tests pass.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest
import smpplib.smpp
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrouter.connectors.smpp import (
    PDU_CLASSES,
    RESPONSE_CLASSES,
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    CommandId,
    CommandStatus,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    DistributionList,
    EncodeError,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    MessageState,
    Outbind,
    Pdu,
    PduError,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    ReplaceSmResp,
    SmeAddress,
    SmppError,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Unbind,
    UnbindResp,
    UnsuccessSme,
    decode,
    encode,
    get_tlv,
    is_response,
    read_header,
    set_tlv,
)
from smsrouter.connectors.smpp.codec import _encode_generic

S = CommandStatus

# ---------------------------------------------------------------------------
# Strategies: one per PDU class, field by field from the §4 tables.


def cstr(size: int) -> st.SearchStrategy[str]:
    """A C-Octet String of "Var. max size" octets (the size counts the NUL)."""
    return st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=size - 1)


u8 = st.integers(0, 0xFF)
u32 = st.integers(0, 0xFFFFFFFF)
short_message = st.binary(max_size=254)
tlvs = st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=64), max_size=4)

_BIND = {
    "system_id": cstr(16),
    "password": cstr(9),
    "system_type": cstr(13),
    "interface_version": u8,
    "addr_ton": u8,
    "addr_npi": u8,
    "address_range": cstr(41),
}
_SM = {
    "service_type": cstr(6),
    "source_addr_ton": u8,
    "source_addr_npi": u8,
    "source_addr": cstr(21),
    "dest_addr_ton": u8,
    "dest_addr_npi": u8,
    "destination_addr": cstr(21),
    "esm_class": u8,
    "protocol_id": u8,
    "priority_flag": u8,
    "schedule_delivery_time": cstr(17),
    "validity_period": cstr(17),
    "registered_delivery": u8,
    "replace_if_present_flag": u8,
    "data_coding": u8,
    "sm_default_msg_id": u8,
    "short_message": short_message,
}
_DEST = st.one_of(
    st.builds(SmeAddress, u8, u8, cstr(21)),
    st.builds(DistributionList, cstr(21)),
)

BODY_FIELDS: dict[type[Pdu], dict[str, st.SearchStrategy[Any]]] = {
    GenericNack: {},
    BindTransmitter: _BIND,
    BindReceiver: _BIND,
    BindTransceiver: _BIND,
    BindTransmitterResp: {"system_id": cstr(16)},
    BindReceiverResp: {"system_id": cstr(16)},
    BindTransceiverResp: {"system_id": cstr(16)},
    Outbind: {"system_id": cstr(16), "password": cstr(9)},
    Unbind: {},
    UnbindResp: {},
    SubmitSm: _SM,
    DeliverSm: _SM,
    SubmitSmResp: {"message_id": cstr(65)},
    DeliverSmResp: {"message_id": cstr(65)},
    SubmitMulti: {
        **{k: v for k, v in _SM.items() if not k.startswith("dest")},
        "dest_address": st.lists(_DEST, max_size=5),
    },
    SubmitMultiResp: {
        "message_id": cstr(65),
        "unsuccess_sme": st.lists(st.builds(UnsuccessSme, u8, u8, cstr(21), u32), max_size=5),
    },
    DataSm: {
        "service_type": cstr(6),
        "source_addr_ton": u8,
        "source_addr_npi": u8,
        "source_addr": cstr(65),
        "dest_addr_ton": u8,
        "dest_addr_npi": u8,
        "destination_addr": cstr(65),
        "esm_class": u8,
        "registered_delivery": u8,
        "data_coding": u8,
    },
    DataSmResp: {"message_id": cstr(65)},
    QuerySm: {
        "message_id": cstr(65),
        "source_addr_ton": u8,
        "source_addr_npi": u8,
        "source_addr": cstr(21),
    },
    QuerySmResp: {
        "message_id": cstr(65),
        "final_date": cstr(17),
        "message_state": u8,
        "error_code": u8,
    },
    CancelSm: {
        "service_type": cstr(6),
        "message_id": cstr(65),
        "source_addr_ton": u8,
        "source_addr_npi": u8,
        "source_addr": cstr(21),
        "dest_addr_ton": u8,
        "dest_addr_npi": u8,
        "destination_addr": cstr(21),
    },
    CancelSmResp: {},
    ReplaceSm: {
        "message_id": cstr(65),
        "source_addr_ton": u8,
        "source_addr_npi": u8,
        "source_addr": cstr(21),
        "schedule_delivery_time": cstr(17),
        "validity_period": cstr(17),
        "registered_delivery": u8,
        "sm_default_msg_id": u8,
        "short_message": short_message,
    },
    ReplaceSmResp: {},
    EnquireLink: {},
    EnquireLinkResp: {},
    AlertNotification: {
        "source_addr_ton": u8,
        "source_addr_npi": u8,
        "source_addr": cstr(65),
        "esme_addr_ton": u8,
        "esme_addr_npi": u8,
        "esme_addr": cstr(65),
    },
}


def pdu_of(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    return st.builds(
        cls,
        command_status=u32,
        sequence_number=u32,
        tlvs=tlvs,
        **BODY_FIELDS[cls],
    )


any_pdu: st.SearchStrategy[Pdu] = st.one_of([pdu_of(cls) for cls in BODY_FIELDS])


def test_the_strategies_cover_every_command_and_every_field() -> None:
    assert set(BODY_FIELDS) == set(PDU_CLASSES.values())
    assert {cls.command_id for cls in BODY_FIELDS} == set(CommandId)
    for cls, body in BODY_FIELDS.items():
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        assert names == {"command_status", "sequence_number", "tlvs", *body}, cls


# ---------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("cls", list(BODY_FIELDS), ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_pdu_round_trips(cls: type[Pdu], data: st.DataObject) -> None:
    pdu = data.draw(pdu_of(cls))
    wire = encode(pdu)
    assert read_header(wire) == (len(wire), cls.command_id, pdu.command_status, pdu.sequence_number)
    back = decode(wire)
    assert type(back) is cls
    assert back == pdu
    assert list(back.tlvs) == list(pdu.tlvs)  # wire order kept
    assert encode(back) == wire


@settings(max_examples=300, deadline=None)
@given(
    pdu=st.one_of(
        pdu_of(SubmitSm),
        pdu_of(DeliverSm),
        pdu_of(SubmitSmResp),
        pdu_of(DeliverSmResp),
        pdu_of(DataSmResp),
    )
)
def test_the_fast_paths_agree_with_the_layout_tables(pdu: Pdu) -> None:
    assert encode(pdu) == _encode_generic(pdu)


def test_decode_accepts_memoryview_and_bytearray() -> None:
    wire = encode(SubmitSm(sequence_number=4, destination_addr="123", short_message=b"x"))
    assert decode(memoryview(wire)) == decode(bytearray(wire)) == decode(wire)


def test_vendor_and_unknown_tlvs_survive_byte_for_byte() -> None:
    raw = {
        0x1400: b"\x00\x01vendor",
        0x3FFF: b"",
        0x7777: b"\xff" * 300,
        Tag.MESSAGE_STATE: b"\x02",
    }
    pdu = DeliverSm(sequence_number=1, tlvs=dict(raw))
    back = decode(encode(pdu))
    assert back.tlvs == raw
    assert list(back.tlvs) == list(raw)


def test_any_octet_survives_in_c_octet_strings() -> None:
    every_octet = bytes(range(1, 256)).decode("latin-1")
    pdu = DataSm(source_addr=every_octet[:64], destination_addr=every_octet[64:128])
    assert decode(encode(pdu)) == pdu


# ---------------------------------------------------------------------------
# Golden vectors, written from the §3.2 header and §4 body tables.


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


GOLDEN: list[tuple[str, bytes, Pdu]] = [
    (
        "bind_transmitter",
        h(
            "0000002F 00000002 00000000 00000001"  # length 47, bind_transmitter, status, seq 1
            "534D505033544553 5400"  # system_id "SMPP3TEST"
            "7365637265743038 00"  # password "secret08"
            "5355424D49543100"  # system_type "SUBMIT1"
            "34 01 01"  # interface_version 3.4, addr_ton 1, addr_npi 1
            "00"  # address_range NULL
        ),
        BindTransmitter(
            sequence_number=1,
            system_id="SMPP3TEST",
            password="secret08",
            system_type="SUBMIT1",
            addr_ton=1,
            addr_npi=1,
        ),
    ),
    (
        "submit_sm",
        h(
            "0000003C 00000004 00000000 00000002"  # length 60, submit_sm, status 0, seq 2
            "00"  # service_type NULL
            "01 01 3134313535353530313031 00"  # TON 1, NPI 1, source_addr "14155550101"
            "01 01 3134313535353530313233 00"  # TON 1, NPI 1, destination_addr "14155550123"
            "00 00 00"  # esm_class, protocol_id, priority_flag
            "00 00"  # schedule_delivery_time, validity_period NULL
            "01 00 00 00"  # registered_delivery 1, replace_if_present, data_coding, default_msg_id
            "05 48656C6C6F"  # sm_length 5, "Hello"
        ),
        SubmitSm(
            sequence_number=2,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="14155550101",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="14155550123",
            registered_delivery=1,
            short_message=b"Hello",
        ),
    ),
    (
        "deliver_sm receipt",
        h(
            "00000055 00000005 00000000 00000003"  # length 85, deliver_sm, status 0, seq 3
            "00"  # service_type NULL
            "01 01 3134313535353530313233 00"  # source_addr: the handset
            "01 01 3134313535353530313031 00"  # destination_addr: the original sender
            "04 00 00"  # esm_class 0x04 = SMSC delivery receipt
            "00 00"  # schedule_delivery_time, validity_period NULL
            "00 00 00 00"  # registered_delivery .. sm_default_msg_id
            "12 69643A3432207374 61743A44454C49565244"  # sm_length 18, "id:42 stat:DELIVRD"
            "001E 0003 343200"  # receipted_message_id "42" (C-Octet String)
            "0427 0001 02"  # message_state DELIVERED
        ),
        DeliverSm(
            sequence_number=3,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="14155550123",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="14155550101",
            esm_class=0x04,
            short_message=b"id:42 stat:DELIVRD",
            tlvs={0x001E: b"42\0", 0x0427: b"\x02"},
        ),
    ),
    (
        "generic_nack",
        h("00000010 80000000 00000003 00000007"),
        GenericNack(command_status=S.ESME_RINVCMDID, sequence_number=7),
    ),
    ("enquire_link", h("00000010 00000015 00000000 00000009"), EnquireLink(sequence_number=9)),
    (
        "submit_sm_resp",
        h("00000018 80000004 00000000 00000002 3561626364656600"),
        SubmitSmResp(sequence_number=2, message_id="5abcdef"),
    ),
]


@pytest.mark.parametrize(("wire", "pdu"), [g[1:] for g in GOLDEN], ids=[g[0] for g in GOLDEN])
def test_golden_vectors(wire: bytes, pdu: Pdu) -> None:
    assert encode(pdu) == wire
    assert decode(wire) == pdu


def test_the_receipt_tlvs_read_typed() -> None:
    receipt = decode(GOLDEN[2][1])
    assert get_tlv(receipt, Tag.RECEIPTED_MESSAGE_ID) == "42"
    assert get_tlv(receipt, Tag.MESSAGE_STATE) == MessageState.DELIVERED
    assert get_tlv(receipt, Tag.NETWORK_ERROR_CODE) is None


# §4.1.2 and §4.4.2: on error the response body "is not returned".
@pytest.mark.parametrize(
    "cls",
    [
        BindTransmitterResp,
        BindReceiverResp,
        BindTransceiverResp,
        SubmitSmResp,
        DataSmResp,
        SubmitMultiResp,
        QuerySmResp,
    ],
)
def test_error_responses_without_a_body_decode_to_defaults(cls: type[Pdu]) -> None:
    wire = struct.pack(">IIII", 16, cls.command_id, S.ESME_RINVPASWD, 11)
    assert decode(wire) == cls(S.ESME_RINVPASWD, 11)  # type: ignore[call-arg]


def test_a_successful_submit_sm_resp_needs_its_message_id() -> None:
    with pytest.raises(PduError) as err:
        decode(struct.pack(">IIII", 16, CommandId.SUBMIT_SM_RESP, 0, 11))
    assert err.value.command_status == S.ESME_RINVCMDLEN


def test_deliver_sm_resp_without_body_is_accepted() -> None:
    # §4.6.2: message_id is unused; many ESMEs leave the NULL out.
    assert decode(struct.pack(">IIII", 16, CommandId.DELIVER_SM_RESP, 0, 5)) == DeliverSmResp(0, 5)


def test_vendor_statuses_decode_as_plain_ints() -> None:
    pdu = decode(struct.pack(">IIII", 17, CommandId.SUBMIT_SM_RESP, 0x0000040A, 1) + b"\0")
    assert pdu.command_status == 0x40A
    assert type(pdu.command_status) is int


# ---------------------------------------------------------------------------
# Malformed input: PduError, with the status to answer


@pytest.mark.parametrize(("wire", "pdu"), [g[1:] for g in GOLDEN], ids=[g[0] for g in GOLDEN])
def test_truncation_with_the_original_header_is_a_length_error(wire: bytes, pdu: Pdu) -> None:
    for cut in range(len(wire)):
        with pytest.raises(PduError) as err:
            decode(wire[:cut])
        assert err.value.command_status == S.ESME_RINVCMDLEN


def _relength(wire: bytes) -> bytes:
    return struct.pack(">I", len(wire)) + wire[4:]


def test_truncated_mandatory_fields_are_refused_at_every_position() -> None:
    pdu = GOLDEN[1][2]
    wire = encode(pdu)
    short_message_at = len(wire) - 5
    for cut in range(16, short_message_at):
        with pytest.raises(PduError) as err:
            decode(_relength(wire[:cut]))
        assert err.value.command_status == S.ESME_RINVCMDLEN, cut
        assert err.value.command_id == CommandId.SUBMIT_SM
        assert err.value.sequence_number == 2
    for cut in range(short_message_at, len(wire)):
        with pytest.raises(PduError) as err:
            decode(_relength(wire[:cut]))
        assert err.value.command_status == S.ESME_RINVMSGLEN, cut


@pytest.mark.parametrize("cls", list(BODY_FIELDS), ids=lambda c: c.__name__)
def test_every_command_refuses_a_body_cut_short(cls: type[Pdu]) -> None:
    pdu = cls(sequence_number=3)  # type: ignore[call-arg]
    wire = encode(pdu)
    for cut in range(16, len(wire)):
        short = _relength(wire[:cut])
        if cut == 16 and is_response(pdu):
            continue  # an absent body is its own case (tested above)
        with pytest.raises(PduError):
            decode(short)


@pytest.mark.parametrize("length", [0, 1, 15, 16, 18, 100, 0xFFFFFFFF])  # the data is 17 octets
def test_command_length_must_match_the_data(length: int) -> None:
    wire = struct.pack(">I", length) + encode(EnquireLink(sequence_number=1))[4:] + b"\0"
    with pytest.raises(PduError) as err:
        decode(wire)
    assert err.value.command_status == S.ESME_RINVCMDLEN


@pytest.mark.parametrize("data", [b"", b"\0\0\0\x10", b"\0" * 15])
def test_less_than_a_header(data: bytes) -> None:
    with pytest.raises(PduError) as err:
        decode(data)
    assert err.value.command_status == S.ESME_RINVCMDLEN
    with pytest.raises(PduError):
        read_header(data)


@pytest.mark.parametrize("command_id", [0, 0x0A, 0x14, 0x80000010, 0x00000104, 0xFFFFFFFF])
def test_unknown_command_id(command_id: int) -> None:
    with pytest.raises(PduError) as err:
        decode(struct.pack(">IIII", 16, command_id, 0, 77))
    assert (err.value.command_status, err.value.command_id, err.value.sequence_number) == (
        S.ESME_RINVCMDID,
        command_id,
        77,
    )


def _submit_sm_body(source_addr: bytes) -> bytes:
    return (
        b"\0"
        + b"\1\1"
        + source_addr
        + b"\1\1"
        + b"123\0"
        + b"\0\0\0"
        + b"\0\0"
        + b"\0\0\0\0"
        + b"\0"
    )


def _pdu(command_id: int, body: bytes, seq: int = 5) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, 0, seq) + body


def test_a_c_string_longer_than_its_maximum_gets_the_fields_status() -> None:
    too_long = b"1" * 21 + b"\0"  # source_addr is Var. max 21 including the NUL
    with pytest.raises(PduError) as err:
        decode(_pdu(CommandId.SUBMIT_SM, _submit_sm_body(too_long)))
    assert err.value.command_status == S.ESME_RINVSRCADR
    assert (
        decode(_pdu(CommandId.SUBMIT_SM, _submit_sm_body(b"1" * 20 + b"\0"))).source_addr
        == "1" * 20
    )


@pytest.mark.parametrize(
    ("cls", "body", "status"),
    [
        (BindTransceiver, b"x" * 16 + b"\0pw\0\0\x34\0\0\0", S.ESME_RINVSYSID),
        (BindTransceiver, b"sys\0" + b"p" * 65 + b"\0\0\x34\0\0\0", S.ESME_RINVPASWD),
        (BindTransceiver, b"sys\0pw\0" + b"t" * 13 + b"\0\x34\0\0\0", S.ESME_RINVSYSTYP),
        (SubmitSmResp, b"m" * 65 + b"\0", S.ESME_RINVMSGID),
        (SubmitSmResp, b"m" * 65, S.ESME_RINVMSGID),  # the whole maximum, and no NUL in it
        (SubmitSmResp, b"m" * 64, S.ESME_RINVCMDLEN),  # the body ends first
        (QuerySm, b"m" * 65 + b"\0\0\0\0", S.ESME_RINVMSGID),
    ],
)
def test_field_statuses(cls: type[Pdu], body: bytes, status: int) -> None:
    with pytest.raises(PduError) as err:
        decode(_pdu(cls.command_id, body))
    assert err.value.command_status == status


def test_a_c_string_running_off_the_body() -> None:
    with pytest.raises(PduError) as err:
        decode(_pdu(CommandId.SUBMIT_SM_RESP, b"abc"))  # no NUL at all
    assert err.value.command_status == S.ESME_RINVCMDLEN


def test_sm_length_beyond_the_body() -> None:
    wire = encode(SubmitSm(short_message=b"12345"))
    bad = wire[:-6] + b"\x06" + wire[-5:]  # claims 6, carries 5
    with pytest.raises(PduError) as err:
        decode(bad)
    assert err.value.command_status == S.ESME_RINVMSGLEN


@pytest.mark.parametrize(
    "tail",
    [
        b"\x04",
        b"\x04\x27",
        b"\x04\x27\x00",
        b"\x04\x27\x00\x02\x01",
        b"\x00\x1e\xff\xff" + b"x" * 10,
    ],
)
def test_broken_tlvs(tail: bytes) -> None:
    wire = encode(DeliverSm(sequence_number=8)) + tail
    with pytest.raises(PduError) as err:
        decode(_relength(wire))
    assert err.value.command_status == S.ESME_RINVOPTPARSTREAM
    assert err.value.sequence_number == 8


def test_submit_multi_destinations() -> None:
    pdu = SubmitMulti(
        sequence_number=1,
        dest_address=[SmeAddress(1, 1, "14155550123"), DistributionList("friends")],
        short_message=b"hi",
    )
    wire = encode(pdu)
    assert b"\x02\x01\x01\x0114155550123\0\x02friends\0" in wire  # number_of_dests, dest_flag ...
    assert decode(wire) == pdu
    bad = wire.replace(b"\x02friends", b"\x03friends")
    with pytest.raises(PduError) as err:
        decode(bad)
    assert err.value.command_status == S.ESME_RINVDESTFLAG


def test_submit_multi_resp_unsuccess_list() -> None:
    pdu = SubmitMultiResp(
        sequence_number=2,
        message_id="m1",
        unsuccess_sme=[UnsuccessSme(1, 1, "123", S.ESME_RINVDSTADR)],
    )
    wire = encode(pdu)
    assert wire[16:] == b"m1\0" + b"\x01" + b"\x01\x01123\0" + b"\0\0\0\x0b"
    assert decode(wire) == pdu


def test_pdu_errors_are_smpp_errors() -> None:
    err = PduError(S.ESME_RINVCMDID, 0x99, 5, "unknown")
    assert isinstance(err, SmppError)
    assert "0x00000099" in str(err)
    assert "unknown" in str(err)


# ---------------------------------------------------------------------------
# Encoding refuses what it cannot put on the wire


@pytest.mark.parametrize(
    "pdu",
    [
        SubmitSm(source_addr="1" * 21),  # Var. max 21 counts the NUL
        SubmitSm(service_type="CMTXXX"),
        SubmitSm(destination_addr="12\x003"),
        SubmitSm(validity_period="x" * 17),
        SubmitSm(source_addr="€"),  # not latin-1
        SubmitSm(esm_class=256),
        SubmitSm(data_coding=-1),
        SubmitSm(short_message=b"x" * 256),
        SubmitSm(sequence_number=1 << 32),
        SubmitSm(tlvs={0x10000: b""}),
        SubmitSm(tlvs={0x0424: b"x" * 0x10000}),
        SubmitSm(tlvs={0x0424: "text"}),  # type: ignore[dict-item]
        SubmitSmResp(message_id="m" * 65),
        BindTransmitter(system_id="s" * 16),
        BindTransmitter(password="p" * 65),
        BindTransmitter(interface_version=0x134),
        QuerySm(source_addr="x" * 21),
        DataSm(source_addr="x" * 65),
        SubmitMulti(dest_address=[SmeAddress(destination_addr="1" * 21)]),
        SubmitMulti(dest_address=["14155550123"]),  # type: ignore[list-item]
        SubmitMulti(dest_address=[DistributionList("d" * 256)]),
        SubmitMultiResp(unsuccess_sme=[UnsuccessSme(error_status_code=-1)]),
        GenericNack(command_status=-1),
    ],
    ids=repr,
)
def test_encode_refuses_unencodable_fields(pdu: Pdu) -> None:
    with pytest.raises(EncodeError):
        encode(pdu)


def test_encode_refuses_a_non_pdu() -> None:
    # The compiled build (setup.py) checks the argument's type at the call.
    with pytest.raises((EncodeError, TypeError)):
        encode(object())  # type: ignore[arg-type]


def test_the_longest_legal_fields_encode() -> None:
    pdu = SubmitSm(
        service_type="CMT12",
        source_addr="1" * 20,
        destination_addr="2" * 20,
        schedule_delivery_time="000001000000000R",
        validity_period="000001000000000R",
        short_message=b"x" * 254,
    )
    assert decode(encode(pdu)) == pdu


# ---------------------------------------------------------------------------
# Typed TLV access (§5.3.2)


def test_set_and_get_tlv_by_type() -> None:
    pdu = SubmitSm()
    set_tlv(pdu, Tag.SAR_MSG_REF_NUM, 0x1234)
    set_tlv(pdu, Tag.SAR_TOTAL_SEGMENTS, 3)
    set_tlv(pdu, Tag.QOS_TIME_TO_LIVE, 86400)
    set_tlv(pdu, Tag.RECEIPTED_MESSAGE_ID, "abc")
    set_tlv(pdu, Tag.MESSAGE_PAYLOAD, b"\x00\xff" * 200)
    set_tlv(pdu, Tag.ALERT_ON_MESSAGE_DELIVERY, b"")
    set_tlv(pdu, 0x1501, b"vendor")
    assert pdu.tlvs == {
        Tag.SAR_MSG_REF_NUM: b"\x12\x34",
        Tag.SAR_TOTAL_SEGMENTS: b"\x03",
        Tag.QOS_TIME_TO_LIVE: b"\x00\x01\x51\x80",
        Tag.RECEIPTED_MESSAGE_ID: b"abc\0",
        Tag.MESSAGE_PAYLOAD: b"\x00\xff" * 200,
        Tag.ALERT_ON_MESSAGE_DELIVERY: b"",
        0x1501: b"vendor",
    }
    back = decode(encode(pdu))
    assert get_tlv(back, Tag.SAR_MSG_REF_NUM) == 0x1234
    assert get_tlv(back, Tag.SAR_TOTAL_SEGMENTS) == 3
    assert get_tlv(back, Tag.QOS_TIME_TO_LIVE) == 86400
    assert get_tlv(back, Tag.RECEIPTED_MESSAGE_ID) == "abc"
    assert get_tlv(back, Tag.MESSAGE_PAYLOAD) == b"\x00\xff" * 200
    assert get_tlv(back, Tag.ALERT_ON_MESSAGE_DELIVERY) == b""
    assert get_tlv(back, 0x1501) == b"vendor"
    assert get_tlv(back, Tag.SOURCE_PORT) is None
    set_tlv(back, Tag.MESSAGE_PAYLOAD, None)
    assert Tag.MESSAGE_PAYLOAD not in back.tlvs


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        (Tag.SAR_TOTAL_SEGMENTS, 256),
        (Tag.SAR_MSG_REF_NUM, -1),
        (Tag.MESSAGE_STATE, "2"),
        (Tag.MESSAGE_STATE, True),
        (Tag.RECEIPTED_MESSAGE_ID, b"abc"),
        (Tag.RECEIPTED_MESSAGE_ID, "x" * 65),
        (Tag.RECEIPTED_MESSAGE_ID, "a\0b"),
        (Tag.NETWORK_ERROR_CODE, b"\x03\x00\x01\x02"),
        (Tag.MESSAGE_PAYLOAD, "text"),
        (0x1400, 5),
        (0x10000, b""),
    ],
)
def test_set_tlv_refuses_the_wrong_type_or_size(tag: int, value: Any) -> None:
    with pytest.raises(EncodeError):
        set_tlv(SubmitSm(), tag, value)


def test_get_tlv_is_lenient_where_peers_stray() -> None:
    pdu = DeliverSm(
        sequence_number=4,
        tlvs={
            Tag.RECEIPTED_MESSAGE_ID: b"no-nul",  # some SMSCs omit the NUL
            Tag.SOURCE_TELEMATICS_ID: b"\x00\x07",  # 1 octet by the table, 2 in the wild
            Tag.MESSAGE_STATE: b"",
        },
    )
    assert get_tlv(pdu, Tag.RECEIPTED_MESSAGE_ID) == "no-nul"
    assert get_tlv(pdu, Tag.SOURCE_TELEMATICS_ID) == 7
    with pytest.raises(PduError) as err:
        get_tlv(pdu, Tag.MESSAGE_STATE)
    assert (err.value.command_status, err.value.sequence_number) == (S.ESME_RINVPARLEN, 4)


# ---------------------------------------------------------------------------
# PDU helpers


def test_responses_carry_the_sequence_number() -> None:
    for cid, resp_cls in RESPONSE_CLASSES.items():
        request = PDU_CLASSES[cid](sequence_number=4242)  # type: ignore[call-arg]
        resp = request.response(S.ESME_RTHROTTLED)  # type: ignore[attr-defined]
        assert type(resp) is resp_cls
        assert (resp.command_status, resp.sequence_number) == (S.ESME_RTHROTTLED, 4242)
        assert resp.command_id == cid | 0x80000000
        assert is_response(resp) and not is_response(request)
    assert SubmitSm(sequence_number=3).response(message_id="m").message_id == "m"
    assert not hasattr(Outbind(), "response") and not hasattr(AlertNotification(), "response")
    assert is_response(GenericNack())


def test_pdus_have_no_instance_dict() -> None:
    for cls in PDU_CLASSES.values():
        assert not hasattr(cls(), "__dict__"), cls  # type: ignore[call-arg]


def test_status_table_values() -> None:
    expected = {
        "ESME_RINVSRCADR": 0x0A,
        "ESME_RINVDSTADR": 0x0B,
        "ESME_RBINDFAIL": 0x0D,
        "ESME_RINVPASWD": 0x0E,
        "ESME_RINVSYSID": 0x0F,
        "ESME_RMSGQFUL": 0x14,
        "ESME_RINVSERTYP": 0x15,
        "ESME_RTHROTTLED": 0x58,
        "ESME_RX_T_APPN": 0x64,
        "ESME_RX_P_APPN": 0x65,
        "ESME_RX_R_APPN": 0x66,
        "ESME_RQUERYFAIL": 0x67,
        "ESME_RINVOPTPARSTREAM": 0xC0,
        "ESME_RUNKNOWNERR": 0xFF,
    }
    assert {name: S[name] for name in expected} == expected
    assert len(S) == 48


# ---------------------------------------------------------------------------
# Differential: against smpplib, an independent implementation


class _SmpplibClient:
    """What smpplib's PDU classes want from a client: a sequence counter."""

    def __init__(self, sequence: int = 1) -> None:
        self.sequence = sequence

    def next_sequence(self) -> int:
        return self.sequence


def theirs(data: bytes) -> Any:
    return smpplib.smpp.parse_pdu(data, client=_SmpplibClient())


def make_theirs(command: str, sequence: int, **fields: Any) -> bytes:
    pdu = smpplib.smpp.make_pdu(command, client=_SmpplibClient(sequence), **fields)
    return pdu.generate()


def test_smpplib_reads_our_bind_transceiver() -> None:
    ours = BindTransceiver(
        sequence_number=12,
        system_id="router",
        password="secret",
        system_type="SMS",
        addr_ton=1,
        addr_npi=1,
        address_range="^1415",
    )
    parsed = theirs(encode(ours))
    assert parsed.command == "bind_transceiver"
    assert parsed.sequence == 12
    assert (parsed.system_id, parsed.password, parsed.system_type) == (b"router", b"secret", b"SMS")
    assert (parsed.interface_version, parsed.addr_ton, parsed.addr_npi) == (0x34, 1, 1)
    assert parsed.address_range == b"^1415"


def test_we_read_smpplibs_bind_transceiver() -> None:
    wire = make_theirs(
        "bind_transceiver",
        77,
        system_id="router",
        password="secret",
        system_type="",
        addr_ton=1,
        addr_npi=1,
        address_range="",
    )
    assert decode(wire) == BindTransceiver(
        sequence_number=77, system_id="router", password="secret", addr_ton=1, addr_npi=1
    )


_SUBMIT = {
    "service_type": cstr(6),
    "source_addr_ton": u8,
    "source_addr_npi": u8,
    "source_addr": cstr(21),
    "dest_addr_ton": u8,
    "dest_addr_npi": u8,
    "destination_addr": cstr(21),
    "esm_class": u8,
    "registered_delivery": u8,
    "data_coding": u8,
    "short_message": st.binary(min_size=1, max_size=254),
}


@settings(max_examples=150, deadline=None)
@given(seq=st.integers(1, 0x7FFFFFFF), fields=st.fixed_dictionaries(_SUBMIT))
def test_smpplib_reads_our_submit_sm(seq: int, fields: dict[str, Any]) -> None:
    parsed = theirs(encode(SubmitSm(sequence_number=seq, **fields)))
    assert parsed.command == "submit_sm" and parsed.sequence == seq
    for name, value in fields.items():
        got = getattr(parsed, name)
        assert got == (value.encode("latin-1") if isinstance(value, str) else value), name
    assert parsed.sm_length == len(fields["short_message"])


@settings(max_examples=150, deadline=None)
@given(seq=st.integers(1, 0x7FFFFFFF), fields=st.fixed_dictionaries(_SUBMIT))
def test_we_read_smpplibs_submit_sm(seq: int, fields: dict[str, Any]) -> None:
    extra = {
        "protocol_id": 0,
        "priority_flag": 0,
        "replace_if_present_flag": 0,
        "sm_default_msg_id": 0,
    }
    wire = make_theirs("submit_sm", seq, **fields, **extra)
    assert decode(wire) == SubmitSm(sequence_number=seq, **fields)


def test_smpplib_reads_our_deliver_sm_receipt() -> None:
    parsed = theirs(GOLDEN[2][1])
    assert parsed.command == "deliver_sm" and parsed.sequence == 3
    assert parsed.esm_class == 0x04
    assert parsed.short_message == b"id:42 stat:DELIVRD"
    assert parsed.receipted_message_id == b"42"
    assert parsed.message_state == 2


def test_we_read_smpplibs_deliver_sm_receipt() -> None:
    wire = make_theirs(
        "deliver_sm",
        31,
        service_type="",
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="14155550123",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="14155550101",
        esm_class=4,
        protocol_id=0,
        priority_flag=0,
        registered_delivery=0,
        replace_if_present_flag=0,
        data_coding=0,
        sm_default_msg_id=0,
        short_message=b"id:abc stat:UNDELIV err:001",
        receipted_message_id="abc",
        message_state=5,
    )
    pdu = decode(wire)
    assert isinstance(pdu, DeliverSm)
    assert (pdu.sequence_number, pdu.esm_class, pdu.source_addr) == (31, 4, "14155550123")
    assert pdu.short_message == b"id:abc stat:UNDELIV err:001"
    assert get_tlv(pdu, Tag.RECEIPTED_MESSAGE_ID) == "abc"
    assert get_tlv(pdu, Tag.MESSAGE_STATE) == MessageState.UNDELIVERABLE


def test_enquire_link_both_ways_with_smpplib() -> None:
    parsed = theirs(encode(EnquireLink(sequence_number=99)))
    assert (parsed.command, parsed.sequence) == ("enquire_link", 99)
    assert decode(make_theirs("enquire_link", 98)) == EnquireLink(sequence_number=98)
    resp = theirs(encode(EnquireLinkResp(sequence_number=99)))
    assert (resp.command, resp.sequence, resp.status) == ("enquire_link_resp", 99, 0)


def test_submit_sm_resp_both_ways_with_smpplib() -> None:
    parsed = theirs(
        encode(SubmitSmResp(command_status=S.ESME_RTHROTTLED, sequence_number=5, message_id=""))
    )
    assert (parsed.command, parsed.status, parsed.sequence) == ("submit_sm_resp", 0x58, 5)
    wire = make_theirs("submit_sm_resp", 6, message_id="abc123")
    assert decode(wire) == SubmitSmResp(sequence_number=6, message_id="abc123")


def test_passwords_longer_than_the_spec_travel_both_ways() -> None:
    """§5.2.2 says 9 octets; field SMSCs accept more and so do we (codec.py)."""
    pdu = BindTransceiver(system_id="demo", password="demo-pass", sequence_number=7)
    assert decode(encode(pdu)) == pdu
