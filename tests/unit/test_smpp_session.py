"""The sans-IO SMPP session (connectors/smpp/session.py).

Scenarios run an ESME session and an SMSC session back to back, moving the
octets by hand, so both roles are checked against each other.  The table of
who may send what in which state is restated here from SMPP 3.4 §2.3,
Table 2-1, independently of the session's own tables.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrouter.connectors.smpp import (
    DEFAULT_MAX_PDU_SIZE,
    PDU_CLASSES,
    RESPONSE_CLASSES,
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindState,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CommandId,
    CommandStatus,
    DataSm,
    DeliverSm,
    DeliverSmResp,
    EncodeError,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    LocalProtocolError,
    Outbind,
    Pdu,
    PduError,
    QuerySm,
    ReplaceSm,
    Role,
    Session,
    SmppError,
    SubmitMulti,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    decode,
    encode,
    read_header,
)

S = CommandStatus
ESME, SMSC = Role.ESME, Role.SMSC
OPEN, TX, RX, TRX, UNBOUND, CLOSED = (
    BindState.OPEN,
    BindState.BOUND_TX,
    BindState.BOUND_RX,
    BindState.BOUND_TRX,
    BindState.UNBOUND,
    BindState.CLOSED,
)
BOUND = {TX, RX, TRX}

# Table 2-1: the role that issues each request and the states it may do so
# in.  Two readings documented in the session: data_sm from an ESME is a
# submission (needs TX) and from an SMSC a delivery (needs RX); enquire_link
# is also accepted in OPEN, as SMPP 5.0 allows.
ISSUED: dict[type[Pdu], dict[Role, set[BindState]]] = {
    BindTransmitter: {ESME: {OPEN}},
    BindReceiver: {ESME: {OPEN}},
    BindTransceiver: {ESME: {OPEN}},
    Outbind: {SMSC: {OPEN}},
    Unbind: {ESME: BOUND, SMSC: BOUND},
    SubmitSm: {ESME: {TX, TRX}},
    SubmitMulti: {ESME: {TX, TRX}},
    DataSm: {ESME: {TX, TRX}, SMSC: {RX, TRX}},
    DeliverSm: {SMSC: {RX, TRX}},
    QuerySm: {ESME: {TX, TRX}},
    CancelSm: {ESME: {TX, TRX}},
    ReplaceSm: {ESME: {TX, TRX}},
    EnquireLink: {ESME: {OPEN, *BOUND}, SMSC: {OPEN, *BOUND}},
    AlertNotification: {SMSC: {RX, TRX}},
}
BINDS = {TX: BindTransmitter, RX: BindReceiver, TRX: BindTransceiver}


def other(role: Role) -> Role:
    return SMSC if role is ESME else ESME


def pdus_in(data: bytes) -> list[Pdu]:
    """Split a byte stream into decoded PDUs (asserting it is well formed)."""
    out = []
    while data:
        length = read_header(data)[0]
        out.append(decode(data[:length]))
        data = data[length:]
    return out


def bound_pair(state: BindState = TRX) -> tuple[Session, Session]:
    esme, smsc = Session(ESME), Session(SMSC)
    [bind] = smsc.receive_data(esme.send(BINDS[state](system_id="router", password="pw")))
    [resp] = esme.receive_data(smsc.send(bind.response(system_id="smsc")))  # type: ignore[attr-defined]
    assert resp.command_status == 0
    assert esme.state is smsc.state is state
    return esme, smsc


def session_in(role: Role, state: BindState) -> Session:
    if state is OPEN:
        return Session(role)
    esme, smsc = bound_pair(TRX if state is UNBOUND else state)
    ours, theirs = (esme, smsc) if role is ESME else (smsc, esme)
    if state is UNBOUND:
        [unbind] = ours.receive_data(theirs.send(Unbind()))
        assert isinstance(unbind, Unbind)
        ours.data_to_send()
    assert ours.state is state
    return ours


# ---------------------------------------------------------------------------
# Whole sessions


def test_esme_and_smsc_scenario() -> None:
    esme, smsc = Session(ESME), Session(SMSC)
    assert esme.state is smsc.state is OPEN and not esme.bound and not esme.closed

    # bind_transceiver (§4.1.5)
    bind = BindTransceiver(system_id="router", password="secret")
    wire = esme.send(bind)
    assert bind.sequence_number == 1 and esme.outstanding == 1
    [got] = smsc.receive_data(wire)
    assert got == bind and smsc.state is OPEN  # bound only once the application agrees
    [resp] = esme.receive_data(smsc.send(got.response(system_id="smsc")))  # type: ignore[attr-defined]
    assert resp == BindTransceiverResp(0, 1, "smsc")
    assert esme.bound and smsc.bound and esme.state is smsc.state is TRX
    assert esme.outstanding == 0

    # submit_sm / submit_sm_resp (§4.4)
    submit = SubmitSm(
        source_addr="14155550101", destination_addr="14155550123", short_message=b"hi"
    )
    [got] = smsc.receive_data(esme.send(submit))
    assert got == submit and submit.sequence_number == 2 and esme.outstanding == 1
    [resp] = esme.receive_data(smsc.send(got.response(message_id="m-1")))  # type: ignore[attr-defined]
    assert resp == SubmitSmResp(0, 2, "m-1") and esme.outstanding == 0

    # deliver_sm / deliver_sm_resp (§4.6), numbered by the SMSC's own counter
    deliver = DeliverSm(esm_class=0x04, short_message=b"id:m-1 stat:DELIVRD")
    [got] = esme.receive_data(smsc.send(deliver))
    assert got == deliver and deliver.sequence_number == 1 and smsc.outstanding == 1
    [resp] = smsc.receive_data(esme.send(got.response()))  # type: ignore[attr-defined]
    assert resp == DeliverSmResp(0, 1) and smsc.outstanding == 0

    # enquire_link either way is answered by the session itself (§4.11)
    assert smsc.receive_data(esme.send(EnquireLink())) == []
    [resp] = esme.receive_data(smsc.data_to_send())
    assert resp == EnquireLinkResp(0, 3) and esme.outstanding == 0
    assert esme.receive_data(smsc.send(EnquireLink())) == []
    assert smsc.receive_data(esme.data_to_send()) == [EnquireLinkResp(0, 2)]

    # unbind from the ESME (§4.2): the SMSC answers and hands the Unbind up
    [got] = smsc.receive_data(esme.send(Unbind()))
    assert isinstance(got, Unbind) and smsc.state is UNBOUND and smsc.closed
    assert esme.state is TRX and esme.outstanding == 1
    [resp] = esme.receive_data(smsc.data_to_send())
    assert resp == UnbindResp(0, 4)
    assert esme.state is UNBOUND and esme.closed and esme.outstanding == 0
    assert smsc.data_to_send() == b"" and esme.data_to_send() == b""


@pytest.mark.parametrize("state", [TX, RX, TRX])
def test_each_bind_type_gives_its_state(state: BindState) -> None:
    esme, smsc = bound_pair(state)
    assert esme.bound and smsc.bound


def test_smsc_initiated_unbind() -> None:
    esme, smsc = bound_pair(RX)
    [got] = esme.receive_data(smsc.send(Unbind()))
    assert isinstance(got, Unbind) and esme.closed
    assert smsc.receive_data(esme.data_to_send()) == [UnbindResp(0, 1)]
    assert smsc.state is UNBOUND and smsc.closed


def test_a_refused_bind_leaves_both_open_and_may_be_retried() -> None:
    esme, smsc = Session(ESME), Session(SMSC)
    [bind] = smsc.receive_data(esme.send(BindTransmitter(system_id="x", password="bad")))
    [resp] = esme.receive_data(smsc.send(bind.response(S.ESME_RINVPASWD)))  # type: ignore[attr-defined]
    assert resp.command_status == S.ESME_RINVPASWD
    assert esme.state is smsc.state is OPEN and esme.outstanding == 0
    [bind] = smsc.receive_data(esme.send(BindTransmitter(system_id="x", password="good")))
    esme.receive_data(smsc.send(bind.response()))  # type: ignore[attr-defined]
    assert esme.state is smsc.state is TX


def test_a_bind_answered_by_generic_nack_fails() -> None:
    esme = Session(ESME)
    esme.send(BindTransceiver())
    [nack] = esme.receive_data(encode(GenericNack(S.ESME_RINVCMDID, 1)))
    assert isinstance(nack, GenericNack)
    assert esme.state is OPEN and esme.outstanding == 0
    esme.send(BindTransceiver())  # may try again


def test_outbind_then_bind_receiver() -> None:
    # §4.1.7: the SMSC connects and asks the ESME to bind_receiver.
    esme, smsc = Session(ESME), Session(SMSC)
    [outbind] = esme.receive_data(smsc.send(Outbind(system_id="smsc", password="pw")))
    assert isinstance(outbind, Outbind) and smsc.outstanding == 0  # no response exists
    [bind] = smsc.receive_data(esme.send(BindReceiver(system_id="router")))
    esme.receive_data(smsc.send(bind.response()))  # type: ignore[attr-defined]
    assert esme.state is smsc.state is RX


def test_enquire_link_is_answered_before_the_bind() -> None:
    smsc = Session(SMSC)
    assert smsc.receive_data(encode(EnquireLink(sequence_number=5))) == []
    assert pdus_in(smsc.data_to_send()) == [EnquireLinkResp(0, 5)]


# ---------------------------------------------------------------------------
# Table 2-1, every request, both roles, every state


STATES = [OPEN, TX, RX, TRX, UNBOUND]


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.name)
@pytest.mark.parametrize("role", [ESME, SMSC], ids=lambda r: r.name)
@pytest.mark.parametrize("cls", list(ISSUED), ids=lambda c: c.__name__)
def test_requests_from_the_peer(cls: type[Pdu], role: Role, state: BindState) -> None:
    session = session_in(role, state)
    request = cls(sequence_number=1000)  # type: ignore[call-arg]
    pdus = session.receive_data(encode(request))
    replies = pdus_in(session.data_to_send())
    allowed = ISSUED[cls].get(other(role), set())
    if cls is EnquireLink:
        assert pdus == [] and replies == [EnquireLinkResp(0, 1000)]
    elif state in allowed:
        assert pdus == [request]
        if cls is Unbind:
            assert replies == [UnbindResp(0, 1000)] and session.state is UNBOUND
        else:
            assert replies == [] and session.state is state
    else:
        already_bound = cls in BINDS.values() and role is SMSC and state in BOUND
        status = S.ESME_RALYBND if already_bound else S.ESME_RINVBNDSTS
        response_cls = RESPONSE_CLASSES.get(cls.command_id, GenericNack)
        assert pdus == []
        assert replies == [response_cls(status, 1000)]  # type: ignore[call-arg]
        assert session.state is state
        [error] = session.protocol_errors()
        assert (error.command_status, error.command_id, error.sequence_number) == (
            status,
            cls.command_id,
            1000,
        )


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.name)
@pytest.mark.parametrize("role", [ESME, SMSC], ids=lambda r: r.name)
@pytest.mark.parametrize("cls", list(ISSUED), ids=lambda c: c.__name__)
def test_requests_we_send(cls: type[Pdu], role: Role, state: BindState) -> None:
    session = session_in(role, state)
    before = session.outstanding
    request = cls()  # type: ignore[call-arg]
    if state in ISSUED[cls].get(role, set()):
        wire = session.send(request)
        assert decode(wire) == request and request.sequence_number > 0
        expects_answer = cls.command_id in RESPONSE_CLASSES
        assert session.outstanding == before + expects_answer
    else:
        with pytest.raises(LocalProtocolError):
            session.send(request)
        assert request.sequence_number == 0 and session.outstanding == before


@pytest.mark.parametrize("role", [ESME, SMSC], ids=lambda r: r.name)
@pytest.mark.parametrize(
    "cls",
    [c for c in PDU_CLASSES.values() if c.command_id & 0x80000000],
    ids=lambda c: c.__name__,
)
def test_responses_we_send(cls: type[Pdu], role: Role) -> None:
    session = session_in(role, TRX)
    response = cls(sequence_number=7)  # type: ignore[call-arg]
    answers_peer = any(
        req.command_id | 0x80000000 == cls.command_id and other(role) in issuers
        for req, issuers in ISSUED.items()
    )
    session_answers_itself = cls in (EnquireLinkResp, UnbindResp)
    bind_resp = cls in (BindTransmitterResp, BindReceiverResp, BindTransceiverResp)
    if cls is GenericNack or (answers_peer and not session_answers_itself and not bind_resp):
        assert decode(session.send(response)) == response
    else:
        with pytest.raises(LocalProtocolError):
            session.send(response)


# ---------------------------------------------------------------------------
# Forbidden transitions, spelled out


def test_submit_sm_before_bind_is_refused() -> None:
    smsc = Session(SMSC)
    assert smsc.receive_data(encode(SubmitSm(sequence_number=3))) == []
    assert pdus_in(smsc.data_to_send()) == [SubmitSmResp(S.ESME_RINVBNDSTS, 3)]
    with pytest.raises(LocalProtocolError):
        Session(ESME).send(SubmitSm())


def test_submit_sm_on_a_receiver_bind_is_refused() -> None:
    esme, smsc = bound_pair(RX)
    assert smsc.receive_data(encode(SubmitSm(sequence_number=9))) == []
    assert pdus_in(smsc.data_to_send()) == [SubmitSmResp(S.ESME_RINVBNDSTS, 9)]
    with pytest.raises(LocalProtocolError):
        esme.send(SubmitSm())


def test_deliver_sm_to_a_transmitter_bind_is_refused() -> None:
    esme, smsc = bound_pair(TX)
    assert esme.receive_data(encode(DeliverSm(sequence_number=4))) == []
    assert pdus_in(esme.data_to_send()) == [DeliverSmResp(S.ESME_RINVBNDSTS, 4)]
    with pytest.raises(LocalProtocolError):
        smsc.send(DeliverSm())


def test_a_second_bind_is_already_bound() -> None:
    _, smsc = bound_pair(TRX)
    assert smsc.receive_data(encode(BindTransmitter(sequence_number=8))) == []
    assert pdus_in(smsc.data_to_send()) == [BindTransmitterResp(S.ESME_RALYBND, 8)]
    assert smsc.state is TRX


def test_a_bind_while_one_is_pending() -> None:
    smsc = Session(SMSC)
    [first] = smsc.receive_data(encode(BindTransceiver(sequence_number=1)))
    assert smsc.receive_data(encode(BindReceiver(sequence_number=2))) == []
    assert pdus_in(smsc.data_to_send()) == [BindReceiverResp(S.ESME_RALYBND, 2)]
    smsc.send(first.response())  # type: ignore[attr-defined]
    assert smsc.state is TRX
    esme = Session(ESME)
    esme.send(BindTransceiver())
    with pytest.raises(LocalProtocolError):
        esme.send(BindTransmitter())


def test_bind_responses_must_answer_the_pending_bind() -> None:
    smsc = Session(SMSC)
    with pytest.raises(LocalProtocolError):
        smsc.send(BindTransceiverResp(sequence_number=1))
    smsc.receive_data(encode(BindTransceiver(sequence_number=5)))
    with pytest.raises(LocalProtocolError):
        smsc.send(BindTransmitterResp(sequence_number=5))  # wrong type
    with pytest.raises(LocalProtocolError):
        smsc.send(BindTransceiverResp(sequence_number=6))  # wrong sequence_number
    smsc.send(BindTransceiverResp(sequence_number=5))
    assert smsc.state is TRX


def test_the_session_answers_enquire_link_and_unbind_itself() -> None:
    esme, _ = bound_pair()
    for response in (EnquireLinkResp(sequence_number=1), UnbindResp(sequence_number=1)):
        with pytest.raises(LocalProtocolError):
            esme.send(response)


def test_no_requests_while_our_unbind_is_pending() -> None:
    esme, _ = bound_pair()
    esme.send(Unbind())
    with pytest.raises(LocalProtocolError):
        esme.send(SubmitSm())
    with pytest.raises(LocalProtocolError):
        esme.send(Unbind())
    # The peer may still deliver until it sees our unbind; we can answer.
    [deliver] = esme.receive_data(encode(DeliverSm(sequence_number=3)))
    esme.send(deliver.response())  # type: ignore[attr-defined]


def test_unbind_before_bind_is_refused() -> None:
    smsc = Session(SMSC)
    assert smsc.receive_data(encode(Unbind(sequence_number=2))) == []
    assert pdus_in(smsc.data_to_send()) == [UnbindResp(S.ESME_RINVBNDSTS, 2)]
    assert smsc.state is OPEN
    with pytest.raises(LocalProtocolError):
        Session(ESME).send(Unbind())


def test_nothing_after_unbound_but_late_responses() -> None:
    esme, smsc = bound_pair()
    [submit] = smsc.receive_data(esme.send(SubmitSm()))
    smsc.receive_data(esme.send(Unbind()))
    assert smsc.state is UNBOUND
    smsc.send(submit.response(message_id="late"))  # type: ignore[attr-defined]
    with pytest.raises(LocalProtocolError):
        smsc.send(DeliverSm())
    with pytest.raises(LocalProtocolError):
        smsc.send(EnquireLink())


def test_closed_session_refuses_everything() -> None:
    esme, _ = bound_pair()
    esme.send(SubmitSm())
    esme.close()
    assert esme.state is CLOSED and esme.closed and esme.outstanding == 0
    for pdu in (SubmitSm(), DeliverSmResp(sequence_number=1), GenericNack(), EnquireLink()):
        with pytest.raises(LocalProtocolError):
            esme.send(pdu)
    assert esme.receive_data(encode(DeliverSm(sequence_number=1))) == []
    assert esme.data_to_send() == b""


# ---------------------------------------------------------------------------
# Sequence numbers (§5.1.4) and the outstanding count


def test_sequence_numbers_count_up_from_one() -> None:
    esme, _ = bound_pair()  # the bind took 1
    numbers = [decode(esme.send(SubmitSm())).sequence_number for _ in range(5)]
    assert numbers == [2, 3, 4, 5, 6]
    assert esme.outstanding == 5


def test_sequence_numbers_wrap_to_one() -> None:
    esme = Session(ESME, first_sequence_number=0x7FFFFFFE)
    sent = [esme.send(EnquireLink()) for _ in range(3)]
    assert [read_header(w)[3] for w in sent] == [0x7FFFFFFE, 0x7FFFFFFF, 1]


def test_allocation_skips_numbers_still_outstanding() -> None:
    esme = Session(ESME, first_sequence_number=0x7FFFFFFF)
    esme.send(EnquireLink(sequence_number=1))  # chosen by the application
    esme.send(EnquireLink(sequence_number=2))
    assert read_header(esme.send(EnquireLink()))[3] == 0x7FFFFFFF
    assert read_header(esme.send(EnquireLink()))[3] == 3
    assert esme.outstanding == 4
    with pytest.raises(LocalProtocolError):
        esme.send(EnquireLink(sequence_number=2))
    esme.receive_data(encode(EnquireLinkResp(sequence_number=2)))
    assert esme.outstanding == 3
    esme.send(EnquireLink(sequence_number=2))  # free again


def test_skipping_an_outstanding_number_wraps_too() -> None:
    esme = Session(ESME, first_sequence_number=0x7FFFFFFF)
    esme.send(EnquireLink(sequence_number=0x7FFFFFFF))
    assert read_header(esme.send(EnquireLink()))[3] == 1


@pytest.mark.parametrize("first", [0, -1, 0x80000000])
def test_first_sequence_number_range(first: int) -> None:
    with pytest.raises(ValueError):
        Session(ESME, first_sequence_number=first)


def test_a_failed_encode_changes_nothing() -> None:
    esme, _ = bound_pair()
    bad = SubmitSm(source_addr="x" * 30)
    with pytest.raises(EncodeError):
        esme.send(bad)
    assert bad.sequence_number == 0 and esme.outstanding == 0
    assert isinstance(EncodeError("x"), LocalProtocolError)


def test_responses_clear_outstanding_and_unknown_ones_are_still_returned() -> None:
    esme, _ = bound_pair()
    a, b = SubmitSm(), SubmitSm()
    esme.send(a)
    esme.send(b)
    assert esme.outstanding == 2
    assert esme.receive_data(encode(SubmitSmResp(0, b.sequence_number, "x"))) != []
    assert esme.outstanding == 1
    [nack] = esme.receive_data(encode(GenericNack(S.ESME_RSYSERR, a.sequence_number)))
    assert nack.command_status == S.ESME_RSYSERR and esme.outstanding == 0
    [stray] = esme.receive_data(encode(SubmitSmResp(0, 999, "y")))
    assert stray.sequence_number == 999 and esme.outstanding == 0
    # A response of the wrong type does not settle the request.
    esme.send(c := SubmitSm())
    esme.receive_data(encode(DeliverSmResp(0, c.sequence_number)))
    assert esme.outstanding == 1


# ---------------------------------------------------------------------------
# Octets in: partial reads, framing, malformed PDUs


def _stream() -> tuple[bytes, list[Pdu]]:
    pdus: list[Pdu] = [
        SubmitSm(sequence_number=10, destination_addr="123", short_message=b"a" * 100),
        QuerySm(sequence_number=11, message_id="m"),
        SubmitSm(sequence_number=12, destination_addr="456", tlvs={0x0424: b"p" * 300}),
        SubmitSmResp(sequence_number=1, message_id="x"),
    ]
    return b"".join(encode(p) for p in pdus), pdus


def test_byte_by_byte() -> None:
    _, smsc = bound_pair()
    wire, expected = _stream()
    got: list[Pdu] = []
    for i in range(len(wire)):
        got += smsc.receive_data(wire[i : i + 1])
    assert got == expected
    assert smsc.data_to_send() == b""


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(0, 700), max_size=12))
def test_any_chunking_gives_the_same_pdus(cuts: list[int]) -> None:
    _, smsc = bound_pair()
    wire, expected = _stream()
    bounds = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    got: list[Pdu] = []
    for start, end in itertools.pairwise(bounds):
        got += smsc.receive_data(memoryview(wire)[start:end])
    assert got == expected


def test_many_pdus_in_one_read() -> None:
    _, smsc = bound_pair()
    wire, expected = _stream()
    assert smsc.receive_data(bytearray(wire * 3)) == expected * 3


@pytest.mark.parametrize("command_length", [0, 8, 15])
def test_a_short_command_length_loses_framing(command_length: int) -> None:
    _, smsc = bound_pair()
    good = encode(SubmitSm(sequence_number=5))
    bad = struct.pack(">IIII", command_length, CommandId.SUBMIT_SM, 0, 6) + b"junk"
    assert smsc.receive_data(good + bad + good) == [SubmitSm(sequence_number=5)]
    assert smsc.state is CLOSED and smsc.closed
    [nack] = pdus_in(smsc.data_to_send())
    assert (type(nack), nack.command_status) == (GenericNack, S.ESME_RINVCMDLEN)
    assert smsc.receive_data(good) == []
    [error] = smsc.protocol_errors()
    assert error.command_status == S.ESME_RINVCMDLEN
    with pytest.raises(LocalProtocolError):
        smsc.send(SubmitSmResp(sequence_number=5))


def test_an_oversized_command_length_is_refused_from_the_header_alone() -> None:
    esme, _ = bound_pair()
    header = struct.pack(">IIII", DEFAULT_MAX_PDU_SIZE + 1, CommandId.DELIVER_SM, 0, 77)
    assert esme.receive_data(header) == []
    assert esme.state is CLOSED
    assert pdus_in(esme.data_to_send()) == [GenericNack(S.ESME_RINVCMDLEN, 77)]


def test_max_pdu_size_is_configurable() -> None:
    smsc = Session(SMSC, max_pdu_size=64)
    smsc.receive_data(encode(EnquireLink(sequence_number=1, tlvs={0x1400: b"x" * 44})))
    assert smsc.state is OPEN  # exactly 64 octets
    smsc.receive_data(encode(EnquireLink(sequence_number=2, tlvs={0x1400: b"x" * 45})))
    assert smsc.state is CLOSED
    with pytest.raises(ValueError):
        Session(SMSC, max_pdu_size=15)


def test_a_malformed_request_gets_its_own_response_and_the_session_goes_on() -> None:
    _, smsc = bound_pair()
    wire = encode(SubmitSm(sequence_number=21, short_message=b"12345"))
    broken = wire[:-6] + b"\x09" + wire[-5:]  # sm_length 9, five octets
    good = encode(SubmitSm(sequence_number=22))
    assert smsc.receive_data(broken + good) == [SubmitSm(sequence_number=22)]
    assert pdus_in(smsc.data_to_send()) == [SubmitSmResp(S.ESME_RINVMSGLEN, 21)]
    assert smsc.state is TRX
    [error] = smsc.protocol_errors()
    assert isinstance(error, PduError) and error.sequence_number == 21
    assert smsc.protocol_errors() == []


def test_a_malformed_bind_fails_the_bind() -> None:
    smsc = Session(SMSC)
    body = b"s" * 20 + b"\0pw\0\0\x34\0\0\0"  # system_id longer than 15
    wire = struct.pack(">IIII", 16 + len(body), CommandId.BIND_TRANSCEIVER, 0, 1) + body
    assert smsc.receive_data(wire) == []
    assert pdus_in(smsc.data_to_send()) == [BindTransceiverResp(S.ESME_RINVSYSID, 1)]
    assert smsc.state is OPEN


@pytest.mark.parametrize("command_id", [0x00000099, 0x80000099])
def test_an_unknown_command_gets_generic_nack(command_id: int) -> None:
    esme, _ = bound_pair()
    assert esme.receive_data(struct.pack(">IIII", 16, command_id, 0, 31)) == []
    assert pdus_in(esme.data_to_send()) == [GenericNack(S.ESME_RINVCMDID, 31)]
    assert esme.state is TRX


def test_a_malformed_response_is_not_answered() -> None:
    esme, _ = bound_pair()
    esme.send(SubmitSm())
    bad = struct.pack(">IIII", 19, CommandId.SUBMIT_SM_RESP, 0, 2) + b"abc"  # no NUL
    assert esme.receive_data(bad) == []
    assert esme.data_to_send() == b""
    assert esme.outstanding == 1  # its request will time out in the shell
    [error] = esme.protocol_errors()
    assert error.command_id == CommandId.SUBMIT_SM_RESP


def test_errors_are_smpp_errors() -> None:
    assert issubclass(PduError, SmppError) and issubclass(LocalProtocolError, SmppError)


def test_unread_protocol_errors_are_bounded() -> None:
    smsc = Session(SMSC)
    smsc.receive_data(encode(SubmitSm(sequence_number=1)) * 500)
    assert len(pdus_in(smsc.data_to_send())) == 500  # every one answered
    errors = smsc.protocol_errors()
    assert 0 < len(errors) <= 100
    assert errors[-1].sequence_number == 1


def test_abandoned_request_is_no_longer_outstanding() -> None:
    esme = Session(Role.ESME)
    esme.send(BindTransceiver(system_id="a", password="b"))
    assert esme.outstanding == 1
    esme.abandon(1)
    assert esme.outstanding == 0
    # The bind may be tried again on the same connection.
    esme.send(BindTransceiver(system_id="a", password="b"))
    assert esme.outstanding == 1
