"""Accepting TCP connections, and refusing them at the file-descriptor limit.

CONTRACT §11: at the file-descriptor limit the daemon keeps serving the
connections it has and logs the refusals, rate-limited. `loop.create_server`
cannot do the second part:

- uvloop leaves accept() to libuv, which meets EMFILE/ENFILE with a spare
  descriptor it reserves (`uv__emfile_trick`): it closes the spare, accepts
  and closes every pending connection, and reopens it. No one is told, so
  nothing can be logged; and should the spare be gone, the error reaches
  uvloop's server, which then closes its listening socket for good
  (`UVStreamServer._fatal_error`), silently.
- asyncio's own loop calls the exception handler (a traceback) and stops
  accepting for a second, every time, while the clients wait in the backlog.

So a listener here owns its listening socket: it waits for it to be readable
(`loop.add_reader`), accepts, and hands each connection to
`loop.connect_accepted_socket`. At the limit it does what libuv does, with
a spare of its own (the technique of libev's documentation, "The special
problem of accept()ing when you can't"): the spare is closed, which frees
one descriptor; pending connections are accepted with it one at a time and
closed (after a best-effort answer, for HTTP a 503), so that a client learns
at once instead of waiting in the backlog for a descriptor that may never
come; then the spare is taken back. Refusals are counted and logged once
per interval with the count. Without a spare (another thread or process took
the freed slot), accepting pauses for a moment, as nginx does
(`ngx_disable_accept_events`, 500 ms), instead of spinning on a socket that
stays readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import socket
import ssl
from collections.abc import Callable

import structlog

from smsrouter.router.log_limits import DEFAULT_INTERVAL, LimitedLog

log = structlog.get_logger("listener")

# Connections accepted per readiness event before other work gets a turn.
ACCEPT_BATCH = 64
# Connections refused per readiness event at the limit (a full backlog of
# the daemon's listen(1024), and then some).
REFUSE_BATCH = 2048
# How long accepting stops when a connection can be neither accepted nor
# refused (no spare descriptor, out of buffers or memory).
PAUSE_SECONDS = 0.5
# Set to "1" by the parent of `smsrouter run --workers N` (smsrouter/workers.py)
# for its workers: each binds every listener with SO_REUSEPORT, so that N
# processes share the ports and the kernel spreads connections over them
# (CONTRACT §9).
REUSE_PORT_ENV = "SMSROUTER_REUSE_PORT"

ProtocolFactory = Callable[[], asyncio.Protocol]


def _reserve() -> int | None:
    """The spare descriptor, or None if even that one cannot be had."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def reuse_port_requested() -> bool:
    """Whether this process is one of several sharing its ports (REUSE_PORT_ENV)."""
    return os.environ.get(REUSE_PORT_ENV) == "1"


