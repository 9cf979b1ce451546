"""A small HTTP/1.1 server (RFC 9110, RFC 9112) for the JSON API, on httptools.

httptools wraps llhttp, the parser of Node.js that uvicorn uses; this module
is the asyncio side: one `asyncio.Protocol` per connection, persistent
connections, strictly ordered answers to pipelined requests, request bodies
by Content-Length or chunked, `Expect: 100-continue`, limits on the header
section and the body, an idle timer, a deadline for each header section, a
cap on connections per source address, and a graceful stop.

Handlers are `async def handler(request: Request) -> Response`, looked up in
a table of paths, each with the methods it allows. Every error the server
itself answers (400, 404, 405, 408, 413, 415, 417, 431, 500, 503, 505) goes
through one `error_response(status, detail, headers)` hook so that the
application can give them the same problem body (RFC 9457) as its own errors.

Each response is serialized to a single bytes object and handed to the
transport in a single `write()`.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import cast
from urllib.parse import parse_qsl, unquote

import httptools
import msgspec
import structlog

from smsrouter.connectors.acceptor import Acceptor, listening_sockets
from smsrouter.router.log_limits import LimitedLog

log = structlog.get_logger("http")

# Largest header section (request line, fields, trailers excluded) accepted
# before answering 431 (RFC 6585 §5). Precedents: nginx reads a request head
# into large_client_header_buffers, 4 x 8 KiB by default; Node.js allowed
# 80 KiB, 8 KiB and since v14 16 KiB (--max-http-header-size). 64 KiB leaves
# room for long bearer tokens while bounding what one connection can make us
# hold before a handler runs.
MAX_HEAD_BYTES = 64 * 1024
# Idle persistent connections are closed after this many seconds (RFC 9112
# §9.5 lets either side close an idle connection at any time); nginx's
# keepalive_timeout and aiohttp's keepalive_timeout default to 75 s.
KEEPALIVE_TIMEOUT = 75.0
# After an error that leaves unread input (a malformed request, a body over
# the limit), the server closes its sending side and keeps reading for up to
# this long before closing: closing with unread data would make the kernel
# send a reset that can destroy the error response before the client reads
# it (RFC 9112 §9.6, "lingering close"; nginx's lingering_timeout is 5 s).
LINGER_TIMEOUT = 5.0
# Pipelined requests parked behind the one being handled (RFC 9112 §9.3.2)
# before the connection stops reading from its socket.
MAX_PARKED = 16
# How long stop() lets running handlers finish by default.
STOP_TIMEOUT = 10.0
# Seconds a connection may take to send a request's whole header section,
# counted from the connection's opening and, on a kept-alive connection,
# from the first byte of the next request (or the end of the answer before
# it, if that came later); then it is answered 408 and closed (CONTRACT §11,
# slowloris). nginx divides the same way: keepalive_timeout for the wait
# between requests, client_header_timeout (60 s) for reading a header.
HEADER_TIMEOUT = 10.0
# Open connections from one source address; one over it is answered 503
# and closed (CONTRACT §11).
MAX_CONNECTIONS_PER_IP = 256
# How long a connection refused for its address's cap reads (and discards)
# what its client had already sent before it closes: enough for the 503 to
# be read, short enough that a flood of refused connections holds few
# descriptors.
REFUSED_LINGER = 1.0
# Retry-After of the 503 answered to a connection refused for the cap or at
# the file-descriptor limit.
RETRY_AFTER_REFUSED = 1

Handler = Callable[["Request"], Awaitable["Response"]]
#: (status, detail, extra headers) -> the response for an error the server
#: answers itself.
ErrorResponder = Callable[[int, str, "Mapping[str, str] | None"], "Response"]

_STATUS_LINES: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("ascii") for s in HTTPStatus
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# httptools names the method in bytes; the usual ones decoded once.
_METHODS = {
    m.encode("ascii"): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
}
_CONTENT_TYPES: dict[str, bytes] = {}
# Accepted content codings of request bodies (RFC 9110 §8.4.1), the ones
# aiohttp decoded on its own, with the zlib window bits for each.
_CODINGS = {
    b"gzip": 16 + zlib.MAX_WBITS,
    b"x-gzip": 16 + zlib.MAX_WBITS,
    b"deflate": zlib.MAX_WBITS,
}


def reason(status: int) -> str:
    """The reason phrase of a status code (RFC 9110 §15)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _DateCache:
    """The Date field (RFC 9110 §6.6.1: an origin server with a clock MUST
    send it in 2xx-4xx responses), formatted once per second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = 0
        self.value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = formatdate(now, usegmt=True).encode("ascii")
        return self.value


_date = _DateCache()


class Request:
    """One parsed request. Header names are matched case-insensitively
    (RFC 9110 §5.1); a field sent several times reads as one value joined
    with ", " (RFC 9110 §5.3)."""

    __slots__ = (
        "_fields",
        "_headers",
        "body",
        "keep_alive",
        "match_info",
        "method",
        "path",
        "peer",
        "query_string",
        "response",
        "version",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str,
        version: str,
        fields: dict[bytes, bytes],
        body: bytes,
        peer: str | None,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.version = version
        self._fields = fields
        self._headers: dict[str, str] | None = None
        self.body = body
        self.peer = peer
        self.keep_alive = keep_alive
        self.match_info: dict[str, str] = {}
        # Set when the server answers the request itself (a parse error
        # parked behind pipelined requests, say) instead of a handler.
        self.response: Response | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        """One field by its (lower-case) name, without building `headers`."""
        value = self._fields.get(name.encode("ascii"))
        return default if value is None else value.decode("latin-1")

    @property
    def headers(self) -> dict[str, str]:
        """All fields, names in lower case."""
        if self._headers is None:
            self._headers = {
                k.decode("latin-1"): v.decode("latin-1") for k, v in self._fields.items()
            }
        return self._headers

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (the last of a repeated name wins)."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True))


class Response:
    """Status, body bytes, content type and extra header fields."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


