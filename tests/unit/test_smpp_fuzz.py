"""Fuzzing the SMPP codec and session with hostile octets.

The promises under test: ``decode`` raises ``PduError`` and nothing else for
any input; ``Session.receive_data`` never raises for anything a peer sends,
and everything the session answers by itself is a well-formed response.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsrouter.connectors.smpp import (
    RESPONSE_CLASSES,
    BindState,
    CommandId,
    Pdu,
    PduError,
    Role,
    SmppError,
    Unbind,
    decode,
    encode,
    is_response,
)
from tests.unit.test_smpp_codec import any_pdu
from tests.unit.test_smpp_session import pdus_in, session_in

u32 = st.integers(0, 0xFFFFFFFF)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated_pdu(draw: st.DrawFn) -> bytes:
    """A valid PDU with a few random corruptions."""
    wire = bytearray(encode(draw(any_pdu)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "relength", "length"]))
        at = draw(st.integers(0, max(len(wire) - 1, 0)))
        if op == "flip" and wire:
            wire[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del wire[at:]
        elif op == "insert":
            wire[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del wire[at : at + draw(st.integers(1, 8))]
        elif op == "relength" and len(wire) >= 4:
            wire[0:4] = struct.pack(">I", len(wire))  # keep framing consistent
        elif op == "length" and len(wire) >= 4:
            wire[0:4] = struct.pack(">I", draw(u32))
    return bytes(wire)


@st.composite
def framed_body(draw: st.DrawFn) -> bytes:
    """A consistent header for a (mostly) known command around random octets."""
    command_id = draw(st.one_of(st.sampled_from(list(CommandId)), u32))
    body = draw(st.binary(max_size=200))
    return struct.pack(">IIII", 16 + len(body), command_id, draw(u32), draw(u32)) + body


def _decodes_or_refuses(data: bytes) -> None:
    try:
        pdu = decode(data)
    except PduError as exc:
        assert isinstance(exc.command_status, int) and exc.detail
        return
    assert isinstance(pdu, Pdu)
    # Whatever we accept we can put back on the wire, and it reads the same.
    assert decode(encode(pdu)) == pdu


@FUZZ
@given(data=st.binary(max_size=300))
def test_decode_random_octets(data: bytes) -> None:
    _decodes_or_refuses(data)


@FUZZ
@given(data=framed_body())
def test_decode_random_bodies(data: bytes) -> None:
    _decodes_or_refuses(data)


@FUZZ
@given(data=mutated_pdu())
def test_decode_mutated_pdus(data: bytes) -> None:
    _decodes_or_refuses(data)


chunk = st.one_of(
    st.binary(max_size=64),
    mutated_pdu(),
    framed_body(),
    any_pdu.map(encode),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    role=st.sampled_from([Role.ESME, Role.SMSC]),
    state=st.sampled_from(
        [BindState.OPEN, BindState.BOUND_TX, BindState.BOUND_RX, BindState.BOUND_TRX]
    ),
    chunks=st.lists(chunk, max_size=8),
    answer=st.booleans(),
)
def test_session_never_raises_for_peer_octets(
    role: Role, state: BindState, chunks: list[bytes], answer: bool
) -> None:
    session = session_in(role, state)
    for data in chunks:
        pdus = session.receive_data(data)
        assert all(isinstance(pdu, Pdu) for pdu in pdus)
        for reply in pdus_in(session.data_to_send()):
            assert is_response(reply)
        for error in session.protocol_errors():
            assert isinstance(error, SmppError)
        if not answer or session.state is BindState.CLOSED:
            continue
        # Every request the session hands up can be answered as it is.
        for pdu in pdus:
            if (
                not is_response(pdu)
                and pdu.command_id in RESPONSE_CLASSES
                and not isinstance(pdu, Unbind)
            ):
                session.send(pdu.response())  # type: ignore[attr-defined]
    assert session.outstanding >= 0
