"""The callback HTTP client (connectors/http_client.py) against real servers
on 127.0.0.1.

Most servers here are raw `asyncio.start_server` scripts, so that a test
decides every byte of an answer and sees every connection: how many were
accepted, how many were open at once, and which ones the client hung up.
Every test runs on both event loops (`both_loops`): plain asyncio and
uvloop, which the daemon runs on; their transports differ in the details
the client meets. Every wait is bounded by WAIT; none is expected to come
close.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web

from smsrouter.connectors.http_client import HttpClient, HttpClientError, TargetRefused
from smsrouter.router.netaddr import is_private_address
from tests.http_apps import serving as serving_app
from tests.tools import require_tool

WAIT = 5.0
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def both_loops(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test once in a fresh loop of each kind (a plain test
    that pytest-asyncio leaves alone, parametrized by `loop`)."""
    signature = inspect.signature(test)

    def run(loop: str, **kwargs: Any) -> None:
        try:
            with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
                runner.run(test(**kwargs))
        finally:
            # Finalizers of what a failed test left behind run here, not in
            # the middle of pytest's report.
            gc.collect()

    params = [inspect.Parameter("loop", inspect.Parameter.KEYWORD_ONLY)]
    params += [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()
    ]
    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    run.__name__ = test.__name__
    run.__qualname__ = test.__qualname__
    run.__doc__ = test.__doc__
    return pytest.mark.parametrize("loop", list(LOOPS))(run)


@dataclass
class Request:
    line: str
    headers: dict[str, str]
    body: bytes
    conn: int  # index of the connection it came on, in order of acceptance


@dataclass
class Conn:
    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    # Set when the client closed (or reset) its end; the server never closes
    # a connection before the client unless the answer script says so.
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)


# answer(request, conn) -> keep serving this connection?
Answer = Callable[[Request, Conn], Awaitable[bool]]


