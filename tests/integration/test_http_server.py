"""The HTTP/1.1 server (connectors/http_server.py) over loopback TCP.

Each scenario starts its own server on 127.0.0.1 port 0 with a few test
handlers and speaks to it with raw `asyncio.open_connection` sockets, so
that every byte on the wire is the test's choice. Every wait is bounded by
`BOUND`; no test asserts how long anything took. The scenarios run once on
asyncio's default loop and once more on uvloop (the daemon's loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import structlog
import uvloop

from smsrouter.connectors.http_server import MAX_HEAD_BYTES, HttpServer, Request, Response

#: Upper bound of any single wait, in seconds.
BOUND = 5.0
LIMIT = 1024  # max_body_bytes of the test server

T = TypeVar("T")


async def bounded(aw: Awaitable[T], timeout: float = BOUND) -> T:
    return await asyncio.wait_for(aw, timeout)


class App:
    """Test handlers; `gate` holds /wait until the test opens it."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.finished: list[str] = []
        self.cancelled = False

    async def hello(self, request: Request) -> Response:
        return Response(200, b"hello", content_type="text/plain")

    async def echo(self, request: Request) -> Response:
        body = {
            "body": request.body.decode(),
            "content_type": request.header("content-type"),
            "query": request.query,
        }
        return Response(200, json.dumps(body).encode())

    async def item(self, request: Request) -> Response:
        return Response(200, json.dumps(request.match_info).encode())

    async def boom(self, request: Request) -> Response:
        raise RuntimeError("handler failure")

    async def wait(self, request: Request) -> Response:
        self.waiting.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.finished.append(request.path)
        return Response(200, b"waited", content_type="text/plain")

    def routes(self) -> dict[str, dict[str, Callable[[Request], Awaitable[Response]]]]:
        return {
            "/hello": {"GET": self.hello},
            "/echo": {"POST": self.echo, "PUT": self.echo},
            "/items/{id}": {"GET": self.item},
            "/boom": {"GET": self.boom},
            "/wait": {"GET": self.wait},
        }


@contextlib.asynccontextmanager
async def serving(app: App | None = None, **options: Any) -> AsyncIterator[tuple[HttpServer, App]]:
    app = app or App()
    server = HttpServer(app.routes(), max_body_bytes=LIMIT, **options)
    await server.start("127.0.0.1", 0)
    try:
        yield server, app
    finally:
        app.gate.set()
        await bounded(server.stop(1.0))


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await bounded(asyncio.open_connection("127.0.0.1", server.port))


class Reply:
    def __init__(self, status_line: str, headers: dict[str, str], body: bytes) -> None:
        self.status_line = status_line
        self.status = int(status_line.split()[1])
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def read_reply(reader: asyncio.StreamReader, *, head: bool = False) -> Reply:
    """One response: status line, fields, then Content-Length bytes."""
    raw = await bounded(reader.readuntil(b"\r\n\r\n"))
    lines = raw.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = 0 if head else int(headers.get("content-length", "0"))
    body = await bounded(reader.readexactly(length)) if length else b""
    return Reply(lines[0], headers, body)