def problem_response(
    status: int, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The default error body: an RFC 9457 problem with the generic type
    "about:blank", whose title is the status phrase (RFC 9457 §4.2.1)."""
    body = {"type": "about:blank", "title": reason(status), "status": status, "detail": detail}
    return Response(
        status, msgspec.json.encode(body), content_type="application/problem+json", headers=headers
    )


def _serialize(response: Response, *, keep_alive: bool, http10: bool, head: bool) -> bytes:
    """Status line, fields and body as one bytes object (RFC 9112 §4, §6)."""
    status = response.status
    line = _STATUS_LINES.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} {reason(status)}\r\n".encode("ascii")
    content_type = _CONTENT_TYPES.get(response.content_type)
    if content_type is None:
        content_type = _CONTENT_TYPES[response.content_type] = response.content_type.encode(
            "latin-1"
        )
    body = response.body
    if status == 204:
        # RFC 9110 §8.6 and §15.3.5: no Content-Length and no content in a
        # 204 (the operator API's DELETE answers).
        head_bytes = b"%sDate: %s\r\n" % (line, _date.get())
        body = b""
    else:
        head_bytes = b"%sContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\n" % (
            line,
            content_type,
            len(body),
            _date.get(),
        )
    if response.headers:
        for name, value in response.headers.items():
            # Field values come from code, never from a request; a CR or LF
            # would still split the response (RFC 9110 §5.5), so refuse it.
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} holds a line break")
            head_bytes += f"{name}: {value}\r\n".encode("latin-1")
    if not keep_alive:
        # RFC 9112 §9.6: a server that is going to close says so.
        head_bytes += b"Connection: close\r\n"
    elif http10:
        # An HTTP/1.0 client that asked to keep the connection is told it
        # was kept (RFC 9112 Appendix C.2.2).
        head_bytes += b"Connection: keep-alive\r\n"
    # A response to HEAD carries the fields of the GET response, no content
    # (RFC 9110 §9.3.2).
    return head_bytes + b"\r\n" if head else head_bytes + b"\r\n" + body


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing with this answer."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


class _Route:
    __slots__ = ("allow", "methods", "names", "path", "segments")

    def __init__(self, path: str, methods: Mapping[str, Handler]) -> None:
        self.path = path
        self.methods: dict[str, Handler] = {m.upper(): h for m, h in methods.items()}
        # A GET resource answers HEAD too (RFC 9110 §9.3.2), as aiohttp's add_get did.
        if "GET" in self.methods and "HEAD" not in self.methods:
            self.methods["HEAD"] = self.methods["GET"]
        self.allow = ", ".join(sorted(self.methods))
        self.segments = path.split("/")
        self.names = {
            i: s[1:-1] for i, s in enumerate(self.segments) if s.startswith("{") and s.endswith("}")
        }

    def match(self, path: str) -> dict[str, str] | None:
        """`{name}` matches one non-empty path segment."""
        parts = path.split("/")
        if len(parts) != len(self.segments):
            return None
        for i, (want, got) in enumerate(zip(self.segments, parts, strict=True)):
            if want != got and (i not in self.names or not got):
                return None
        return {name: parts[i] for i, name in self.names.items()}


class HttpServer:
    """Serve `routes` ({path: {method: handler}}) over HTTP/1.1.

    A path is either exact ("/v1/messages") or holds `{name}` segments
    ("/v1/messages/{id}"), whose values reach the handler in
    `request.match_info`.
    """

    def __init__(
        self,
        routes: Mapping[str, Mapping[str, Handler]],
        *,
        max_body_bytes: int = 1 << 20,
        error_response: ErrorResponder = problem_response,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        header_timeout: float = HEADER_TIMEOUT,
        max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP,
        body_limits: Mapping[str, int] | None = None,
    ) -> None:
        self._exact: dict[str, _Route] = {}
        self._patterns: list[_Route] = []
        for path, methods in routes.items():
            route = _Route(path, methods)
            if route.names:
                self._patterns.append(route)
            else:
                self._exact[path] = route
        self.max_body_bytes = max_body_bytes
        # Routes (as written in `routes`) allowed a body larger than
        # max_body_bytes, e.g. a bulk upload; every other keeps the default.
        self.body_limits: dict[str, int] = dict(body_limits or {})
        self.error_response = error_response
        self.keepalive_timeout = keepalive_timeout
        self.header_timeout = header_timeout
        self.max_connections_per_ip = max_connections_per_ip
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acceptors: list[Acceptor] = []
        self._port = 0
        self._connections: set[HttpConnection] = set()
        # Open connections per source address (those refused not counted).
        self._per_address: dict[str, int] = {}
        self._limited = LimitedLog(log)
        self._stopping = False
        self._all_gone: asyncio.Future[None] | None = None

    # ----------------------------------------------------------- lifecycle

    async def start(self, host: str, port: int, *, backlog: int = 1024) -> None:
        self._loop = loop = asyncio.get_running_loop()
        # Our own accept loop rather than loop.create_server: see
        # connectors/acceptor.py (the file-descriptor limit, CONTRACT §11).
        sockets = await listening_sockets(host, port, backlog=backlog)
        self._acceptors = [
            Acceptor(
                sock,
                lambda: HttpConnection(self, loop),
                loop=loop,
                name="http",
                refusal=self._refusal_at_fd_limit,
            )
            for sock in sockets
        ]
        self._port = self._acceptors[0].port
        for acceptor in self._acceptors:
            acceptor.start()

    @property
    def port(self) -> int:
        """The bound port (the one picked by the system when asked for 0),
        0 once stopped."""
        return self._port

    @property
    def refused_at_fd_limit(self) -> int:
        """Connections refused at the file-descriptor limit since the start."""
        return sum(a.refused_total for a in self._acceptors)

    def connections_from(self, address: str) -> int:
        """Open connections counted for this source address."""
        return self._per_address.get(address, 0)

    def stop_listening(self) -> None:
        """Accept no new connections; the open ones are served on."""
        for acceptor in self._acceptors:
            acceptor.close()

    def _refusal_at_fd_limit(self) -> bytes:
        response = self.error_response(
            503,
            "the server is at its connection limit; retry later",
            {"Retry-After": str(RETRY_AFTER_REFUSED)},
        )
        return _serialize(response, keep_alive=False, http10=False, head=False)

    # ----------------------------------------------------------- per-address cap

    def _admit(self, address: str) -> bool:
        """Count a new connection from `address`; False if over the cap."""
        count = self._per_address.get(address, 0)
        if count >= self.max_connections_per_ip:
            self._limited.warning(
                "connection over the per-address cap refused", key=address, address=address,
                cap=self.max_connections_per_ip,
            )  # fmt: skip
            return False
        self._per_address[address] = count + 1
        return True

    def _release(self, address: str) -> None:
        count = self._per_address.get(address, 0) - 1
        if count > 0:
            self._per_address[address] = count
        else:
            self._per_address.pop(address, None)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop listening, close idle connections, let running handlers
        finish (each connection closes after its last answer) for up to
        `timeout` seconds, then close what is left."""
        self.stop_listening()
        self._stopping = True
        for conn in list(self._connections):
            conn.shut_down()
        if self._connections:
            assert self._loop is not None
            self._all_gone = self._loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_gone), timeout)
            except TimeoutError:
                log.warning("http handlers still running at stop", count=len(self._connections))
        tasks = [t for conn in list(self._connections) if (t := conn.abort()) is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for acceptor in self._acceptors:
            await acceptor.wait_closed()
        self._acceptors = []
        self._port = 0

    def _forget(self, conn: HttpConnection) -> None:
        self._connections.discard(conn)
        if not self._connections and self._all_gone is not None and not self._all_gone.done():
            self._all_gone.set_result(None)

    # ----------------------------------------------------------- routing

    def body_limit(self, path: str) -> int:
        """The largest body a request for `path` may carry."""
        limits = self.body_limits
        if not limits:
            return self.max_body_bytes
        limit = limits.get(path)
        if limit is not None:
            return limit
        for pattern in self._patterns:
            if pattern.path in limits and pattern.match(path) is not None:
                return limits[pattern.path]
        return self.max_body_bytes

    def resolve(self, request: Request) -> Handler | Response:
        """The handler for the request, or the 404/405 answer."""
        route = self._exact.get(request.path)
        if route is None:
            for pattern in self._patterns:
                found = pattern.match(request.path)
                if found is not None:
                    request.match_info = found
                    route = pattern
                    break
            else:
                return self.error_response(404, "404: Not Found", None)
        handler = route.methods.get(request.method)
        if handler is None:
            # RFC 9110 §15.5.6: a 405 lists the allowed methods in Allow.
            return self.error_response(405, "405: Method Not Allowed", {"Allow": route.allow})
        return handler


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order."""

    def __init__(self, server: HttpServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self._max_body = server.max_body_bytes
        self._header_timeout = server.header_timeout
        self._parser = httptools.HttpRequestParser(self)
        # What a parser callback refused the request with (see _reject).
        self._rejected: _Reject | None = None
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None
        self._counted = False  # counted in the server's per-address table
        # The request being parsed.
        self._parsing = False
        self._in_head = False
        self._url = b""
        self._fields: dict[bytes, bytes] = {}
        self._head_size = 0
        self._head_raw = 0
        self._chunk_open = False
        self._fed_body = False
        self._trailer_raw = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._current: Request | None = None
        # A request asking for Upgrade, held until its content is read.
        self._held: Request | None = None
        self._held_length = 0
        self._tunnel = False
        self._continue_pending = False
        # Requests answered one at a time, in order (RFC 9112 §9.3.2).
        self._active: Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._parked: deque[Request] = deque()
        self._parked_bytes = 0
        # Reading is paused while too much is parked, while the transport's
        # write buffer is full, and after an error until lingering starts.
        self._reading = True
        self._write_paused = False
        self._broken = False  # parsing stopped after an error: input is discarded
        self._lingering = False
        self._closing = False  # close after the last answer (server stopping, client EOF)
        self._closed = False
        self._last_io = 0.0
        # When the header section being awaited must be complete; None
        # while none is awaited (see HEADER_TIMEOUT).
        self._head_deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport, hence no isinstance.
        self._transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else None
        server = self._server
        server._connections.add(self)
        if self._peer is not None:
            if not server._admit(self._peer):
                self._refuse()
                return
            self._counted = True
        self._last_io = now = self._loop.time()
        self._head_deadline = now + self._header_timeout
        self._timer = self._loop.call_at(
            now + min(self._header_timeout, server.keepalive_timeout), self._on_timer
        )
        if server._stopping:
            self.shut_down()

    def _refuse(self) -> None:
        """Over its address's cap: 503, then closed (CONTRACT §11)."""
        assert self._transport is not None
        cap = self._server.max_connections_per_ip
        response = self._server.error_response(
            503,
            f"over {cap} open connections from this address; close some or retry later",
            {"Retry-After": str(RETRY_AFTER_REFUSED)},
        )
        self._transport.write(_serialize(response, keep_alive=False, http10=False, head=False))
        self._broken = True
        self._finish(REFUSED_LINGER)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._parked.clear()
        if self._counted:
            self._counted = False
            assert self._peer is not None
            self._server._release(self._peer)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # A handler still running is left to finish (the message intake must
        # not stop half-way); its answer is dropped.
        if self._task is None:
            self._server._forget(self)

    def eof_received(self) -> bool:
        # The client closed its sending side: answer what was received,
        # then close (RFC 9112 §9.6 lets a client half-close after a request).
        if self._active is None and not self._parked:
            return False
        self._closing = True
        return True

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return  # lingering: read and discard
        self._last_io = self._loop.time()
        if self._held is not None:
            data = self._held_content(data)
            if not data:
                return
        # In a chunk with no content yet: the last chunk's trailer section.
        trailing = self._parsing and self._chunk_open and not self._fed_body
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._not_upgraded(data[upgrade.args[0] :])
            return
        except httptools.HttpParserError as exc:
            reject, self._rejected = self._rejected, None
            if reject is not None:
                self._fail(reject.status, reject.detail, reject.headers)
            else:
                self._fail(400, f"malformed request: {exc}")
            return
        if self._parsing:
            self._unfinished(len(data), trailing)

    def _unfinished(self, size: int, trailing: bool) -> None:
        """A read that left a request unfinished. httptools holds a field
        until it ends, so a field that never ends is bounded here by the
        raw bytes read: in the header section, and in the trailer section
        (RFC 9112 §7.1.2) of a chunked body."""
        if self._in_head:
            self._head_raw += size
            if self._head_raw > MAX_HEAD_BYTES:
                self._fail(431, f"the header section is over {MAX_HEAD_BYTES} bytes")
        elif trailing and self._chunk_open and not self._fed_body:
            self._trailer_raw += size
            if self._trailer_raw > MAX_HEAD_BYTES:
                self._fail(431, f"the trailer section is over {MAX_HEAD_BYTES} bytes")

    def _not_upgraded(self, rest: bytes) -> None:
        """llhttp stopped after a request asking for Upgrade (or CONNECT),
        leaving what follows its header section to another protocol.

        No upgrade is offered: RFC 9110 §7.8 lets a server ignore Upgrade
        and answer over HTTP/1.1, so the request's content (if any) and
        whatever follows are read as HTTP/1.1 again. A CONNECT tunnel is not
        offered either; its request is answered and the connection closed.
        """
        if self._tunnel:
            self._broken = True
            return
        if self._held is not None:
            rest = self._held_content(rest)
        if rest:
            self.data_received(rest)

    def _held_content(self, data: bytes) -> bytes:
        """Collect the Content-Length bytes of a held Upgrade request;
        returns what follows them."""
        request = self._held
        assert request is not None
        need = self._held_length - len(request.body)
        request.body += data[:need]
        if len(request.body) < self._held_length:
            return b""
        self._held = None
        self._enqueue(request)
        return data[need:]

    # ----------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        if self._head_deadline is None:
            # A request after the first: its header section is timed from
            # its first byte (data_received has just set _last_io).
            self._head_deadline = self._last_io + self._header_timeout
        self._held_length = 0
        self._chunk_open = False
        self._trailer_raw = 0
        self._parsing = True
        self._in_head = True
        self._url = b""
        self._fields = {}
        self._head_size = 0
        self._head_raw = 0
        self._body = []
        self._body_size = 0

    def _reject(
        self, status: int, detail: str, headers: Mapping[str, str] | None = None
    ) -> _Reject:
        """The exception a parser callback raises to stop parsing with this
        answer, kept for data_received: httptools hands it back only as the
        __context__ of its own callback error, and Python replaces that
        context when another exception is in hand as it raises (compiled
        coroutines can leave one in hand while suspended)."""
        self._rejected = _Reject(status, detail, headers)
        return self._rejected

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD_BYTES:
            raise self._reject(431, f"the header section is over {MAX_HEAD_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer field (RFC 9110 §6.5): not merged into the header section
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD_BYTES:
            raise self._reject(431, f"the header section is over {MAX_HEAD_BYTES} bytes")
        key = name.lower()
        fields = self._fields
        if key in fields:
            if key == b"host":
                # RFC 9112 §3.2: more than one Host field line is a 400.
                raise self._reject(400, "more than one Host field")
            fields[key] += b", " + value
        else:
            fields[key] = value

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_deadline = None
        parser = self._parser
        fields = self._fields
        url = self._url
        method = parser.get_method()
        if url[:1] == b"/":
            raw_path, _, raw_query = url.partition(b"?")
        elif url == b"*" or method == b"CONNECT":
            # asterisk-form and authority-form (RFC 9112 §3.2.3, §3.2.4):
            # no resource of ours has such a name, routing answers 404.
            raw_path, raw_query = url, b""
        else:
            # absolute-form (RFC 9112 §3.2.2).
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise self._reject(400, "malformed request target") from None
            raw_path, raw_query = parsed.path or b"/", parsed.query or b""
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
            if "\x00" in path:
                # No name of ours holds one, and PostgreSQL text cannot.
                raise self._reject(400, "the request target holds a NUL character (%00)")
        if b"%00" in raw_query:
            raise self._reject(400, "the query holds a NUL character (%00)")
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            # RFC 9110 §15.6.6: the major version is not supported.
            raise self._reject(505, f"HTTP/{version} is not supported; use HTTP/1.1")
        if b"host" not in fields and version == "1.1":
            # RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request
            # without Host.
            raise self._reject(400, "the request has no Host field")
        request = Request(
            _METHODS.get(method) or method.decode("ascii"),
            path,
            raw_query.decode("latin-1"),
            version,
            fields,
            b"",
            self._peer,
            parser.should_keep_alive(),
        )
        self._current = request
        if self._server.body_limits:
            self._max_body = self._server.body_limit(path)
        length = fields.get(b"content-length")
        if length is not None and int(length) > self._max_body:
            raise self._reject(413, f"Maximum request body size {self._max_body} exceeded.")
        if method == b"CONNECT":
            self._tunnel = True
            request.keep_alive = False
        elif b"upgrade" in fields and parser.should_upgrade():
            # llhttp will not read this request's content (see _not_upgraded).
            if b"transfer-encoding" in fields:
                raise self._reject(400, "Upgrade with chunked content is not supported")
            self._held_length = int(length or 0)
        expect = fields.get(b"expect")
        if expect is not None and version == "1.1":
            # RFC 9110 §10.1.1: 100-continue is the only expectation defined;
            # a server MUST ignore it in an HTTP/1.0 request.
            if expect.lower() != b"100-continue":
                raise self._reject(417, f"unsupported expectation: {expect.decode('latin-1')}")
            if (length is None or length == b"0") and b"transfer-encoding" not in fields:
                pass  # no content to wait for
            elif self._active is None and not self._parked:
                self._write(_CONTINUE)
            else:
                # Interim responses keep the order of final ones: sent when
                # the requests before this one have been answered.
                self._continue_pending = True

    def on_chunk_header(self) -> None:
        self._chunk_open = True
        self._fed_body = False

    def on_chunk_complete(self) -> None:
        self._chunk_open = False

    def on_body(self, body: bytes) -> None:
        self._continue_pending = False  # RFC 9110 §10.1.1: no 100 once content arrived
        self._fed_body = True
        self._body_size += len(body)
        if self._body_size > self._max_body:
            raise self._reject(413, f"Maximum request body size {self._max_body} exceeded.")
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = self._current
        assert request is not None
        self._current = None
        self._parsing = False
        self._continue_pending = False
        if self._held_length:
            self._held = request
            return
        if self._body:
            body = b"".join(self._body)
            self._body = []
            coding = request._fields.get(b"content-encoding")
            if coding is not None and coding.lower() != b"identity":
                body = self._decode_body(body, coding.lower())
            request.body = body
        self._enqueue(request)

    def _decode_body(self, body: bytes, coding: bytes) -> bytes:
        wbits = _CODINGS.get(coding)
        if wbits is None:
            # RFC 9110 §15.5.16 / §12.5.3: 415 names the codings accepted.
            raise self._reject(
                415,
                f"unsupported content coding {coding.decode('latin-1')!r}",
                {"Accept-Encoding": "gzip, deflate"},
            )
        decoder = zlib.decompressobj(wbits)
        try:
            decoded = decoder.decompress(body, self._max_body + 1)
        except zlib.error:
            if coding != b"deflate":
                raise self._reject(400, "the body does not match its Content-Encoding") from None
            # "deflate" sent as a raw stream without the zlib wrapper, as
            # some clients do (RFC 9110 §8.4.1.2 notes the confusion).
            decoder = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                decoded = decoder.decompress(body, self._max_body + 1)
            except zlib.error:
                raise self._reject(400, "the body does not match its Content-Encoding") from None
        if len(decoded) > self._max_body:
            # The limit applies to what the handler gets: a small compressed
            # body may expand a thousandfold.
            raise self._reject(413, f"Maximum request body size {self._max_body} exceeded.")
        if not decoder.eof:
            raise self._reject(400, "the body ends before its compressed stream does")
        return decoded

    # ----------------------------------------------------------- answering

    def _enqueue(self, request: Request) -> None:
        if self._active is None:
            self._dispatch(request)
            return
        self._parked.append(request)
        self._parked_bytes += len(request.body)
        self._update_reading()

    def _dispatch(self, request: Request) -> None:
        self._active = request
        response = request.response
        if response is None:
            target = self._server.resolve(request)
            if isinstance(target, Response):
                response = target
            else:
                self._task = self._loop.create_task(self._run(request, target))
                return
        self._respond(request, response)

    async def _run(self, request: Request, handler: Handler) -> None:
        try:
            try:
                response = await handler(request)
            except Exception:
                log.exception("unhandled error", path=request.path)
                response = self._server.error_response(
                    500, "the request could not be completed", None
                )
        finally:
            self._task = None
            if self._closed:
                self._server._forget(self)
        if not self._closed:
            self._respond(request, response)

    def _respond(self, request: Request, response: Response) -> None:
        self._active = None
        transport = self._transport
        if self._closed or transport is None:
            return
        last = not request.keep_alive or (self._closing and not self._parked)
        try:
            data = _serialize(
                response,
                keep_alive=not last,
                http10=request.version == "1.0",
                head=request.method == "HEAD",
            )
        except Exception:
            log.exception("response could not be serialized", path=request.path)
            data = _serialize(
                self._server.error_response(500, "the request could not be completed", None),
                keep_alive=not last,
                http10=request.version == "1.0",
                head=request.method == "HEAD",
            )
        transport.write(data)
        self._last_io = self._loop.time()
        if last:
            self._finish()
            return
        if self._in_head:
            # Part of the next header section came while this request was
            # handled (reading may have been paused meanwhile): its deadline
            # runs from this answer.
            self._head_deadline = self._last_io + self._header_timeout
        if self._parked:
            following = self._parked.popleft()
            self._parked_bytes -= len(following.body)
            self._update_reading()
            self._dispatch(following)
        elif self._continue_pending and self._current is not None:
            self._continue_pending = False
            transport.write(_CONTINUE)

    def _fail(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        """Stop parsing and answer `status` after the requests before it."""
        self._broken = True
        self._parsing = False
        self._in_head = False
        self._current = None
        self._continue_pending = False
        self._update_reading()
        request = Request("GET", "", "", "1.1", {}, b"", self._peer, False)
        request.response = self._server.error_response(status, detail, headers)
        self._enqueue(request)

    def _finish(self, linger: float = LINGER_TIMEOUT) -> None:
        """Close after the last answer; linger if unread input may remain."""
        transport = self._transport
        if transport is None or self._closed:
            return
        if self._broken and not self._closing and transport.can_write_eof():
            self._lingering = True
            self._update_reading()
            transport.write_eof()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_later(linger, transport.close)
        else:
            transport.close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        if self._broken:
            want = self._lingering
        else:
            want = (
                not self._write_paused
                and not self._closing
                and len(self._parked) < MAX_PARKED
                and self._parked_bytes < self._max_body
            )
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    # ----------------------------------------------------------- timers and stop

    def _on_timer(self) -> None:
        """One timer per connection for both of its deadlines: the header
        deadline and the idle (keep-alive) one.

        The timer is never set further ahead than header_timeout, so a
        header deadline set after it (a request begun; it lies
        header_timeout ahead) is never passed unseen, and a request does
        not have to move the timer: it fires at most once per
        header_timeout on a busy connection."""
        self._timer = None
        if self._closed or self._transport is None:
            return
        loop = self._loop
        now = loop.time()
        due = now + self._header_timeout
        if self._active is None and not self._parked:
            # Waiting for the client (handlers are not timed here).
            head = self._head_deadline
            if head is not None and not self._broken:
                if now >= head:
                    # CONTRACT §11 (slowloris). Half a header section is
                    # answered 408 (RFC 9110 §15.5.9); a connection that sent
                    # nothing is closed without a word, as an idle one is.
                    if self._parsing:
                        self._fail(408, "the header section was not completed in time")
                    else:
                        self._transport.close()
                    return
                due = min(due, head)
            idle_end = self._last_io + self._server.keepalive_timeout
            if now >= idle_end:
                if (self._parsing or self._held is not None) and not self._broken:
                    # Half a request and then silence (RFC 9110 §15.5.9).
                    self._fail(408, "the request was not completed in time")
                else:
                    self._transport.close()
                return
            due = min(due, idle_end)
        self._timer = loop.call_at(due, self._on_timer)

    def shut_down(self) -> None:
        """The server is stopping: close now if idle, else after the
        requests already received have been answered."""
        self._closing = True
        if self._transport is None or self._closed:
            return
        if self._active is None and not self._parked:
            self._transport.close()
        else:
            self._update_reading()

    def abort(self) -> asyncio.Task[None] | None:
        """Stop time is up: drop the connection and cancel its handler."""
        task = self._task
        if task is not None:
            task.cancel()
        if self._transport is not None and not self._closed:
            self._transport.abort()
        return task
