"""A small HTTP/1.1 client for POSTing callbacks (DLR webhooks, MO messages).

One request is one future awaited by the caller's coroutine: the request is
built as one bytes object and written with one `transport.write`, the answer
is parsed by httptools (llhttp) in the protocol's callbacks, and one
`loop.call_later` handle bounds the whole exchange (connect, write, answer).
Nothing but the status, the framing of the body and whether the connection
may be kept is taken from a response; the body is counted, never kept.

Connections are kept alive per origin (RFC 9112 §9.3) in a bounded pool:
at most `max_per_origin` open to one origin and `max_connections` in all;
callers beyond that wait, first come first served.

With `trust_env`, egress follows HTTP_PROXY / HTTPS_PROXY / NO_PROXY: an
http:// URL is asked of the proxy in absolute form (RFC 9112 §3.2.2), an
https:// one goes through a CONNECT tunnel (RFC 9110 §9.3.6) with TLS to the
origin inside it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import ipaddress
import os
import socket
import ssl
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from urllib.request import getproxies_environment

import httptools

from smsrouter.router.netaddr import is_private_address, url_refusal

__all__ = ["HttpAnswer", "HttpClient", "HttpClientError", "TargetRefused", "is_private_address"]

# Parsed URLs kept; callbacks go to a few URLs per account, so this only
# bounds memory against a stream of distinct ones.
MAX_CACHED_URLS = 4096
# Pools (one per origin) kept before the empty ones are dropped.
MAX_POOLS = 1024

# Characters left as they are in a request-target (RFC 3986 §3.3, §3.4);
# anything else (spaces, controls, non-ASCII) is percent-encoded, so a URL
# can never break the request line.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _why(exc: OSError) -> str:
    """The plain reason of a failed connect ("Connection refused")."""
    if isinstance(exc, socket.gaierror | ssl.SSLError) or not exc.errno or exc.errno < 0:
        return exc.strerror or str(exc)
    return os.strerror(exc.errno)


class HttpClientError(Exception):
    """A request that got no usable answer: bad URL, refused or failed
    connection, timeout, malformed response, private address refused."""


class TargetRefused(HttpClientError):
    """A URL that no attempt can reach: malformed, or (with
    deny_private_networks) naming or resolving to a private address.
    Retrying cannot help, so callers give it up at once (CONTRACT §11)."""


class _Stale(Exception):
    """A kept-alive connection was lost before any byte of the answer."""


class _TooLong(Exception):
    """The response body went past max_response_bytes."""


class _Unexpected(Exception):
    """Bytes of a response nobody asked for."""


# Whether NO_PROXY exempts a host; in urllib.request but not in its stubs.
_NO_PROXY_CHECK = "proxy_bypass_environment"
_no_proxy: Callable[[str, dict[str, str]], bool] = getattr(urllib.request, _NO_PROXY_CHECK)


def _proxy_authorization(proxy: str) -> str:
    """The Proxy-Authorization header line (RFC 9110 §11.7.1, Basic) of
    credentials in the proxy's URL, or "" without them."""
    parts = urlsplit(proxy)
    if parts.username is None:
        return ""
    secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return f"Proxy-Authorization: Basic {base64.b64encode(secret.encode()).decode()}\r\n"


def _proxy_address(proxy: str) -> tuple[str, int]:
    """Host and port of a proxy URL (port 80 unless it says)."""
    try:
        parts = urlsplit(proxy)
        port = parts.port or 80
    except ValueError:
        raise HttpClientError(f"bad proxy URL {proxy!r}") from None
    if not parts.hostname:
        raise HttpClientError(f"bad proxy URL {proxy!r}: no host")
    return parts.hostname, port


class _Pool:
    """The connections of one origin (scheme, host, port)."""

    __slots__ = ("forward", "host", "idle", "label", "open", "port", "proxy", "tls")

    def __init__(self, host: str, port: int, tls: bool, proxy: str | None, forward: bool) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        # The proxy its connections go through (None: straight to the
        # origin), and whether requests are forwarded by it in absolute
        # form rather than tunnelled with CONNECT.
        self.proxy = proxy
        self.forward = forward
        self.label = f"{'https' if tls else 'http'}://{host}:{port}"
        # Kept-alive connections, most recently used last (LIFO reuse keeps
        # the fewest connections warm; the others time out at the server).
        self.idle: collections.deque[_Connection] = collections.deque()
        self.open = 0  # connected or connecting, idle or busy


