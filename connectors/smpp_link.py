"""One SMPP session over TCP: the thin asyncio shell around `smpp.Session`.

Used by all three SMPP speakers of the project: our SMSC for partner ESMEs,
our ESME client towards carriers, and the carrier simulator. The protocol
rules live in the sans-IO session; this shell only moves bytes, keeps the
window of outstanding requests and runs the timers.

Windowing follows cloudhopper's: a bounded map of sequence number → future.
`request()` waits for a free slot instead of growing the map (backpressure),
each entry has a deadline swept once a second, and when the link drops every
outstanding future fails with `LinkClosed` — nothing waits forever.

The other direction is bounded too, for the side that serves a peer's
requests (our SMSC, CONTRACT §11 "Abusive clients"): the handler may hold
the peer's requests (`hold_requests()`) and, with `read_backpressure`, a
peer that does not read what we write is not read from either. Either way
the socket stops being read (`pause_reading`) and TCP pushes back on the
peer; what one read already brought waits, decoded, until it may go up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import structlog
from mypy_extensions import mypyc_attr

from smsrouter.connectors.smpp import (
    BindState,
    CommandStatus,
    EnquireLink,
    Pdu,
    Role,
    Session,
    SmppError,
    Unbind,
    is_response,
)
from smsrouter.router.log_limits import LimitedLog
from smsrouter.router.slots import Slots

log = structlog.get_logger("smpp")
# Lines a peer can cause once per PDU (a handler error, a malformed PDU).
_limited = LimitedLog(log)


# Responses that may time out in a row before the link counts as dead.
MAX_TIMEOUTS_IN_A_ROW = 3


class LinkClosed(Exception):
    """The TCP connection ended while a request was outstanding."""


class ResponseTimeout(Exception):
    """The peer did not answer a request within the response timeout."""


class LinkHandler(Protocol):
    def on_request(self, link: SmppLink, pdu: Pdu) -> None:
        """A request from the peer (bind, submit_sm, deliver_sm, ...); answer with link.send()."""

    def on_closed(self, link: SmppLink) -> None:
        """The connection is gone (either side closed it)."""


class _Outstanding:
    __slots__ = ("deadline", "future", "offered_at")

    def __init__(self, future: asyncio.Future[Pdu], deadline: float, offered_at: float) -> None:
        self.future = future
        self.deadline = deadline
        self.offered_at = offered_at


# The carrier simulator's links subclass this one; in the compiled build
# (setup.py) a compiled class needs leave for interpreted subclasses.
@mypyc_attr(allow_interpreted_subclasses=True)
class SmppLink(asyncio.Protocol):
    def __init__(
        self,
        role: Role,
        handler: LinkHandler,
        *,
        window: int = 64,
        response_timeout: float = 30.0,
        enquire_link_interval: float = 30.0,
        inactivity_timeout: float | None = None,
        bind_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        read_backpressure: bool = False,
        on_connected: Callable[[SmppLink], None] | None = None,
        send_buffer: int | None = None,
    ) -> None:
        self.session = Session(role)
        self.handler = handler
        self.window = window
        self.response_timeout = response_timeout
        self.enquire_link_interval = enquire_link_interval
        self.inactivity_timeout = inactivity_timeout
        self.bind_timeout = bind_timeout
        self._clock = clock
        self._slots = Slots(window)
        self._outstanding: dict[int, _Outstanding] = {}
        self._timeouts_in_a_row = 0
        self._transport: asyncio.Transport | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        # PDUs written during one turn of the event loop, sent together.
        self._out: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._opened_at = clock()
        self._last_rx = self._opened_at
        self._last_tx = self._opened_at
        # Kept: asyncio.get_running_loop() costs a getpid() call on 3.11.
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        self.peer: str = "?"
        # Set by the owner once the bind is accepted (account id, carrier name).
        self.owner: object = None
        # Requests read while they were held (see hold_requests), in order.
        self._held: deque[Pdu] = deque()
        self._holding = False  # the handler holds the peer's requests
        self._write_blocked = False  # the transport's buffer is over its high-water mark
        # Stop reading the peer while its answers pile up unread. Off for
        # the carrier side: there the peer's PDUs (responses, receipts)
        # are what frees our own window.
        self._read_backpressure = read_backpressure
        self._requests_stopped = False  # either of the two above, or requests still held
        self._reading_paused = False
        self._release_scheduled = False
        self._enquiring = False  # one enquire_link of ours at a time
        self._enquire_task: asyncio.Task[None] | None = None
        # Told once the peer's address is known (a server's admission of
        # the connection; it may close the link at once).
        self._on_connected = on_connected
        # SO_SNDBUF for the socket; None leaves the kernel's autotuning.
        self._send_buffer = send_buffer

    # ---------------------------------------------------------- asyncio API

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # One PDU per write must leave now: Nagle plus delayed ACKs would
            # hold a submit_sm_resp up to 40 ms (FACTS.md: Jasmin's slowness).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._send_buffer is not None:
                # A fixed kernel buffer: one the kernel autotunes can hold
                # megabytes for a peer that does not read, unseen by the
                # transport's high-water mark (and so by pause_writing).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._schedule_tick()
        if self._on_connected is not None:
            self._on_connected(self)

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._clock()
        session = self.session
        pdus = session.receive_data(data)
        out = session.data_to_send()
        if out:
            self._write(out)
        for pdu in pdus:
            if is_response(pdu):
                # Responses and generic_nack (SMPP 3.4 §4.3) answer the
                # request with their sequence number.
                self._timeouts_in_a_row = 0
                entry = self._outstanding.pop(pdu.sequence_number, None)
                if entry is not None:
                    self._slots.release()
                    if not entry.future.done():
                        entry.future.set_result(pdu)
            elif isinstance(pdu, Unbind):
                # The session answered unbind_resp itself and the link closes
                # below once that answer is written (SMPP 3.4 §4.2).
                continue
            elif self._requests_stopped:
                self._held.append(pdu)
            elif session.state is not BindState.CLOSED:
                try:
                    self.handler.on_request(self, pdu)
                except Exception:
                    self._handler_failed(pdu)
        for problem in session.protocol_errors():
            _limited.info("peer protocol error", key=self.peer, peer=self.peer, error=str(problem))
        if session.closed:
            self.close()

    def _handler_failed(self, pdu: Pdu) -> None:
        # A fault in handling one PDU (a bug, or the system out of file
        # descriptors) must not take the link (or the daemon) down; the
        # peer gets ESME_RSYSERR, SMPP 3.4's answer for a system error
        # (§5.1.3), rather than waiting for its request to time out.
        _limited.error(
            "error handling a request",
            key=type(pdu).__name__,
            peer=self.peer,
            pdu=type(pdu).__name__,
            exc_info=True,
        )
        respond = getattr(pdu, "response", None)
        if respond is not None:
            with contextlib.suppress(Exception):
                self.send(respond(command_status=CommandStatus.ESME_RSYSERR))

    def connection_lost(self, exc: Exception | None) -> None:
        self._out.clear()
        self._held.clear()
        if self._timer is not None:
            self._timer.cancel()
        outstanding, self._outstanding = self._outstanding, {}
        for entry in outstanding.values():
            if not entry.future.done():
                entry.future.set_exception(LinkClosed(self.peer))
            self._slots.release()
        self._writable.set()
        enquiring = self._enquire_task
        if enquiring is not None and not enquiring.done():
            # Our own enquire_link ends with the link: `closed` resolves once
            # it has, so whoever awaits the link awaits it too.
            enquiring.cancel()
            enquiring.add_done_callback(lambda _: self._set_closed())
        else:
            self._set_closed()
        self.handler.on_closed(self)

    def _set_closed(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._writable.clear()
        self._write_blocked = True
        if self._read_backpressure:
            self._update_flow()

    def resume_writing(self) -> None:
        self._writable.set()
        self._write_blocked = False
        if self._read_backpressure:
            self._update_flow()

    # ---------------------------------------------------------- our API

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    @property
    def can_request_now(self) -> bool:
        """A request would go out at once: a free window slot, a transport
        under its high-water mark, and no request left unanswered past its
        deadline since the peer last answered one."""
        return (
            self._slots.free > 0
            and self._writable.is_set()
            and self._timeouts_in_a_row == 0
            and self.is_open
        )

    @property
    def answering(self) -> bool:
        """False once a request to the peer expired unanswered and nothing
        was answered since: the peer looks stuck."""
        return self._timeouts_in_a_row == 0

    @property
    def oldest_request_at(self) -> float | None:
        """When the oldest request still waiting for its answer was sent
        (the link's clock); None when none waits."""
        for entry in self._outstanding.values():  # in the order sent
            return entry.offered_at
        return None

    @property
    def reading_paused(self) -> bool:
        """The socket is not being read (requests held or answers unread)."""
        return self._reading_paused

    def hold_requests(self) -> None:
        """Hand the handler no more of the peer's requests and stop reading
        the socket, until release_requests(). Responses still go through."""
        if not self._holding:
            self._holding = True
            self._update_flow()

    def release_requests(self) -> None:
        """Undo hold_requests(): the requests held meanwhile go up (in a later
        callback, never inside the caller's own) and reading resumes."""
        if self._holding:
            self._holding = False
            self._update_flow()

    def send(self, pdu: Pdu) -> None:
        """Send a response (or a request whose answer nobody awaits).

        Dropped silently once the link is closing: a response the peer can
        no longer receive is no error of ours.
        """
        if self.is_open and self.session.state is not BindState.CLOSED:
            self._write(self.session.send(pdu))

    async def request(
        self, pdu: Pdu, *, timeout: float | None = None, wait: float | None = None
    ) -> Pdu:
        """Send a request and return the peer's response (or generic_nack).

        Waits for a window slot first (and for the transport to take more),
        at most `wait` seconds when given, else as long as it takes. Raises
        LinkClosed if the connection ends before the answer, and
        ResponseTimeout when the wait or `timeout` seconds for the answer
        run out.
        """
        if wait is not None and not (self._slots.free > 0 and self._writable.is_set()):
            # The slow path only: a free slot costs no timer.
            try:
                async with asyncio.timeout(wait):
                    await self._slots.acquire()
            except TimeoutError:
                raise ResponseTimeout(f"{self.peer}: no window slot within {wait:g} s") from None
        else:
            await self._slots.acquire()
        try:
            if not self._writable.is_set():
                if wait is None:
                    await self._writable.wait()
                else:
                    try:
                        async with asyncio.timeout(wait):
                            await self._writable.wait()
                    except TimeoutError:
                        raise ResponseTimeout(
                            f"{self.peer}: peer not reading for {wait:g} s"
                        ) from None
            if not self.is_open:
                raise LinkClosed(self.peer)
            data = self.session.send(pdu)
        except BaseException:
            self._slots.release()
            raise
        now = self._clock()
        future: asyncio.Future[Pdu] = self._loop.create_future()
        deadline = now + (self.response_timeout if timeout is None else timeout)
        self._outstanding[pdu.sequence_number] = _Outstanding(future, deadline, now)
        self._write(data)
        return await future

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self.flush()  # what was written before closing still leaves (e.g. unbind_resp)
            self._transport.close()

    async def unbind(self, timeout: float = 5.0) -> None:
        """Say goodbye properly (SMPP 3.4 §4.2), then close."""
        with contextlib.suppress(LinkClosed, ResponseTimeout, SmppError):
            if self.is_open and self.session.bound:
                await self.request(Unbind(), timeout=timeout)
        self.close()

    # ---------------------------------------------------------- internals

    def _write(self, data: bytes) -> None:
        """Queue a PDU for the end of this turn of the event loop.

        Under load a turn answers and sends many PDUs on one link (a window
        of submit_sm_resp, a batch of submit_sm); one send() system call for
        all of them instead of one each. No PDU waits longer than the
        current turn, so TCP_NODELAY's promise holds.
        """
        self._last_tx = self._clock()
        out = self._out
        out.append(data)
        if len(out) == 1:
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what this turn has queued now, not at the end of the turn:
        for a caller that knows its burst of sends is over (the answers to
        one group commit)."""
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _update_flow(self) -> None:
        """Read the socket or not, and hand held requests up, as the two
        reasons to stop (held by the handler, answers unread) say."""
        stopped = self._stopped()
        # Held requests go up before any read after them: order is kept.
        self._requests_stopped = stopped or bool(self._held)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if stopped or self._held:
            if not self._reading_paused:
                self._reading_paused = True
                transport.pause_reading()
            if not stopped and not self._release_scheduled:
                # Not inside the caller: release_requests() is called from
                # the answer to a request (inside a commit's settling), and
                # the held requests start commits of their own.
                self._release_scheduled = True
                self._loop.call_soon(self._hand_up_held)
        elif self._reading_paused:
            self._reading_paused = False
            # The peer's silence counts from now: we were not listening.
            self._last_rx = self._clock()
            transport.resume_reading()

    def _stopped(self) -> bool:
        return self._holding or (self._read_backpressure and self._write_blocked)

    def _hand_up_held(self) -> None:
        self._release_scheduled = False
        held = self._held
        while held and not self._stopped():
            pdu = held.popleft()
            if self.session.state is BindState.CLOSED or not self.is_open:
                held.clear()
                return
            try:
                self.handler.on_request(self, pdu)
            except Exception:
                self._handler_failed(pdu)
        self._update_flow()

    def _schedule_tick(self) -> None:
        self._timer = self._loop.call_later(1.0, self._tick)

    def _tick(self) -> None:
        """Once a second: expire requests, keep the link alive, drop dead links."""
        now = self._clock()
        expired = [seq for seq, e in self._outstanding.items() if e.deadline <= now]
        for seq in expired:
            entry = self._outstanding.pop(seq)
            self.session.abandon(seq)
            self._slots.release()
            if not entry.future.done():
                entry.future.set_exception(ResponseTimeout(f"{self.peer} seq {seq}"))
        if expired:
            self._timeouts_in_a_row += len(expired)
            if self._timeouts_in_a_row >= MAX_TIMEOUTS_IN_A_ROW:
                # A peer that takes our requests but never answers is dead
                # even though traffic keeps the link from looking idle.
                log.warning("peer stopped answering, closing", peer=self.peer)
                self.close()
                return
        if (
            self.bind_timeout is not None
            and not self.session.bound
            and now - self._opened_at > self.bind_timeout
        ):
            # One line per connection, which a flood of them would repeat.
            _limited.info(
                "closing link that did not bind in time",
                key=self.peer.rsplit(":", 1)[0],
                peer=self.peer,
            )
            self.close()
            return
        if (
            self.inactivity_timeout is not None
            and not self._reading_paused  # our silence, not the peer's
            and now - self._last_rx > self.inactivity_timeout
        ):
            log.info("closing inactive link", peer=self.peer)
            self.close()
            return
        if (
            self.session.bound
            and self.enquire_link_interval > 0
            and now - max(self._last_rx, self._last_tx) >= self.enquire_link_interval
            and len(self._outstanding) < self.window
            and not self._enquiring
        ):
            # SMPP 3.4 §4.11: enquire_link proves the peer is alive; its
            # answer arrives as any response and refreshes _last_rx.
            self._enquire_task = self._loop.create_task(self._enquire())
        if self.is_open:
            self._schedule_tick()

    async def _enquire(self) -> None:
        self._enquiring = True
        try:
            # `wait` too: a peer that reads nothing leaves the transport
            # paused, and one tick after another would add a waiter.
            await self.request(
                EnquireLink(), timeout=self.response_timeout, wait=self.response_timeout
            )
        except ResponseTimeout:
            log.warning("enquire_link unanswered, closing", peer=self.peer)
            self.close()
        except (LinkClosed, SmppError):
            pass
        finally:
            self._enquiring = False