async def read_request(reader: asyncio.StreamReader, conn: int) -> Request | None:
    """One request, or None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    line, *fields = head.decode("latin-1").split("\r\n")[:-2]
    headers = {}
    for f in fields:
        name, _, value = f.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(line, headers, body, conn)


class RawServer:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self.conns: list[Conn] = []
        self.open_now = 0
        self.max_open = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def accepted(self) -> int:
        return len(self.conns)

    def url(self, path: str = "/dlr", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        for c in self.conns:
            c.writer.close()
        self._server.close()
        await asyncio.wait_for(self._server.wait_closed(), WAIT)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(len(self.conns), reader, writer)
        self.conns.append(conn)
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            while True:
                request = await read_request(reader, conn.index)
                if request is None:
                    conn.hung_up.set()
                    return
                self.requests.append(request)
                if not await self.answer(request, conn):
                    return
        except ConnectionError:
            conn.hung_up.set()
        finally:
            self.open_now -= 1
            writer.close()


@contextlib.asynccontextmanager
async def serving(answer: Answer) -> AsyncIterator[RawServer]:
    server = RawServer(answer)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def client(**options: object) -> AsyncIterator[HttpClient]:
    c = HttpClient(**{"timeout": WAIT, **options})  # type: ignore[arg-type]
    try:
        yield c
    finally:
        await c.close()


def reply(data: bytes, keep: bool = True) -> Answer:
    async def answer(request: Request, conn: Conn) -> bool:
        conn.writer.write(data)
        await conn.writer.drain()
        return keep

    return answer


async def eventually(check: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if check():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def hung_up(conn: Conn) -> None:
    try:
        await asyncio.wait_for(conn.hung_up.wait(), WAIT)
    except TimeoutError:
        pytest.fail(f"the client never closed connection {conn.index}")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- keep-alive


@both_loops
async def test_sequential_posts_share_one_kept_alive_connection() -> None:
    async with serving(reply(OK)) as server, client() as c:
        for i in range(20):
            status = await c.post(server.url("/dlr?n=1"), b'{"i":%d}' % i, [("X-Test", f"v{i}")])
            assert status == 200
        assert server.accepted == 1
        assert c.open_connections == 1
    assert [r.body for r in server.requests] == [b'{"i":%d}' % i for i in range(20)]
    first = server.requests[0]
    assert first.line == "POST /dlr?n=1 HTTP/1.1"
    assert first.headers["host"] == f"127.0.0.1:{server.port}"
    assert first.headers["user-agent"] == "smsrouter"
    assert first.headers["content-length"] == str(len(first.body))
    assert first.headers["x-test"] == "v0"


@both_loops
async def test_aiohttp_server_sees_one_connection_and_the_exact_request() -> None:
    seen: list[tuple[str, str, bytes, str | None, tuple[str, int]]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        peer = request.transport.get_extra_info("peername")  # type: ignore[union-attr]
        seen.append(
            (request.path_qs, request.headers["User-Agent"], body, request.content_type, peer)
        )
        return web.Response(status=202, text="accepted")

    app = web.Application()
    app.router.add_post("/hooks/dlr", hook)
    async with serving_app(app) as base, client(user_agent="smsrouter-test") as c:
        url = f"{base}/hooks/dlr?a=b%20c"
        headers = [("Content-Type", "application/json")]
        statuses = [await c.post(url, b'{"id":"%d"}' % i, headers) for i in range(5)]
    assert statuses == [202] * 5
    assert [s[2] for s in seen] == [b'{"id":"%d"}' % i for i in range(5)]
    assert {(s[0], s[1], s[3]) for s in seen} == {
        ("/hooks/dlr?a=b%20c", "smsrouter-test", "application/json")
    }
    assert len({s[4] for s in seen}) == 1  # one client port: one connection


def _answer_once(release: asyncio.Event) -> Answer:
    """A server answer that waits for `release`, then says 200."""

    async def hold(request: Request, conn: Conn) -> bool:
        await release.wait()
        conn.writer.write(OK)
        await conn.writer.drain()
        return True

    return hold


@both_loops
async def test_concurrent_posts_never_open_more_than_max_per_origin() -> None:
    release = asyncio.Event()
    hold = _answer_once(release)

    async with serving(hold) as server, client(max_per_origin=3) as c:
        posts = [asyncio.create_task(c.post(server.url(), b"%d" % i, [])) for i in range(12)]
        await eventually(lambda: len(server.requests) >= 3, "three held requests")
        # Room for the client to open more, were it going to.
        for _ in range(20):
            await asyncio.sleep(0)
        assert server.accepted == 3 and c.open_connections == 3
        release.set()
        statuses = await asyncio.wait_for(asyncio.gather(*posts), WAIT)
    assert statuses == [200] * 12
    assert server.max_open == 3 and server.accepted == 3
    assert sorted(r.body for r in server.requests) == sorted(b"%d" % i for i in range(12))


@both_loops
async def test_max_connections_bounds_all_origins_together() -> None:
    release = asyncio.Event()
    hold = _answer_once(release)

    async with (
        serving(hold) as a,
        serving(hold) as b,
        client(max_connections=2, max_per_origin=2) as c,
    ):
        posts = [asyncio.create_task(c.post(server.url(), b"x", [])) for server in (a, b) * 4]
        await eventually(lambda: len(a.requests) + len(b.requests) >= 2, "two held requests")
        for _ in range(20):
            await asyncio.sleep(0)
        assert a.accepted + b.accepted == 2
        release.set()
        statuses = await asyncio.wait_for(asyncio.gather(*posts), WAIT)
    assert statuses == [200] * 8
    assert len(a.requests) == len(b.requests) == 4
    assert a.max_open + b.max_open <= 2


@both_loops
async def test_an_idle_connection_of_another_origin_makes_room() -> None:
    async with serving(reply(OK)) as a, serving(reply(OK)) as b, client(max_connections=1) as c:
        assert await c.post(a.url(), b"1", []) == 200
        # The only slot is taken by a's idle connection: it is closed, not waited for.
        assert await c.post(b.url(), b"2", []) == 200
        await hung_up(a.conns[0])
        assert c.open_connections == 1


# -- framing of the answer


@both_loops
async def test_chunked_response_is_read_to_its_end_and_the_connection_kept() -> None:
    async def chunked(request: Request, conn: Conn) -> bool:
        w = conn.writer
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await w.drain()
        w.write(b"6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
        await w.drain()
        return True

    async with serving(chunked) as server, client() as c:
        assert await c.post(server.url(), b"1", []) == 200
        assert await c.post(server.url(), b"2", []) == 200
        assert server.accepted == 1


@both_loops
async def test_body_up_to_the_limit_keeps_the_connection() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024
    async with serving(reply(answer)) as server, client(max_response_bytes=1024) as c:
        assert await c.post(server.url(), b"1", []) == 200
        assert await c.post(server.url(), b"2", []) == 200
        assert server.accepted == 1


@both_loops
async def test_oversized_body_is_not_read_and_its_connection_not_reused() -> None:
    big = 4 * 1024 * 1024

    async def flood(request: Request, conn: Conn) -> bool:
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big)
        conn.writer.write(b"x" * big)
        with contextlib.suppress(ConnectionError):
            await conn.writer.drain()
        return True

    async with serving(flood) as server, client(max_response_bytes=1024) as c:
        assert await c.post(server.url(), b"1", []) == 200
        await hung_up(server.conns[0])
        assert c.open_connections == 0
        assert await c.post(server.url(), b"2", []) == 200
        assert server.accepted == 2


@both_loops
async def test_body_read_until_close() -> None:
    # No Content-Length, not chunked: the body ends with the connection
    # (RFC 9112 §6.3, item 8), which therefore cannot be reused.
    async with serving(reply(b"HTTP/1.1 201 Created\r\n\r\nsome body", keep=False)) as server:
        async with client() as c:
            assert await c.post(server.url(), b"1", []) == 201
            assert await c.post(server.url(), b"2", []) == 201
        assert server.accepted == 2


@both_loops
async def test_response_cut_short_is_an_error() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten.."
    async with serving(reply(answer, keep=False)) as server, client() as c:
        with pytest.raises(HttpClientError, match="lost before a complete response"):
            await c.post(server.url(), b"1", [])
        assert c.open_connections == 0


@both_loops
async def test_interim_1xx_responses_are_skipped() -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok"
    )
    async with serving(reply(answer)) as server, client() as c:
        assert await c.post(server.url(), b"1", []) == 202
        assert await c.post(server.url(), b"2", []) == 202
        assert server.accepted == 1


# -- connections that end


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0"],
)
@both_loops
async def test_a_connection_the_answer_ends_is_closed_and_not_reused(answer: bytes) -> None:
    # The server keeps its end open: the client must close it (RFC 9112 §9.6).
    async with serving(reply(answer)) as server, client() as c:
        assert await c.post(server.url(), b"1", []) == 200
        await hung_up(server.conns[0])
        assert await c.post(server.url(), b"2", []) == 200
        assert server.accepted == 2


@both_loops
async def test_http_1_0_keep_alive_is_reused() -> None:
    answer = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    async with serving(reply(answer)) as server, client() as c:
        for i in range(3):
            assert await c.post(server.url(), b"%d" % i, []) == 200
        assert server.accepted == 1


@both_loops
async def test_idle_connection_closed_by_the_server_is_dropped() -> None:
    async with serving(reply(OK, keep=False)) as server, client() as c:
        assert await c.post(server.url(), b"1", []) == 200
        await eventually(lambda: c.open_connections == 0, "the client to drop the connection")
        assert await c.post(server.url(), b"2", []) == 200
        assert server.accepted == 2


@both_loops
async def test_kept_alive_connection_closed_as_the_request_goes_out_is_retried_once() -> None:
    # The keep-alive race: the server closes an idle connection just as the
    # next request arrives on it, without answering.
    async def first_only(request: Request, conn: Conn) -> bool:
        if request.body == b"2" and conn.index == 0:
            return False
        conn.writer.write(OK)
        await conn.writer.drain()
        return True

    async with serving(first_only) as server, client() as c:
        assert await c.post(server.url(), b"1", []) == 200
        assert await c.post(server.url(), b"2", []) == 200
    assert [(r.conn, r.body) for r in server.requests] == [(0, b"1"), (0, b"2"), (1, b"2")]


@both_loops
async def test_new_connection_lost_before_the_answer_is_not_retried() -> None:
    async def drop(request: Request, conn: Conn) -> bool:
        return False

    async with serving(drop) as server, client() as c:
        with pytest.raises(HttpClientError, match="lost before"):
            await c.post(server.url(), b"1", [])
        assert len(server.requests) == 1 and c.open_connections == 0


@both_loops
async def test_bytes_on_an_idle_connection_drop_it() -> None:
    async def chatty(request: Request, conn: Conn) -> bool:
        conn.writer.write(OK)
        await conn.writer.drain()
        if conn.index == 0:
            await asyncio.sleep(0.01)
            conn.writer.write(OK)  # answers nothing the client asked
            await conn.writer.drain()
        return True

    async with serving(chatty) as server, client() as c:
        assert await c.post(server.url(), b"1", []) == 200
        await hung_up(server.conns[0])
        assert await c.post(server.url(), b"2", []) == 200
        assert server.accepted == 2


# -- failures


@both_loops
async def test_server_that_never_answers_times_out_and_the_socket_is_closed() -> None:
    async def silent(request: Request, conn: Conn) -> bool:
        return True

    async with serving(silent) as server, client(timeout=0.2) as c:
        with pytest.raises(HttpClientError, match=r"^timed out"):
            await asyncio.wait_for(c.post(server.url(), b"1", []), WAIT)
        await hung_up(server.conns[0])
        assert c.open_connections == 0


@both_loops
async def test_callers_waiting_for_a_connection_time_out_too() -> None:
    async def silent(request: Request, conn: Conn) -> bool:
        return True

    async with serving(silent) as server, client(timeout=0.2, max_per_origin=1) as c:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(c.post(server.url(), b"x", []) for _ in range(3)), return_exceptions=True
            ),
            WAIT,
        )
        assert all(isinstance(r, HttpClientError) and "timed out" in str(r) for r in results)
        # A waiter handed the slot of the first one (timed out just before
        # it) may open a connection before its own time is up; the bound
        # holds all the same.
        assert server.max_open == 1
        for conn in server.conns:
            await hung_up(conn)
        assert c.open_connections == 0


@both_loops
async def test_cancelled_caller_does_not_leave_its_connection_behind() -> None:
    async def silent(request: Request, conn: Conn) -> bool:
        return True

    async with serving(silent) as server, client() as c:
        post = asyncio.create_task(c.post(server.url(), b"1", []))
        await eventually(lambda: len(server.requests) == 1, "the request")
        post.cancel()
        with pytest.raises(asyncio.CancelledError):
            await post
        await hung_up(server.conns[0])
        assert c.open_connections == 0


@both_loops
async def test_connection_refused() -> None:
    async with client() as c:
        with pytest.raises(HttpClientError, match=r"^cannot connect to .*: Connection refused$"):
            await c.post(f"http://127.0.0.1:{closed_port()}/dlr", b"1", [])
        assert c.open_connections == 0


@both_loops
async def test_garbage_instead_of_a_response_is_an_error() -> None:
    async with serving(reply(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")) as server, client() as c:
        with pytest.raises(HttpClientError, match="malformed response"):
            await c.post(server.url(), b"1", [])
        await hung_up(server.conns[0])
        assert c.open_connections == 0


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/dlr", "http:///dlr", "http://example.com:99999/", "example.com/dlr"],
)
@both_loops
async def test_bad_url(url: str) -> None:
    async with client() as c:
        # A refusal: no later attempt can do better.
        with pytest.raises(TargetRefused, match=r"^bad URL"):
            await c.post(url, b"1", [])


@both_loops
async def test_header_with_a_line_break_is_refused() -> None:
    async with serving(reply(OK)) as server, client() as c:
        with pytest.raises(ValueError, match="CR or LF"):
            await c.post(server.url(), b"1", [("X-A", "b\r\nX-Injected: 1")])
        assert server.accepted == 0


@both_loops
async def test_private_addresses_refused_by_literal_and_by_name() -> None:
    async with serving(reply(OK)) as server:
        async with client(deny_private_networks=True) as c:
            with pytest.raises(TargetRefused, match=r"^127\.0\.0\.1 is a private network address$"):
                await c.post(server.url(host="127.0.0.1"), b"1", [])
            with pytest.raises(TargetRefused, match=r"^::1 is a private network address$"):
                await c.post(server.url(host="[::1]"), b"1", [])
            # A loopback name is refused before any lookup.
            with pytest.raises(TargetRefused, match=r"^localhost is a private network address$"):
                await c.post(server.url(host="localhost"), b"1", [])
            assert c.open_connections == 0
        assert server.accepted == 0
        # The same name is reachable when private networks are allowed.
        async with client() as c:
            assert await c.post(server.url(host="localhost"), b"1", []) == 200
        assert server.accepted == 1


# Spellings that getaddrinfo reads as 127.0.0.1 (glibc inet_aton), or that
# name it: each must be refused before connecting (CONTRACT §11).
LOOPBACK_SPELLINGS = [
    "2130706433",
    "127.1",
    "0x7f.1",
    "0177.0.0.1",
    "0x7f000001",
    "127.0.0.1.",
    "localhost.",
    "LOCALHOST",
    "foo.localhost",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[0:0:0:0:0:0:0:1]",
    "0.0.0.0",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
@both_loops
async def test_every_spelling_of_loopback_is_refused_before_connecting(host: str) -> None:
    async with serving(reply(OK)) as server:
        async with client(deny_private_networks=True) as c:
            with pytest.raises(TargetRefused, match=r"is a private network address$"):
                await c.post(server.url(host=host), b"1", [])
            assert c.open_connections == 0
        assert server.accepted == 0
        if host in ("127.1", "0x7f.1", "2130706433"):
            # Not a test artefact: allowed, the same spelling reaches the server.
            async with client() as c:
                assert await c.post(server.url(host=host), b"1", []) == 200
            assert server.accepted == 1


@both_loops
async def test_a_name_that_resolves_only_to_private_addresses_is_refused() -> None:
    # This host's own name: /etc/hosts maps it to a loopback or private
    # address on the machines the suite runs on.
    name = socket.gethostname()
    infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    if not all(is_private_address(str(info[4][0])) for info in infos):
        pytest.skip(f"{name} resolves to a public address here")
    async with serving(reply(OK)) as server:
        async with client(deny_private_networks=True) as c:
            with pytest.raises(TargetRefused, match=r"resolves only to private network addresses"):
                await c.post(server.url(host=name), b"1", [])
            assert c.open_connections == 0
        assert server.accepted == 0


@both_loops
async def test_close_closes_idle_connections_and_refuses_new_posts() -> None:
    async with serving(reply(OK)) as server:
        c = HttpClient(timeout=WAIT)
        assert await c.post(server.url(), b"1", []) == 200
        await c.close()
        await hung_up(server.conns[0])
        assert c.open_connections == 0
        with pytest.raises(HttpClientError, match="closed"):
            await c.post(server.url(), b"2", [])


# -- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost: (cert, key)."""
    openssl = require_tool("openssl", "openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@contextlib.asynccontextmanager
async def tls_server(cert: Path, key: Path) -> AsyncIterator[int]:
    """An aiohttp server answering 204 over TLS; yields its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/dlr", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@both_loops
async def test_https_is_verified_against_the_trusted_certificates(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with tls_server(*certificate) as port:
        url = f"https://localhost:{port}/dlr"
        async with client() as c:
            with pytest.raises(HttpClientError, match="certificate verify failed"):
                await c.post(url, b"1", [])
        # OpenSSL reads SSL_CERT_FILE when the client makes its context.
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        async with client() as c:
            assert [await c.post(url, b"%d" % i, []) for i in range(3)] == [204] * 3
            assert c.open_connections == 1