class _Target:
    """A parsed URL: its pool and the start of every request to it."""

    __slots__ = ("head", "pool")

    def __init__(self, pool: _Pool, head: bytes) -> None:
        self.pool = pool
        self.head = head


class _Call:
    """One request in flight: what its timer must undo when it fires."""

    __slots__ = ("client", "conn", "connecting", "expired", "fut", "retry_after")

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        self.retry_after: str | None = None  # the answer's Retry-After
        self.conn: _Connection | None = None
        self.connecting: asyncio.Task[_Connection] | None = None
        self.expired = False
        # The future the caller awaits now: a free connection, then the answer.
        self.fut: asyncio.Future[Any] | None = None

    def expire(self) -> None:
        self.expired = True
        if self.connecting is not None:
            self.connecting.cancel()
            return
        fut = self.fut
        if fut is None or fut.done():
            return
        conn = self.conn
        if conn is not None and conn.waiter is fut:
            conn.fail(self.client.timeout_error())
        else:
            fut.set_exception(self.client.timeout_error())


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to an origin, one exchange at a time."""

    __slots__ = (
        "body_bytes",
        "call",
        "client",
        "closed",
        "complete",
        "counted",
        "framed",
        "headers_done",
        "keep_alive",
        "parser",
        "pool",
        "received",
        "retry_after",
        "reused",
        "status",
        "te_seen",
        "too_long",
        "transport",
        "waiter",
    )

    def __init__(self, client: HttpClient, pool: _Pool) -> None:
        self.client = client
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.call: _Call | None = None
        self.counted = True  # holds one of the pool's and the client's slots
        self.closed = False
        self.reused = False  # has answered before: the keep-alive race applies
        self.received = False  # a byte of the current answer arrived
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.body_bytes = 0
        self.framed = False  # Content-Length or chunked: the end is known
        self.te_seen = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.too_long = False
        self.retry_after: bytes | None = None

    # -- requests

    def send(self, call: _Call, request: bytes) -> asyncio.Future[int]:
        if self.closed:
            if self.reused:
                raise _Stale
            raise HttpClientError(f"connection to {self.pool.label} lost before the request")
        fut: asyncio.Future[int] = self.client.loop.create_future()
        self.waiter = fut
        self.call = call
        self.received = False
        call.conn = self
        call.fut = fut
        self.transport.write(request)  # type: ignore[union-attr]
        return fut

    def fail(self, exc: BaseException) -> None:
        """Fail the request in flight and drop the connection."""
        fut = self.waiter
        self.waiter = None
        self.call = None
        if fut is not None and not fut.done():
            fut.set_exception(exc)
        self.abort()

    def abort(self) -> None:
        # abort, not close: close waits for the write buffer to drain, which
        # a peer that stopped reading would hold open for ever.
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.client._discard(self)

    def close(self) -> None:
        """Close after a complete answer that ends the connection."""
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() == 0:
            self.closed = True
            transport.close()
            self.client._discard(self)
        else:
            self.abort()

    def _finish(self, status: int, reusable: bool | None) -> None:
        """Answer the request: then keep the connection (True), close it
        (False) or abort it (None: unread bytes are left on it)."""
        fut = self.waiter
        self.waiter = None
        self.complete = False
        call = self.call
        self.call = None
        if call is not None and self.retry_after is not None:
            call.retry_after = self.retry_after.decode("latin-1")
        if fut is not None and not fut.done():
            fut.set_result(status)
        if reusable is None:
            self.abort()
        elif reusable and not self.closed:
            self.client._release(self)
        else:
            self.close()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A request is one write and its answer is awaited: Nagle's
            # algorithm would only hold it back. uvloop sets this already.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client._conns.add(self)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            # Bytes on an idle connection answer nothing we sent (RFC 9112
            # §9.3.2 has no unsolicited responses): the stream is unusable.
            self.abort()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.too_long:
                # The status is known; the rest of the body is not read, so
                # the connection cannot carry another request.
                self._finish(self.parser.get_status_code(), None)
            elif self.complete:
                # A whole answer, then bytes that answer nothing.
                self._finish(self.status, None)
            else:
                self.fail(HttpClientError(f"malformed response from {self.pool.label}: {exc}"))
            return
        except httptools.HttpParserUpgrade:
            self.fail(
                HttpClientError(f"malformed response from {self.pool.label}: unrequested upgrade")
            )
            return
        if self.complete:
            self._finish(self.status, self.keep_alive)

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost settles the request

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client._discard(self)
        fut = self.waiter
        if fut is None or fut.done():
            return
        self.waiter = None
        if self.headers_done and not self.framed:
            # A body without Content-Length or chunked coding ends when the
            # server closes the connection (RFC 9112 §6.3, item 8).
            fut.set_result(self.status)
        elif not self.received and self.reused:
            fut.set_exception(_Stale())
        else:
            reason = f": {exc}" if exc is not None else ""
            fut.set_exception(
                HttpClientError(
                    f"connection to {self.pool.label} lost before a complete response{reason}"
                )
            )

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Unexpected
        self._reset()

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only the framing matters here (RFC 9112 §6.3); Connection and the
        # HTTP version are judged by llhttp's should_keep_alive.
        n = len(name)
        if n == 14 and name.lower() == b"content-length":
            if not self.te_seen:
                self.framed = True
        elif n == 17 and name.lower() == b"transfer-encoding":
            # A response whose final coding is not chunked is read until
            # close (RFC 9112 §6.3, item 4).
            self.te_seen = True
            self.framed = value.rstrip().lower().endswith(b"chunked")
        elif n == 11 and name.lower() == b"retry-after":
            # Kept for the caller: a receiver's 429/503 may say when to come
            # back (RFC 9110 §10.2.3).
            self.retry_after = value.strip()

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:
            self.status = status
            self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.client.max_response_bytes:
            self.too_long = True
            raise _TooLong

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise _Unexpected  # no upgrade was asked for
            # Interim responses (RFC 9110 §15.2) precede the final one.
            return
        self.status = status
        # Asked now: llhttp forgets the message's flags once this returns.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


class _Tunnel(asyncio.Protocol):
    """A proxy connection until the CONNECT answer's head has arrived."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answer: asyncio.Future[bytes] = loop.create_future()
        self.head = bytearray()

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.answer.set_result(bytes(self.head))
        elif len(self.head) > 16384:
            self.answer.set_exception(HttpClientError("proxy answer head too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(HttpClientError("proxy closed the tunnel"))


class HttpAnswer:
    """A response's status, and its Retry-After header if it had one."""

    __slots__ = ("retry_after", "status")

    def __init__(self, status: int, retry_after: str | None) -> None:
        self.status = status
        self.retry_after = retry_after


class HttpClient:
    """POSTs over kept-alive HTTP/1.1 connections; create it in the event loop."""

    def __init__(
        self,
        *,
        timeout: float,
        max_connections: int = 256,
        max_per_origin: int = 64,
        user_agent: str = "smsrouter",
        max_response_bytes: int = 64 * 1024,
        deny_private_networks: bool = False,
        trust_env: bool = False,
    ) -> None:
        if timeout <= 0 or max_connections < 1 or max_per_origin < 1 or max_response_bytes < 0:
            raise ValueError("timeout and connection limits must be positive")
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.max_connections = max_connections
        self.max_per_origin = max_per_origin
        self.max_response_bytes = max_response_bytes
        self.deny_private_networks = deny_private_networks
        self._user_agent = user_agent
        self._targets: dict[str, _Target] = {}
        self._pools: dict[tuple[bool, str, int], _Pool] = {}
        self._conns: set[_Connection] = set()
        self._waiters: collections.deque[tuple[_Pool, asyncio.Future[_Connection | None]]] = (
            collections.deque()
        )
        self._total = 0
        self._closed = False
        self._ssl: ssl.SSLContext | None = None
        # HTTPS_PROXY / HTTP_PROXY / NO_PROXY, read once: egress through a
        # proxy, as curl and aiohttp's trust_env read them.
        self._proxies: dict[str, str] = getproxies_environment() if trust_env else {}

    @property
    def open_connections(self) -> int:
        """Connections open or being opened, idle or busy."""
        return self._total

    def timeout_error(self) -> HttpClientError:
        return HttpClientError(f"timed out: no complete response within {self.timeout:g} s")

    async def post(self, url: str, body: bytes, headers: Sequence[tuple[str, str]]) -> int:
        """POST `body` to `url` and return the response status (any status;
        redirects are not followed). Raises HttpClientError."""
        return (await self.post_answer(url, body, headers)).status

    async def post_answer(
        self, url: str, body: bytes, headers: Sequence[tuple[str, str]]
    ) -> HttpAnswer:
        """As `post`, with the answer's Retry-After header too."""
        target = self._targets.get(url)
        if target is None:
            target = self._target(url)
        if self._closed:
            raise HttpClientError("client is closed")
        fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
        if fields.count("\n") != len(headers) or fields.count("\r") != len(headers):
            raise ValueError("header names and values must not hold CR or LF")
        request = b"%sContent-Length: %d\r\n%s\r\n%s" % (
            target.head,
            len(body),
            fields.encode("latin-1"),
            body,
        )
        pool = target.pool
        call = _Call(self)
        # One timer for connect, write and answer together (RFC 9112 §9.5).
        timer = self.loop.call_later(self.timeout, call.expire)
        try:
            conn = pool.idle.pop() if pool.idle else await self._acquire(call, pool)
            try:
                return HttpAnswer(await conn.send(call, request), call.retry_after)
            except _Stale:
                # The server closed the kept-alive connection as the request
                # went out (RFC 9112 §9.3.1, §9.6). POST is not idempotent,
                # but receivers dedupe on id + status (CONTRACT §3), so one
                # retry on a new connection is safe; it runs after the except
                # clause, which never awaits.
                pass
            conn = await self._acquire(call, pool, fresh=True)
            try:
                return HttpAnswer(await conn.send(call, request), call.retry_after)
            except _Stale:
                raise HttpClientError(
                    f"connection to {pool.label} lost before a response"
                ) from None
        except BaseException:
            # Cancelled (or failed) with the request out: its answer, if it
            # ever comes, would be read by nobody, so the connection goes.
            held = call.conn
            if held is not None and held.waiter is not None and held.waiter is call.fut:
                held.abort()
            raise
        finally:
            timer.cancel()

    async def close(self) -> None:
        """Close every connection; requests in flight fail."""
        self._closed = True
        error = HttpClientError("client is closed")
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(error)
        for conn in list(self._conns):
            conn.fail(error)
        # Let the transports call connection_lost.
        await asyncio.sleep(0)

    # -- URLs

    def _target(self, url: str) -> _Target:
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            host = parts.hostname
            port = parts.port
        except ValueError as exc:
            raise TargetRefused(f"bad URL {url!r}: {exc}") from None
        if scheme not in ("http", "https"):
            raise TargetRefused(f"bad URL {url!r}: scheme must be http or https")
        if not host:
            raise TargetRefused(f"bad URL {url!r}: no host")
        if self.deny_private_networks:
            # Before any name is looked up: `127.1` and `0x7f.1` are
            # 127.0.0.1 to getaddrinfo. Both the host connected to
            # (urlsplit's) and the one the API checked (yarl's) are judged,
            # so no difference between the two parsers lets one through.
            if is_private_address(host):
                raise TargetRefused(f"{host} is a private network address")
            refusal = url_refusal(url)
            if refusal is not None:
                raise TargetRefused(f"bad URL {url!r}: {refusal}")
        tls = scheme == "https"
        default_port = 443 if tls else 80
        if port is None:
            port = default_port
        literal = _is_ip_literal(host)
        if not literal:
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError:
                raise TargetRefused(f"bad URL {url!r}: host is not a valid name") from None
        authority = f"[{host}]" if ":" in host else host
        if port != default_port:
            authority = f"{authority}:{port}"
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            path = f"{path}?{quote(parts.query, safe=_QUERY_SAFE)}"
        proxy = self._proxy_for(host, tls)
        # A plain-http target is forwarded by the proxy (absolute form): the
        # way every forward proxy takes http, where CONNECT is often allowed
        # to port 443 only. With deny_private_networks it is tunnelled
        # instead, to the address the router resolved and judged, so that the
        # proxy never resolves the name to a private address for us.
        forward = proxy is not None and not tls and not self.deny_private_networks
        request_target = f"http://{authority}{path}" if forward else path
        # Request line and Host (RFC 9112 §3, §3.2); the default is a
        # persistent connection, so no Connection header (§9.3).
        head = f"POST {request_target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {self._user_agent}\r\n"
        if forward and proxy is not None:
            head += _proxy_authorization(proxy)
        if parts.username is not None:
            # Credentials in the URL are sent as Basic auth (RFC 7617).
            secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            head += f"Authorization: Basic {base64.b64encode(secret.encode()).decode()}\r\n"
        key = (tls, host, port)
        pool = self._pools.get(key)
        if pool is None:
            if len(self._pools) >= MAX_POOLS:
                self._prune_pools()
            pool = self._pools[key] = _Pool(host, port, tls, proxy, forward)
        target = _Target(pool, head.encode("latin-1"))
        if len(self._targets) >= MAX_CACHED_URLS:
            del self._targets[next(iter(self._targets))]
        self._targets[url] = target
        return target

    def _prune_pools(self) -> None:
        for key, pool in list(self._pools.items()):
            if pool.open == 0:
                del self._pools[key]
        # A cached URL must not point to a pool that is no longer counted.
        self._targets.clear()

    # -- the pool

    async def _acquire(self, call: _Call, pool: _Pool, fresh: bool = False) -> _Connection:
        """A connection of `pool`: an idle one unless `fresh`, else a new one
        once a slot is free (waiting in line for it)."""
        if call.expired:
            raise self.timeout_error()
        if not fresh and pool.idle:
            return pool.idle.pop()
        if not self._reserve(pool):
            if self._closed:
                raise HttpClientError("client is closed")
            fut: asyncio.Future[_Connection | None] = self.loop.create_future()
            self._waiters.append((pool, fut))
            call.fut = fut
            try:
                given = await fut
            except BaseException:
                # Cancelled after being served: give back what it was given.
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._give_back(pool, fut.result())
                raise
            finally:
                call.fut = None
            if call.expired:
                # The timer fired between being served and running again.
                self._give_back(pool, given)
                raise self.timeout_error()
            if given is not None:
                return given
        return await self._connect(call, pool)

    def _give_back(self, pool: _Pool, given: _Connection | None) -> None:
        if given is None:
            self._unreserve(pool)
        else:
            self._release(given)

    async def _connect(self, call: _Call, pool: _Pool) -> _Connection:
        """Open a connection on a slot reserved in `pool`."""
        conn = _Connection(self, pool)
        # A task of its own, so that the request's timer can cancel the
        # connect (and the name lookup) without cancelling the caller.
        task = self.loop.create_task(self._open(conn))
        call.connecting = task
        try:
            await task
        except BaseException as exc:
            if not task.done():
                task.cancel()
                task.add_done_callback(lambda _: conn.abort())
            if task.done() and not task.cancelled() and task.exception() is None:
                conn.abort()  # connected just as the caller gave up
            elif conn.transport is None:
                # Never connected: the slot is still the caller's to free,
                # and the connection must not free it again if it ever does.
                conn.counted = False
                self._unreserve(pool)
            else:
                conn.abort()
            if isinstance(exc, asyncio.CancelledError):
                current = asyncio.current_task()
                if call.expired and (current is None or not current.cancelling()):
                    raise self.timeout_error() from None
                raise
            if isinstance(exc, OSError):
                raise HttpClientError(f"cannot connect to {pool.label}: {_why(exc)}") from None
            raise
        finally:
            call.connecting = None
        if self._closed:
            conn.abort()
            raise HttpClientError("client is closed")
        if call.expired:
            self._release(conn)
            raise self.timeout_error()
        return conn

    async def _open(self, conn: _Connection) -> _Connection:
        pool = conn.pool
        if pool.forward and pool.proxy is not None:
            # The proxy resolves and connects: in a network that reaches out
            # only through it, the router may not resolve outside names at all.
            return await self._open_forward(conn, pool.proxy)
        host = pool.host
        family = 0
        if self.deny_private_networks and not _is_ip_literal(host):
            # Resolved here and connected by address, so a name that points
            # inside the network ([webhooks] deny_private_networks) is refused
            # whatever DNS says.
            infos = await self.loop.getaddrinfo(host, pool.port, type=socket.SOCK_STREAM)
            public = [info for info in infos if not is_private_address(str(info[4][0]))]
            if not public:
                raise TargetRefused(f"{host} resolves only to private network addresses")
            family, _, _, _, sockaddr = public[0]
            host = str(sockaddr[0])
        tls: ssl.SSLContext | None = None
        if pool.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        if pool.proxy is not None:
            return await self._open_tunnel(conn, pool.proxy, host, tls)
        await self.loop.create_connection(
            lambda: conn,
            host,
            pool.port,
            ssl=tls,
            server_hostname=pool.host if tls is not None else None,
            family=family,
        )
        return conn

    def _proxy_for(self, host: str, tls: bool) -> str | None:
        """The proxy URL for an origin: HTTPS_PROXY or HTTP_PROXY by its
        scheme, None when unset or when NO_PROXY exempts the host."""
        proxies = self._proxies
        if not proxies:
            return None
        proxy = proxies.get("https" if tls else "http")
        if not proxy or _no_proxy(host, proxies):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"

    async def _open_forward(self, conn: _Connection, proxy: str) -> _Connection:
        """Connect to a forward proxy; the requests on this connection name
        their target in absolute form (RFC 9112 §3.2.2), and the proxy's
        answer is the origin's (or its own 502/504/407)."""
        host, port = _proxy_address(proxy)
        try:
            await self.loop.create_connection(lambda: conn, host, port)
        except OSError as exc:
            raise HttpClientError(
                f"cannot connect to the proxy {host}:{port}: {_why(exc)}"
            ) from None
        return conn

    async def _open_tunnel(
        self, conn: _Connection, proxy: str, host: str, tls: ssl.SSLContext | None
    ) -> _Connection:
        """Connect through an HTTP proxy's CONNECT tunnel (RFC 9110 §9.3.6),
        then TLS to the origin inside it for https. `host` is the address
        already judged under deny_private_networks, so the proxy does not
        resolve a name to a private address for us."""
        pool = conn.pool
        proxy_host, proxy_port = _proxy_address(proxy)
        try:
            transport, tunnel = await self.loop.create_connection(
                lambda: _Tunnel(self.loop), proxy_host, proxy_port
            )
        except OSError as exc:
            raise HttpClientError(
                f"cannot connect to the proxy {proxy_host}:{proxy_port}: {_why(exc)}"
            ) from None
        authority = f"[{host}]:{pool.port}" if ":" in host else f"{host}:{pool.port}"
        request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        request += _proxy_authorization(proxy)
        try:
            transport.write((request + "\r\n").encode("latin-1"))
            line = (await tunnel.answer).split(b"\r\n", 1)[0]
            fields = line.split(b" ", 2)
            if len(fields) < 2 or fields[1] != b"200":
                answer = line.decode("latin-1", "replace")
                raise HttpClientError(f"proxy refused the tunnel to {pool.label}: {answer}")
            if tls is not None:
                upgraded = await self.loop.start_tls(
                    transport, conn, tls, server_hostname=pool.host
                )
                assert upgraded is not None
                transport = upgraded
            else:
                transport.set_protocol(conn)
        except BaseException:
            transport.abort()
            raise
        conn.connection_made(transport)
        return conn

    def _reserve(self, pool: _Pool) -> bool:
        """Count a new connection to `pool` if the bounds allow it."""
        if pool.open >= self.max_per_origin:
            return False
        if self._total >= self.max_connections and not self._evict_idle():
            return False
        pool.open += 1
        self._total += 1
        return True

    def _unreserve(self, pool: _Pool) -> None:
        pool.open -= 1
        self._total -= 1
        if self._waiters:
            self._wake()

    def _evict_idle(self) -> bool:
        """Close an idle connection (of any origin) to free a slot."""
        for pool in self._pools.values():
            if pool.idle:
                conn = pool.idle.popleft()  # the least recently used
                conn.closed = True
                conn.counted = False
                self._conns.discard(conn)
                pool.open -= 1
                self._total -= 1
                if conn.transport is not None:
                    conn.transport.close()
                return True
        return False

    def _release(self, conn: _Connection) -> None:
        """A connection that answered and may carry the next request."""
        if self._closed or conn.closed:
            conn.abort()
            return
        conn.reused = True
        conn.pool.idle.append(conn)
        if self._waiters:
            self._wake()

    def _discard(self, conn: _Connection) -> None:
        """Forget a closed connection and free its slot (once)."""
        if not conn.counted:
            return
        conn.counted = False
        self._conns.discard(conn)
        pool = conn.pool
        if pool.idle:
            with contextlib.suppress(ValueError):  # not idle: it was busy
                pool.idle.remove(conn)
        self._unreserve(pool)

    def _wake(self) -> None:
        """Serve waiters in arrival order: an idle connection of their
        origin, else a slot to connect on; the rest keep waiting. (Serving
        runs no callbacks synchronously, so this never re-enters.)"""
        waiting = self._waiters
        for _ in range(len(waiting)):
            pool, fut = waiting.popleft()
            if fut.done():
                continue
            if pool.idle:
                fut.set_result(pool.idle.pop())
            elif self._reserve(pool):
                fut.set_result(None)
            else:
                waiting.append((pool, fut))
