"""One SMPP session over TCP: the thin asyncio shell around `smpp.Session`.

Used by all three SMPP speakers of the project: our SMSC for partner ESMEs,
our ESME client towards carriers, and the carrier simulator. The protocol
rules live in the sans-IO session; this shell only moves bytes, keeps the
window of outstanding requests and runs the timers.

Windowing follows cloudhopper's: a bounded map of sequence number → future.
`request()` waits for a free slot instead of growing the map (backpressure),
each entry has a deadline swept once a second, and when the link drops every
outstanding future fails with `LinkClosed` — nothing waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Protocol

import structlog
from mypy_extensions import mypyc_attr

from connectors.smpp import (
    BindState,
    EnquireLink,
    Pdu,
    Role,
    Session,
    SmppError,
    Unbind,
    is_response,
)
from router.slots import Slots

log = structlog.get_logger("smpp")


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

    # ---------------------------------------------------------- asyncio API

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # One PDU per write must leave now: Nagle plus delayed ACKs would
            # hold a submit_sm_resp up to 40 ms (FACTS.md: Jasmin's slowness).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._schedule_tick()

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
            elif session.state is not BindState.CLOSED:
                try:
                    self.handler.on_request(self, pdu)
                except Exception:
                    # A bug in handling one PDU must not take the link (or
                    # the daemon) down; the peer's request times out instead.
                    log.exception(
                        "error handling a request", peer=self.peer, pdu=type(pdu).__name__
                    )
        for problem in session.protocol_errors():
            log.info("peer protocol error", peer=self.peer, error=str(problem))
        if session.closed:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._out.clear()
        if self._timer is not None:
            self._timer.cancel()
        outstanding, self._outstanding = self._outstanding, {}
        for entry in outstanding.values():
            if not entry.future.done():
                entry.future.set_exception(LinkClosed(self.peer))
            self._slots.release()
        self._writable.set()
        if not self.closed.done():
            self.closed.set_result(None)
        self.handler.on_closed(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ---------------------------------------------------------- our API

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    def send(self, pdu: Pdu) -> None:
        """Send a response (or a request whose answer nobody awaits).

        Dropped silently once the link is closing: a response the peer can
        no longer receive is no error of ours.
        """
        if self.is_open and self.session.state is not BindState.CLOSED:
            self._write(self.session.send(pdu))

    async def request(self, pdu: Pdu, *, timeout: float | None = None) -> Pdu:
        """Send a request and return the peer's response (or generic_nack).

        Waits for a window slot first. Raises LinkClosed if the connection
        ends before the answer and ResponseTimeout after `timeout` seconds.
        """
        await self._slots.acquire()
        try:
            if not self._writable.is_set():
                await self._writable.wait()
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
            log.info("closing link that did not bind in time", peer=self.peer)
            self.close()
            return
        if self.inactivity_timeout is not None and now - self._last_rx > self.inactivity_timeout:
            log.info("closing inactive link", peer=self.peer)
            self.close()
            return
        if (
            self.session.bound
            and self.enquire_link_interval > 0
            and now - max(self._last_rx, self._last_tx) >= self.enquire_link_interval
            and len(self._outstanding) < self.window
        ):
            # SMPP 3.4 §4.11: enquire_link proves the peer is alive; its
            # answer arrives as any response and refreshes _last_rx.
            self._loop.create_task(self._enquire())
        if self.is_open:
            self._schedule_tick()

    async def _enquire(self) -> None:
        try:
            await self.request(EnquireLink(), timeout=self.response_timeout)
        except ResponseTimeout:
            log.warning("enquire_link unanswered, closing", peer=self.peer)
            self.close()
        except (LinkClosed, SmppError):
            pass
