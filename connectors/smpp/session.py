"""The SMPP 3.4 session state machine, sans I/O.

One ``Session`` is one TCP connection seen from one side.  The same class
serves the SMSC side (our server for partner ESMEs, the carrier simulator)
and the ESME side (our client towards carriers)::

    session = Session(Role.ESME)
    sock.send(session.send(BindTransceiver(system_id="router", password="secret")))
    for pdu in session.receive_data(sock.recv(65536)):
        ...                                   # application PDUs
    sock.send(session.data_to_send())          # what the session answered itself
    if session.closed:
        sock.close()

It never touches a socket, a clock or a task: timeouts (enquire_link
interval, response timers of §7.2) are the asyncio shell's job.

Which PDU may travel in which direction and session state follows §2.3,
Table 2-1 ("SMPP PDUs" with their required session state and issuer), with
the bound states of §2.2: a transmitter session (BOUND_TX) carries what the
ESME sends, a receiver session (BOUND_RX) what the SMSC sends, a transceiver
(BOUND_TRX) both.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Final

from .codec import _HEADER, _U32, _decode_frame, encode
from .constants import (
    HEADER_SIZE,
    RESPONSE_BIT,
    SEQUENCE_NUMBER_MAX,
    SEQUENCE_NUMBER_MIN,
    CommandId,
    CommandStatus,
)
from .pdu import (
    PDU_CLASSES,
    RESPONSE_CLASSES,
    EnquireLinkResp,
    GenericNack,
    LocalProtocolError,
    Pdu,
    PduError,
    UnbindResp,
)

__all__ = ["DEFAULT_MAX_PDU_SIZE", "BindState", "LocalProtocolError", "Role", "Session"]

#: Largest command_length accepted from a peer.  SMPP 3.4 sets no limit, but
#: the largest PDU it can need is a submit_sm/data_sm whose message_payload
#: TLV carries up to 64K octets (§5.3.2; the 2-octet Length caps it at
#: 65535) next to a few hundred octets of mandatory fields and other TLVs.
#: Precedents: Kannel (gw/smsc/smpp_pdu.c) refuses PDUs over 7424 octets,
#: having raised it from 1024 for message_payload; cloudhopper-smpp's
#: DefaultPduTranscoder only refuses command_length < 16; Jasmin's vendored
#: twisted SMPP protocol reads whatever command_length announces.  A bound
#: keeps a peer from making us buffer without limit, and 68 KiB still admits
#: a full message_payload.
DEFAULT_MAX_PDU_SIZE: Final = 68 * 1024

#: protocol_errors() keeps the most recent ones only, so a shell that never
#: drains them cannot be made to grow memory by a peer sending garbage.
_KEPT_ERRORS: Final = 100


class Role(Enum):
    """Which end of the SMPP session we are."""

    SMSC = "smsc"
    ESME = "esme"


class BindState(Enum):
    """Session states of §2.2, plus CLOSED for a connection we gave up on."""

    OPEN = "open"  # connected, not (yet) bound
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBOUND = "unbound"  # unbind/unbind_resp exchanged: close the connection
    CLOSED = "closed"  # framing lost or close() called: nothing more goes through


_C = CommandId
_OPEN: Final = frozenset({BindState.OPEN})
_TX: Final = frozenset({BindState.BOUND_TX, BindState.BOUND_TRX})
_RX: Final = frozenset({BindState.BOUND_RX, BindState.BOUND_TRX})
_BOUND: Final = _TX | _RX
# Table 2-1 lists enquire_link for the bound states only; SMPP 5.0's state
# table also allows it in OPEN, and answering a keep-alive before the bind costs
# nothing while refusing it makes some carriers drop the connection.
_LINK: Final = _OPEN | _BOUND

#: Requests an ESME issues and the states it may issue them in (Table 2-1).
#: data_sm is listed for every bound state in the table because it flows both
#: ways; from the ESME it is a submission, so it needs a transmitter session.
_ESME_REQUESTS: Final[dict[int, frozenset[BindState]]] = {
    _C.BIND_TRANSMITTER: _OPEN,
    _C.BIND_RECEIVER: _OPEN,
    _C.BIND_TRANSCEIVER: _OPEN,
    _C.SUBMIT_SM: _TX,
    _C.SUBMIT_MULTI: _TX,
    _C.DATA_SM: _TX,
    _C.QUERY_SM: _TX,
    _C.CANCEL_SM: _TX,
    _C.REPLACE_SM: _TX,
    _C.UNBIND: _BOUND,
    _C.ENQUIRE_LINK: _LINK,
}

#: Requests an SMSC issues and the states it may issue them in (Table 2-1).
_SMSC_REQUESTS: Final[dict[int, frozenset[BindState]]] = {
    _C.OUTBIND: _OPEN,
    _C.DELIVER_SM: _RX,
    _C.DATA_SM: _RX,
    _C.ALERT_NOTIFICATION: _RX,
    _C.UNBIND: _BOUND,
    _C.ENQUIRE_LINK: _LINK,
}

#: The bound state a successful bind_* leads to (§4.1).
_BIND_RESULT: Final[dict[int, BindState]] = {
    _C.BIND_TRANSMITTER: BindState.BOUND_TX,
    _C.BIND_RECEIVER: BindState.BOUND_RX,
    _C.BIND_TRANSCEIVER: BindState.BOUND_TRX,
}
_BIND_RESPS: Final = frozenset(cid | RESPONSE_BIT for cid in _BIND_RESULT)


def _name(command_id: int) -> str:
    try:
        return CommandId(command_id).name.lower()
    except ValueError:
        return f"command_id 0x{command_id:08X}"


class Session:
    """One SMPP 3.4 session; see the module docstring."""

    def __init__(
        self,
        role: Role,
        *,
        max_pdu_size: int = DEFAULT_MAX_PDU_SIZE,
        first_sequence_number: int = SEQUENCE_NUMBER_MIN,
    ) -> None:
        if max_pdu_size < HEADER_SIZE:
            raise ValueError(f"max_pdu_size {max_pdu_size} is smaller than a PDU header")
        if not SEQUENCE_NUMBER_MIN <= first_sequence_number <= SEQUENCE_NUMBER_MAX:
            raise ValueError("first_sequence_number must be within 1..0x7FFFFFFF (§5.1.4)")
        self.role: Final = role
        self.max_pdu_size: Final = max_pdu_size
        self.state = BindState.OPEN
        self._next_seq = first_sequence_number
        self._buffer = b""  # the start of a PDU not yet complete
        self._to_send = bytearray()  # answers the session made itself
        self._errors: deque[PduError] = deque(maxlen=_KEPT_ERRORS)
        #: Our requests awaiting a response: sequence_number -> command_id.
        self._outstanding: dict[int, int] = {}
        #: The bind in flight, (command_id, sequence_number): sent by us in
        #: the ESME role, received from the peer in the SMSC role.
        self._pending_bind: tuple[int, int] | None = None
        #: sequence_number of the unbind we sent, until its unbind_resp.
        self._unbind_seq: int | None = None
        if role is Role.ESME:
            self._our_requests, self._peer_requests = _ESME_REQUESTS, _SMSC_REQUESTS
        else:
            self._our_requests, self._peer_requests = _SMSC_REQUESTS, _ESME_REQUESTS
        # We answer the peer's requests; enquire_link and unbind the session
        # answers itself.
        self._our_responses: frozenset[int] = frozenset(
            cid | RESPONSE_BIT
            for cid in self._peer_requests
            if cid in RESPONSE_CLASSES and cid not in (_C.ENQUIRE_LINK, _C.UNBIND)
        ) | {_C.GENERIC_NACK}

    # -- state -------------------------------------------------------------

    @property
    def bound(self) -> bool:
        return self.state in _BOUND

    @property
    def closed(self) -> bool:
        """True once the connection has no further use: flush ``data_to_send()``, then close."""
        return self.state is BindState.UNBOUND or self.state is BindState.CLOSED

    @property
    def outstanding(self) -> int:
        """How many of our requests still wait for their response."""
        return len(self._outstanding)

    def abandon(self, sequence_number: int) -> None:
        """Stop waiting for the response to one of our requests.

        The shell calls this when the response timed out: the request no
        longer counts as outstanding and a late response to it is dropped
        like any unexpected one. An abandoned bind leaves the session OPEN,
        so the bind may be tried again.
        """
        if self._outstanding.pop(sequence_number, None) is not None:
            pending = self._pending_bind
            if pending is not None and pending[1] == sequence_number:
                self._pending_bind = None

    def close(self) -> None:
        """Give the session up (connection lost, or closed by us); later ``send()`` raises."""
        self.state = BindState.CLOSED
        self._buffer = b""
        self._outstanding.clear()
        self._pending_bind = None
        self._unbind_seq = None

    def data_to_send(self) -> bytes:
        """The replies the session generated during ``receive_data()``; drains them."""
        data = bytes(self._to_send)
        self._to_send.clear()
        return data

    def protocol_errors(self) -> list[PduError]:
        """What the peer got wrong since the last call (malformed or refused PDUs); drains them.

        Each was already answered where SMPP has an answer for it; this is for
        logs.  Only the latest 100 are kept between calls.
        """
        errors = list(self._errors)
        self._errors.clear()
        return errors

    # -- inbound -----------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Pdu]:
        """Feed octets from the peer; return the PDUs for the application.

        Never raises for anything the peer sends.  Partial PDUs are kept for
        the next call.  Answers the session makes by itself (enquire_link,
        unbind, refusals) go to ``data_to_send()``.
        """
        if self.state is BindState.CLOSED:
            return []
        buf = bytes(data) if type(data) is not bytes else data
        if self._buffer:
            buf = self._buffer + buf
        n = len(buf)
        pos = 0
        pdus: list[Pdu] = []
        while n - pos >= 4:
            (command_length,) = _U32.unpack_from(buf, pos)
            if command_length < HEADER_SIZE or command_length > self.max_pdu_size:
                self._lose_framing(buf, pos, n, command_length)
                return pdus
            end = pos + command_length
            if end > n:
                break
            frame = buf if pos == 0 and end == n else buf[pos:end]
            pos = end
            self._receive_frame(frame, pdus)
        self._buffer = buf[pos:] if pos < n else b""
        return pdus

    def _lose_framing(self, buf: bytes, pos: int, n: int, command_length: int) -> None:
        # §4.3.1: an invalid command_length means the data is corrupt; answer
        # generic_nack(ESME_RINVCMDLEN).  PDU boundaries are lost with it, so
        # nothing after can be trusted: the session closes.
        seq = 0
        if command_length >= HEADER_SIZE and n - pos >= HEADER_SIZE:
            seq = _HEADER.unpack_from(buf, pos)[3]
        error = PduError(
            CommandStatus.ESME_RINVCMDLEN,
            int.from_bytes(buf[pos + 4 : pos + 8], "big") if n - pos >= 8 else 0,
            seq,
            f"command_length {command_length} outside 16..{self.max_pdu_size}",
        )
        self._errors.append(error)
        self._to_send += encode(GenericNack(CommandStatus.ESME_RINVCMDLEN, seq))
        self.close()

    def _receive_frame(self, frame: bytes, pdus: list[Pdu]) -> None:
        _, command_id, status, seq = _HEADER.unpack_from(frame)
        try:
            pdu = _decode_frame(frame, command_id, status, seq)
        except PduError as exc:
            self._errors.append(exc)
            # A request gets its own *_resp carrying the error (§4: the
            # response's command_status reports why), an unknown command_id a
            # generic_nack (§4.3.1).  A broken response cannot be answered:
            # SMPP never responds to a response; its request times out.
            if not command_id & RESPONSE_BIT or command_id not in PDU_CLASSES:
                self._refuse(command_id, seq, exc.command_status)
            return
        if command_id & RESPONSE_BIT:
            self._receive_response(pdu, pdus)
        else:
            self._receive_request(pdu, pdus)

    def _refuse(self, command_id: int, seq: int, status: int) -> None:
        response = RESPONSE_CLASSES.get(command_id, GenericNack)
        self._to_send += encode(response(status, seq))  # type: ignore[call-arg]

    def _receive_request(self, pdu: Pdu, pdus: list[Pdu]) -> None:
        command_id = pdu.command_id
        seq = pdu.sequence_number
        state = self.state
        if command_id == _C.ENQUIRE_LINK:
            # §4.11: a keep-alive, answered here in any state but CLOSED so
            # the application never has to.
            self._to_send += encode(EnquireLinkResp(0, seq))
            return
        allowed = self._peer_requests.get(command_id)
        status: int = CommandStatus.ESME_ROK
        if allowed is None:
            # The peer's role never issues this command (Table 2-1), e.g.
            # deliver_sm from an ESME: no bind state makes it legal.
            status = CommandStatus.ESME_RINVBNDSTS
        elif command_id in _BIND_RESULT and (state in _BOUND or self._pending_bind is not None):
            status = CommandStatus.ESME_RALYBND
        elif state not in allowed:
            status = CommandStatus.ESME_RINVBNDSTS
        if status:
            self._errors.append(
                PduError(
                    status,
                    command_id,
                    seq,
                    f"{_name(command_id)} from the {'ESME' if self.role is Role.SMSC else 'SMSC'}"
                    f" refused in state {state.name}",
                )
            )
            self._refuse(command_id, seq, status)
            return
        if command_id == _C.UNBIND:
            # §4.2: unbind is answered at once and ends the session; the
            # Unbind is still handed up so the application knows why.
            self._to_send += encode(UnbindResp(0, seq))
            self.state = BindState.UNBOUND
            self._pending_bind = None
        elif command_id in _BIND_RESULT:
            self._pending_bind = (command_id, seq)
        pdus.append(pdu)

    def _receive_response(self, pdu: Pdu, pdus: list[Pdu]) -> None:
        seq = pdu.sequence_number
        command_id = pdu.command_id
        request_id = self._outstanding.get(seq)
        if request_id is not None and (
            command_id == request_id | RESPONSE_BIT or command_id == _C.GENERIC_NACK
        ):
            del self._outstanding[seq]
            pending = self._pending_bind
            if self.role is Role.ESME and pending is not None and pending[1] == seq:
                # §4.1: the bind_*_resp decides; any error leaves us OPEN so
                # the application may try again.
                self._pending_bind = None
                if command_id != _C.GENERIC_NACK and pdu.command_status == 0:
                    self.state = _BIND_RESULT[pending[0]]
            elif seq == self._unbind_seq:
                self._unbind_seq = None
                if command_id == _C.UNBIND_RESP:
                    # Whatever its status, the peer has acknowledged the end.
                    self.state = BindState.UNBOUND
        # Responses to sequence numbers we do not know are still handed up:
        # the application may have its own view (and logs them).
        pdus.append(pdu)

    # -- outbound ----------------------------------------------------------

    def send(self, pdu: Pdu) -> bytes:
        """Encode ``pdu`` for the shell to write, updating the session state.

        A request whose sequence_number is 0 gets the next free one (§5.1.4:
        0x00000001-0x7FFFFFFF, wrapping) written into it; requests that
        expect a response are then outstanding until it arrives.  Raises
        ``LocalProtocolError`` for what our side may not send now (Table
        2-1) and ``EncodeError`` (a subclass) for an unencodable PDU.
        """
        state = self.state
        if state is BindState.CLOSED:
            raise LocalProtocolError(f"cannot send {_name(pdu.command_id)}: the session is closed")
        command_id = pdu.command_id
        if command_id & RESPONSE_BIT:
            return self._send_response(pdu, command_id)
        allowed = self._our_requests.get(command_id)
        if allowed is None:
            raise LocalProtocolError(
                f"an {self.role.name} does not send {_name(command_id)} (SMPP 3.4 Table 2-1)"
            )
        if state not in allowed:
            raise LocalProtocolError(f"{_name(command_id)} is not allowed in state {state.name}")
        if self._unbind_seq is not None:
            raise LocalProtocolError(f"cannot send {_name(command_id)}: unbind in progress")
        if command_id in _BIND_RESULT and self._pending_bind is not None:
            raise LocalProtocolError("a bind is already waiting for its response")
        original_seq = pdu.sequence_number
        seq = original_seq or self._allocate_sequence_number()
        if seq in self._outstanding:
            raise LocalProtocolError(f"sequence_number {seq} is already outstanding")
        # Pdu declares the field; each concrete PDU (a slots dataclass) holds it.
        pdu.sequence_number = seq  # type: ignore[misc]
        try:
            data = encode(pdu)
        except LocalProtocolError:
            pdu.sequence_number = original_seq  # type: ignore[misc]
            raise
        if command_id in RESPONSE_CLASSES:
            self._outstanding[seq] = command_id
        if command_id in _BIND_RESULT:
            self._pending_bind = (command_id, seq)
        elif command_id == _C.UNBIND:
            self._unbind_seq = seq
        return data

    def _send_response(self, pdu: Pdu, command_id: int) -> bytes:
        if command_id not in self._our_responses:
            if command_id in (_C.ENQUIRE_LINK_RESP, _C.UNBIND_RESP):
                raise LocalProtocolError(f"the session sends {_name(command_id)} itself")
            raise LocalProtocolError(
                f"an {self.role.name} does not send {_name(command_id)} (SMPP 3.4 Table 2-1)"
            )
        if command_id not in _BIND_RESPS:
            return encode(pdu)
        pending = self._pending_bind
        if (
            pending is None
            or pending[0] | RESPONSE_BIT != command_id
            or pending[1] != pdu.sequence_number
        ):
            raise LocalProtocolError(
                f"{_name(command_id)} with sequence_number {pdu.sequence_number} "
                "answers no pending bind"
            )
        data = encode(pdu)
        self._pending_bind = None
        if pdu.command_status == 0:
            self.state = _BIND_RESULT[pending[0]]
        return data

    def _allocate_sequence_number(self) -> int:
        seq = self._next_seq
        while seq in self._outstanding:
            seq = seq + 1 if seq < SEQUENCE_NUMBER_MAX else SEQUENCE_NUMBER_MIN
        self._next_seq = seq + 1 if seq < SEQUENCE_NUMBER_MAX else SEQUENCE_NUMBER_MIN
        return seq