async def listening_sockets(
    host: str | None, port: int, *, backlog: int, reuse_port: bool | None = None
) -> list[socket.socket]:
    """Non-blocking listening sockets on host:port, bound as
    `loop.create_server` binds them: one per address the host resolves to
    (all interfaces for an empty host), SO_REUSEADDR, and IPv6 sockets
    IPv6-only so that an IPv4 socket on the same port can coexist.
    `reuse_port` (default: `reuse_port_requested()`) adds SO_REUSEPORT."""
    if reuse_port is None:
        reuse_port = reuse_port_requested()
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )  # fmt: skip
    sockets: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, str(address)) in seen:
                continue
            seen.add((family, str(address)))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                raise OSError(
                    exc.errno, f"error while attempting to bind on address {address!r}: {reason}"
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _peer_ip(conn: socket.socket) -> str:
    try:
        return str(conn.getpeername()[0])
    except OSError:
        return "?"  # already reset by the peer


class Acceptor:
    """Accepts connections on one listening socket for `protocol_factory`.

    `refusal()` gives the bytes sent to a connection refused at the
    descriptor limit before it is closed (none when it is None).

    With `tls`, each connection is a TLS server session (the protocol hears
    of it once the handshake is done), and at most `max_handshakes_per_ip`
    handshakes run at once from one source address: a connection that is
    accepted but not yet handed to its protocol is outside every limit the
    protocol keeps (CONTRACT §11 "Abusive clients"), so the cap on them is
    kept here. A handshake not done within `handshake_timeout` is dropped.
    `tls` may be replaced; a new context serves new connections.
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: ProtocolFactory,
        *,
        loop: asyncio.AbstractEventLoop,
        name: str,
        refusal: Callable[[], bytes] | None = None,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = 30.0,
        max_handshakes_per_ip: int = 256,
    ) -> None:
        self._sock = sock
        self._factory = protocol_factory
        self._loop = loop
        self.name = name
        self._refusal = refusal
        self.tls = tls
        self._handshake_timeout = handshake_timeout
        self._max_handshakes_per_ip = max_handshakes_per_ip
        # TLS handshakes under way per source address.
        self._handshaking: dict[str, int] = {}
        self.port = int(sock.getsockname()[1])
        self._spare: int | None = None
        self._accepting = False
        self._closed = False
        self._resume: asyncio.TimerHandle | None = None
        # Refusals not yet written to the log, and the timer that writes
        # them once the log line's interval has passed.
        self._refused = 0
        self._refused_error = ""
        self._flush: asyncio.TimerHandle | None = None
        self._log = LimitedLog(log)
        # connect_accepted_socket is a coroutine: each connection takes one
        # turn of the loop in a task until its protocol is connected.
        self._handshakes: set[asyncio.Task[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]] = (
            set()
        )
        #: Connections refused at the descriptor limit since the start.
        self.refused_total = 0

    def start(self) -> None:
        self._spare = _reserve()
        self._resume_accepting()

    def close(self) -> None:
        """Accept no more; connections still being set up are dropped."""
        if self._closed:
            return
        self._closed = True
        if self._accepting:
            self._loop.remove_reader(self._sock.fileno())
            self._accepting = False
        for timer in (self._resume, self._flush):
            if timer is not None:
                timer.cancel()
        self._resume = self._flush = None
        if self._refused:
            self._write_refusals(force=True)
        self._sock.close()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
        for task in self._handshakes:
            task.cancel()

    async def wait_closed(self) -> None:
        if self._handshakes:
            await asyncio.gather(*self._handshakes, return_exceptions=True)

    # ------------------------------------------------------------ accepting

    def _resume_accepting(self) -> None:
        self._resume = None
        if self._closed or self._accepting:
            return
        if self._spare is None:
            self._spare = _reserve()
        self._loop.add_reader(self._sock.fileno(), self._on_readable)
        self._accepting = True

    def _pause(self) -> None:
        if self._accepting:
            self._loop.remove_reader(self._sock.fileno())
            self._accepting = False
        if self._resume is None and not self._closed:
            self._resume = self._loop.call_later(PAUSE_SECONDS, self._resume_accepting)

    def _on_readable(self) -> None:
        sock = self._sock
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while in the backlog
            except OSError as exc:
                self._accept_failed(exc)
                return
            self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        if self.tls is None:
            setup = self._loop.connect_accepted_socket(self._factory, conn)
            ip = ""
        else:
            ip = _peer_ip(conn)
            count = self._handshaking.get(ip, 0)
            if count >= self._max_handshakes_per_ip:
                conn.close()
                self._log.warning(
                    "connection refused: too many TLS handshakes from one address",
                    key=(self.name, ip), listener=self.name, peer=ip,
                    limit=self._max_handshakes_per_ip,
                )  # fmt: skip
                return
            self._handshaking[ip] = count + 1
            setup = self._loop.connect_accepted_socket(
                self._factory, conn, ssl=self.tls, ssl_handshake_timeout=self._handshake_timeout
            )
        task = self._loop.create_task(setup)
        self._handshakes.add(task)
        task.add_done_callback(functools.partial(self._handed_over, conn, ip))

    def _handed_over(
        self,
        conn: socket.socket,
        ip: str,
        task: asyncio.Task[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]],
    ) -> None:
        self._handshakes.discard(task)
        if ip:
            left = self._handshaking[ip] - 1
            if left:
                self._handshaking[ip] = left
            else:
                del self._handshaking[ip]
        if task.cancelled():
            conn.close()
            return
        exc = task.exception()
        if exc is not None:
            # The transport owns the socket once made (and detaches it when
            # it closes); a socket it never took is closed here.
            conn.close()
            self._log.warning(
                "connection could not be set up", key=(self.name, type(exc).__name__),
                listener=self.name, error=repr(exc),
            )  # fmt: skip

    def _accept_failed(self, exc: OSError) -> None:
        code = exc.errno or 0
        name = errno.errorcode.get(code, str(code))
        if code in (errno.EMFILE, errno.ENFILE):
            refused, drained = self._refuse_pending()
            if refused:
                self._refused += refused
                self.refused_total += refused
                self._refused_error = name
                self._write_refusals()
            if drained:
                return
        # No descriptor to refuse with, or accept() itself failing (out of
        # buffers, memory, ...): the socket stays readable, so stop polling
        # it for a moment rather than spin.
        self._log.warning(
            "accepting paused", key=(self.name, code), listener=self.name, error=name,
            pause_seconds=PAUSE_SECONDS,
        )  # fmt: skip
        self._pause()

    def _refuse_pending(self) -> tuple[int, bool]:
        """At the descriptor limit: close the spare, accept and close
        pending connections with the descriptor it freed, take the spare
        back. Returns (connections refused, whether the socket was left
        with nothing this could not refuse)."""
        if self._spare is None:
            return 0, False
        os.close(self._spare)
        self._spare = None
        payload = b"" if self._refusal is None else self._refusal()
        refused = 0
        drained = True
        try:
            while refused < REFUSE_BATCH:
                try:
                    conn, _ = self._sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionAbortedError:
                    continue
                except OSError:
                    drained = False  # the freed descriptor went elsewhere
                    break
                with conn, contextlib.suppress(OSError):
                    if payload:
                        conn.send(payload, socket.MSG_DONTWAIT)
                    # What the client already sent is read, so that closing
                    # does not answer it with a reset that could destroy
                    # the refusal before the client reads it.
                    conn.recv(65536, socket.MSG_DONTWAIT)
                refused += 1
        finally:
            self._spare = _reserve()
        return refused, drained and self._spare is not None

    # ------------------------------------------------------------ the log

    def _flush_refusals(self) -> None:
        self._flush = None
        self._write_refusals()

    def _write_refusals(self, *, force: bool = False) -> None:
        if not self._refused:
            return
        event = "connections refused at the file-descriptor limit"
        fields = {"listener": self.name, "refused": self._refused, "error": self._refused_error}
        if force:
            log.warning(event, **fields)
        elif not self._log.warning(event, key=self.name, **fields):
            # Held back: written with the count once the interval is over.
            if self._flush is None:
                self._flush = self._loop.call_later(DEFAULT_INTERVAL + 0.1, self._flush_refusals)
            return
        self._refused = 0