async def at_eof(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection (nothing more was sent)."""
    try:
        rest = await bounded(reader.read())
    except ConnectionResetError:
        return True
    return rest == b""


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n"
    return f"{head}Content-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def assert_problem(reply: Reply, status: int) -> dict[str, Any]:
    assert reply.status == status, (reply.status_line, reply.body)
    assert reply.headers["content-type"] == "application/problem+json"
    problem = reply.json()
    assert problem["status"] == status
    assert problem["type"] and problem["title"] and problem["detail"]
    return problem


# ------------------------------------------------------------------ persistence


async def test_keep_alive_serves_two_requests_on_one_connection() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(get("/hello"))
        first = await read_reply(reader)
        writer.write(post("/echo", b"second"))
        second = await read_reply(reader)
        assert (first.status, first.body) == (200, b"hello")
        assert "connection" not in first.headers
        assert first.headers["content-type"] == "text/plain"
        assert first.headers["date"].endswith(" GMT")
        assert (second.status, second.json()["body"]) == (200, "second")
        writer.close()


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with serving() as (server, app):
        reader, writer = await connect(server)
        # Three requests in one write; the first one's handler is held.
        writer.write(get("/wait") + get("/hello") + post("/echo", b"third"))
        await bounded(app.waiting.wait())
        app.gate.set()
        replies = [await read_reply(reader) for _ in range(3)]
        assert [r.body for r in replies[:2]] == [b"waited", b"hello"]
        assert replies[2].json()["body"] == "third"
        writer.close()


async def test_http10_closes_unless_asked_to_keep_alive() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(b"GET /hello HTTP/1.0\r\n\r\n")
        reply = await read_reply(reader)
        assert reply.status == 200
        assert reply.headers["connection"] == "close"
        assert await at_eof(reader)
        writer.close()

        reader, writer = await connect(server)
        writer.write(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        reply = await read_reply(reader)
        assert reply.headers["connection"] == "keep-alive"
        writer.write(b"GET /hello HTTP/1.0\r\n\r\n")
        assert (await read_reply(reader)).body == b"hello"
        assert await at_eof(reader)
        writer.close()


async def test_connection_close_is_honoured() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        # The request after the one that closes is never answered.
        writer.write(get("/hello", "Connection: close\r\n") + get("/hello"))
        reply = await read_reply(reader)
        assert reply.status == 200
        assert reply.headers["connection"] == "close"
        assert await at_eof(reader)
        writer.close()


async def test_idle_connection_is_closed_after_the_keepalive_timeout() -> None:
    async with serving(keepalive_timeout=0.2) as (server, _):
        reader, writer = await connect(server)
        writer.write(get("/hello"))
        assert (await read_reply(reader)).status == 200
        assert await at_eof(reader)
        writer.close()


# ------------------------------------------------------------------ bodies


async def test_chunked_request_body() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(
            b"POST /echo?a=1&b=two HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await writer.drain()
        writer.write(b"6\r\n, worl\r\n1\r\nd\r\n0\r\n\r\n")
        reply = await read_reply(reader)
        assert reply.status == 200
        assert reply.json() == {
            "body": "hello, world",
            "content_type": "text/plain",
            "query": {"a": "1", "b": "two"},
        }
        writer.close()


async def test_expect_100_continue() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = await bounded(reader.readuntil(b"\r\n\r\n"))
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"body")
        reply = await read_reply(reader)
        assert (reply.status, reply.json()["body"]) == (200, "body")
        writer.close()


async def test_expect_100_continue_behind_a_pipelined_request_comes_after_its_answer() -> None:
    async with serving() as (server, app):
        reader, writer = await connect(server)
        writer.write(
            get("/wait") + b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        await bounded(app.waiting.wait())
        app.gate.set()
        # Interim and final responses keep the order of the requests.
        assert (await read_reply(reader)).body == b"waited"
        interim = await bounded(reader.readuntil(b"\r\n\r\n"))
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"late")
        assert (await read_reply(reader)).json()["body"] == "late"
        writer.close()


async def test_expect_100_continue_over_the_limit_gets_413_instead() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(
            f"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {LIMIT + 1}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        assert_problem(await read_reply(reader), 413)
        assert await at_eof(reader)
        writer.close()


async def test_body_over_the_limit_gets_413_and_the_connection_closes() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(post("/echo", b"x" * (LIMIT + 1)))
        reply = await read_reply(reader)
        problem = assert_problem(reply, 413)
        assert problem["detail"] == f"Maximum request body size {LIMIT} exceeded."
        assert reply.headers["connection"] == "close"
        assert await at_eof(reader)
        writer.close()

        # Chunked: no length up front, refused once the chunks pass the limit.
        reader, writer = await connect(server)
        chunk = b"x" * 600
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"258\r\n" + chunk + b"\r\n") * 2
        )
        assert_problem(await read_reply(reader), 413)
        assert await at_eof(reader)
        writer.close()


async def test_gzip_request_body_is_decoded() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(post("/echo", gzip.compress(b"packed"), "Content-Encoding: gzip\r\n"))
        reply = await read_reply(reader)
        assert (reply.status, reply.json()["body"]) == (200, "packed")
        # A small body that expands past the limit is refused too.
        writer.write(
            post("/echo", gzip.compress(b"x" * (LIMIT * 10)), "Content-Encoding: gzip\r\n")
        )
        assert_problem(await read_reply(reader), 413)
        writer.close()


# ------------------------------------------------------------------ errors


async def test_malformed_request_line_gets_400_and_the_connection_closes() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(b"GET /hello HTTP/1.1 trailing-garbage\r\n\r\n")
        reply = await read_reply(reader)
        assert_problem(reply, 400)
        assert reply.headers["connection"] == "close"
        assert await at_eof(reader)
        writer.close()


async def test_malformed_request_after_a_good_one_is_answered_after_it() -> None:
    async with serving() as (server, app):
        reader, writer = await connect(server)
        writer.write(get("/wait") + b"NOT HTTP AT ALL\r\n\r\n")
        await bounded(app.waiting.wait())
        app.gate.set()
        first = await read_reply(reader)
        assert first.body == b"waited"
        assert "connection" not in first.headers
        assert_problem(await read_reply(reader), 400)
        assert await at_eof(reader)
        writer.close()


async def test_host_is_required_once_in_http11_and_other_versions_get_505() -> None:
    async with serving() as (server, _):
        for raw, status in [
            (b"GET /hello HTTP/1.1\r\n\r\n", 400),
            (b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET /hello HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ]:
            reader, writer = await connect(server)
            writer.write(raw)
            assert_problem(await read_reply(reader), status)
            assert await at_eof(reader)
            writer.close()


async def test_upgrade_is_ignored_and_the_content_read_as_http11() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        upgrade = (
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
        )
        writer.write(get("/hello", upgrade) + post("/echo", b"content", upgrade))
        assert (await read_reply(reader)).body == b"hello"
        reply = await read_reply(reader)
        assert (reply.status, reply.json()["body"]) == (200, "content")
        # Still HTTP/1.1 on the same connection afterwards.
        writer.write(get("/hello"))
        assert (await read_reply(reader)).body == b"hello"
        writer.close()


async def test_header_section_over_the_limit_gets_431() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        filler = "".join(f"X-Filler-{i}: {'v' * 1000}\r\n" for i in range(MAX_HEAD_BYTES // 1000))
        writer.write(get("/hello", filler))
        assert_problem(await read_reply(reader), 431)
        assert await at_eof(reader)
        writer.close()

        # A trailer field that never ends, after a chunked body.
        reader, writer = await connect(server)
        writer.write(post("/echo", b"")[: -len(b"Content-Length: 0\r\n\r\n")])
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: ")
        # Bytes that came in the same read as the last chunk are not
        # counted, and one read may take up to 256 KiB: send more than that.
        for _ in range((256 * 1024 + MAX_HEAD_BYTES) // 8192 + 2):
            writer.write(b"v" * 8192)
            await writer.drain()
        assert_problem(await read_reply(reader), 431)
        writer.close()

        # One field that never ends, sent in pieces.
        reader, writer = await connect(server)
        writer.write(b"GET /hello HTTP/1.1\r\nX-Long: ")
        for _ in range(MAX_HEAD_BYTES // 8192 + 2):
            writer.write(b"v" * 8192)
            await writer.drain()
        assert_problem(await read_reply(reader), 431)
        writer.close()


async def test_unknown_path_404_and_wrong_method_405_with_allow() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(get("/nowhere"))
        assert_problem(await read_reply(reader), 404)
        writer.write(get("/echo"))
        reply = await read_reply(reader)
        assert_problem(reply, 405)
        assert reply.headers["allow"] == "POST, PUT"
        writer.write(post("/hello", b"x"))
        reply = await read_reply(reader)
        assert_problem(reply, 405)
        assert reply.headers["allow"] == "GET, HEAD"
        # Both leave the connection open.
        writer.write(get("/hello"))
        assert (await read_reply(reader)).body == b"hello"
        writer.close()


async def test_handler_error_gets_500_and_the_server_answers_the_next_request() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        with structlog.testing.capture_logs() as logs:
            writer.write(get("/boom"))
            assert_problem(await read_reply(reader), 500)
        assert any(e["event"] == "unhandled error" and e.get("exc_info") for e in logs), logs
        writer.write(get("/hello"))
        assert (await read_reply(reader)).body == b"hello"
        writer.close()


async def test_custom_error_responses_replace_the_default_problem() -> None:
    def errors(status: int, detail: str, headers: Any) -> Response:
        return Response(status, f"custom {status}".encode(), content_type="text/plain")

    async with serving(error_response=errors) as (server, _):
        reader, writer = await connect(server)
        writer.write(get("/nowhere"))
        reply = await read_reply(reader)
        assert (reply.status, reply.body) == (404, b"custom 404")
        writer.close()


# ------------------------------------------------------------------ routing


async def test_pattern_route_head_and_percent_decoding() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(get("/items/a%20b"))
        assert (await read_reply(reader)).json() == {"id": "a b"}
        writer.write(get("/items/"))
        assert_problem(await read_reply(reader), 404)
        writer.write(get("/items/a/b"))
        assert_problem(await read_reply(reader), 404)
        writer.write(b"HEAD /hello HTTP/1.1\r\nHost: test\r\n\r\n")
        reply = await read_reply(reader, head=True)
        assert reply.status == 200 and reply.headers["content-length"] == "5"
        # Nothing followed the head: the next reply starts right away.
        writer.write(get("/hello"))
        assert (await read_reply(reader)).body == b"hello"
        writer.close()


@pytest.mark.parametrize("target", ["/items/a%00b", "/hello?q=a%00", "/hello?a%00=1"])
async def test_a_nul_in_the_request_target_gets_400_and_no_handler_runs(target: str) -> None:
    # No name of ours holds one, and PostgreSQL text cannot store one: a
    # handler would fail on it at the database (a 500).
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(get(target))
        assert "NUL" in assert_problem(await read_reply(reader), 400)["detail"]
        assert await at_eof(reader)
        writer.close()


# ------------------------------------------------------------------ lifecycle


async def test_client_gone_mid_request_leaves_the_handler_running() -> None:
    async with serving() as (server, app):
        reader, writer = await connect(server)
        writer.write(get("/wait"))
        await bounded(app.waiting.wait())
        # Reset the connection (SO_LINGER 0), the way a client that crashed
        # or timed out goes, and give the server time to see it go.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        for _ in range(5):
            await asyncio.sleep(0.02)
        app.gate.set()
        for _ in range(100):
            if app.finished:
                break
            await asyncio.sleep(0.01)
        assert app.finished == ["/wait"]
        assert not app.cancelled
        # And the server serves on.
        reader, writer = await connect(server)
        writer.write(get("/hello"))
        assert (await read_reply(reader)).body == b"hello"
        writer.close()


async def test_stop_closes_idle_connections_and_lets_running_handlers_finish() -> None:
    app = App()
    server = HttpServer(app.routes(), max_body_bytes=LIMIT)
    await server.start("127.0.0.1", 0)
    port = server.port
    idle_reader, idle_writer = await connect(server)
    idle_writer.write(get("/hello"))
    assert (await read_reply(idle_reader)).status == 200
    busy_reader, busy_writer = await connect(server)
    busy_writer.write(get("/wait"))
    await bounded(app.waiting.wait())

    stopping = asyncio.create_task(server.stop(BOUND))
    # The idle keep-alive connection is closed at once, the busy one is not.
    assert await at_eof(idle_reader)
    assert not stopping.done()
    with pytest.raises(OSError):
        await bounded(asyncio.open_connection("127.0.0.1", port))
    app.gate.set()
    reply = await read_reply(busy_reader)
    assert reply.body == b"waited"
    assert reply.headers["connection"] == "close"
    assert await at_eof(busy_reader)
    await bounded(stopping)
    assert not app.cancelled
    idle_writer.close()
    busy_writer.close()


async def test_stop_timeout_cancels_what_is_left() -> None:
    app = App()
    server = HttpServer(app.routes(), max_body_bytes=LIMIT)
    await server.start("127.0.0.1", 0)
    reader, writer = await connect(server)
    writer.write(get("/wait"))
    await bounded(app.waiting.wait())
    await bounded(server.stop(0.05))
    assert app.cancelled
    assert await at_eof(reader)
    writer.close()


# ------------------------------------------------------------------ abusive clients (CONTRACT §11)


async def _slowloris(writer: asyncio.StreamWriter, every: float) -> None:
    """A header line every `every` seconds, never the end of the section."""
    writer.write(b"GET /hello HTTP/1.1\r\nHost: test\r\n")
    for i in range(200):
        await asyncio.sleep(every)
        if writer.is_closing():
            return
        writer.write(f"X-Line-{i}: v\r\n".encode())


async def test_slowloris_is_closed_at_the_header_deadline_while_others_are_served() -> None:
    header_timeout = 0.5
    async with serving(header_timeout=header_timeout) as (server, _):
        loop = asyncio.get_running_loop()
        opened = loop.time()
        slow_reader, slow_writer = await connect(server)
        dribble = asyncio.create_task(_slowloris(slow_writer, 0.1))
        good_reader, good_writer = await connect(server)
        try:
            served = 0
            closed_at = None
            reply_task = asyncio.create_task(read_reply(slow_reader))
            while not reply_task.done():
                good_writer.write(get("/hello"))
                assert (await read_reply(good_reader)).body == b"hello"
                served += 1
                await asyncio.sleep(0.05)
            reply = reply_task.result()
            assert_problem(reply, 408)
            assert reply.headers["connection"] == "close"
            assert await at_eof(slow_reader)
            closed_at = loop.time() - opened
            # Closed by the header deadline, not before it, within a margin.
            assert header_timeout * 0.8 <= closed_at <= header_timeout + 2.0, closed_at
            assert served >= 3
            # The good connection lives on.
            good_writer.write(get("/hello"))
            assert (await read_reply(good_reader)).body == b"hello"
        finally:
            dribble.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dribble
            slow_writer.close()
            good_writer.close()


async def test_silent_connection_is_closed_at_the_header_deadline() -> None:
    async with serving(header_timeout=0.3) as (server, _):
        reader, writer = await connect(server)
        # Nothing was asked: closed without an answer.
        assert await bounded(reader.read(), 0.3 + 2.0) == b""
        writer.close()


async def test_idle_kept_alive_connection_outlives_the_header_deadline() -> None:
    # Between requests the keep-alive timeout governs; the header deadline
    # runs only once the next request has begun.
    async with serving(header_timeout=0.3, keepalive_timeout=5.0) as (server, _):
        reader, writer = await connect(server)
        writer.write(get("/hello"))
        assert (await read_reply(reader)).status == 200
        await asyncio.sleep(0.8)
        writer.write(get("/hello"))
        assert (await read_reply(reader)).body == b"hello"
        writer.close()


async def test_header_begun_behind_a_running_handler_is_timed_from_its_answer() -> None:
    async with serving(header_timeout=0.3) as (server, app):
        reader, writer = await connect(server)
        # The next header section begins while /wait is handled, and the
        # handler outlasts the header deadline counted from that first byte.
        writer.write(get("/wait") + b"GET /hello HTTP/1.1\r\nHost: test\r\n")
        await bounded(app.waiting.wait())
        await asyncio.sleep(0.6)
        app.gate.set()
        assert (await read_reply(reader)).body == b"waited"
        writer.write(b"\r\n")
        assert (await read_reply(reader)).body == b"hello"
        # And the deadline does hold from that answer on.
        writer.write(b"GET /hello HTTP/1.1\r\n")
        assert_problem(await read_reply(reader), 408)
        assert await at_eof(reader)
        writer.close()


async def _eventually(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(BOUND):
        for _ in range(int(BOUND / 0.01)):
            if predicate():
                return
            await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_connections_over_the_per_address_cap_get_503_and_are_closed() -> None:
    async with serving(max_connections_per_ip=2) as (server, _):
        kept = [await connect(server) for _ in range(2)]
        for reader, writer in kept:
            writer.write(get("/hello"))
            assert (await read_reply(reader)).body == b"hello"
        assert server.connections_from("127.0.0.1") == 2

        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                reader, writer = await connect(server)
                writer.write(get("/hello"))
                reply = await read_reply(reader)
                assert_problem(reply, 503)
                assert reply.headers["retry-after"] == "1"
                assert reply.headers["connection"] == "close"
                assert await at_eof(reader)
                writer.close()
        # One line for the three refusals (rate-limited), naming the address.
        refusals = [e for e in logs if e["event"] == "connection over the per-address cap refused"]
        assert len(refusals) == 1 and refusals[0]["address"] == "127.0.0.1", logs
        assert server.connections_from("127.0.0.1") == 2
        # The kept connections are served on.
        for reader, writer in kept:
            writer.write(get("/hello"))
            assert (await read_reply(reader)).body == b"hello"

        # Closing one makes room for another.
        kept[0][1].close()
        await _eventually(lambda: server.connections_from("127.0.0.1") == 1)
        reader, writer = await connect(server)
        writer.write(get("/hello"))
        assert (await read_reply(reader)).body == b"hello"
        assert server.connections_from("127.0.0.1") == 2
        writer.close()
        kept[1][1].close()
        await _eventually(lambda: server.connections_from("127.0.0.1") == 0)


# ------------------------------------------------------------------ under uvloop

SCENARIOS: list[Callable[[], Coroutine[Any, Any, None]]] = [
    test_keep_alive_serves_two_requests_on_one_connection,
    test_pipelined_requests_are_answered_in_order,
    test_http10_closes_unless_asked_to_keep_alive,
    test_connection_close_is_honoured,
    test_chunked_request_body,
    test_expect_100_continue,
    test_body_over_the_limit_gets_413_and_the_connection_closes,
    test_malformed_request_line_gets_400_and_the_connection_closes,
    test_malformed_request_after_a_good_one_is_answered_after_it,
    test_header_section_over_the_limit_gets_431,
    test_upgrade_is_ignored_and_the_content_read_as_http11,
    test_handler_error_gets_500_and_the_server_answers_the_next_request,
    test_client_gone_mid_request_leaves_the_handler_running,
    test_stop_closes_idle_connections_and_lets_running_handlers_finish,
    test_slowloris_is_closed_at_the_header_deadline_while_others_are_served,
    test_header_begun_behind_a_running_handler_is_timed_from_its_answer,
    test_connections_over_the_per_address_cap_get_503_and_are_closed,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__[5:] for s in SCENARIOS])
def test_scenario_on_uvloop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(bounded(scenario(), timeout=4 * BOUND))


async def test_a_204_has_no_content_length_and_the_next_reply_follows_it() -> None:
    # RFC 9110 §8.6: no Content-Length in a 204; a client reads the next
    # response right after its header section.
    async def gone(request: Request) -> Response:
        return Response(204, b"ignored")

    server = HttpServer({"/gone": {"DELETE": gone}, **App().routes()}, max_body_bytes=LIMIT)
    await server.start("127.0.0.1", 0)
    try:
        reader, writer = await connect(server)
        writer.write(b"DELETE /gone HTTP/1.1\r\nHost: test\r\n\r\n" + get("/hello"))
        raw = await bounded(reader.readuntil(b"\r\n\r\n"))
        assert raw.startswith(b"HTTP/1.1 204 ")
        assert b"content-length" not in raw.lower() and b"content-type" not in raw.lower()
        reply = await read_reply(reader)
        assert reply.status == 200 and reply.body == b"hello"
        writer.close()
    finally:
        await bounded(server.stop(1.0))
