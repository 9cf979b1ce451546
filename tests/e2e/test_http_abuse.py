"""Abusive HTTP clients and a hung database, against the router subprocess
(CONTRACT §11 "Abusive clients" and "A hung database").

Each test starts the daemon with small limits (through SMSROUTER_HTTP_*
variables) and speaks to it over loopback with raw sockets where the bytes
on the wire matter, aiohttp elsewhere. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import time
from typing import Any

import aiohttp

from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess
from tests.own_pg import OwnPostgres

SENDER = "+14155550101"
RECIPIENT = "+14155550123"
KEY = "abuse-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BOUND = 10.0

CONFIG = f"""
[[prices]]
prefix = "1"
price = "0.0062"
[[accounts]]
id = "abuse"
credit = "1000000"
api_keys = ["{KEY}"]
[[numbers]]
number = "{SENDER}"
account = "abuse"
type = "short_code"
[shutdown]
drain_seconds = 1
"""


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), BOUND) if length else b""
    return Reply(int(lines[0].split()[1]), headers, body)


async def at_eof(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), BOUND) == b""
    except ConnectionResetError:
        return True


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: router\r\n\r\n".encode()


async def connect(router: RouterProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", router.http_port), BOUND)


def events(router: RouterProcess, event: str) -> list[dict[str, Any]]:
    return [line for line in router.lines if line.get("event") == event]


# ------------------------------------------------------------------ header deadline


async def _dribble(writer: asyncio.StreamWriter) -> None:
    """Slowloris: a header line every 0.3 s, never the blank line."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: router\r\n")
    for i in range(100):
        await asyncio.sleep(0.3)
        if writer.is_closing():
            return
        writer.write(f"X-Slow-{i}: v\r\n".encode())


async def test_slowloris_is_closed_at_the_header_deadline(start_router: StartRouter) -> None:
    header_timeout = 1.0
    router = await start_router(CONFIG, env={"SMSROUTER_HTTP_HEADER_TIMEOUT": str(header_timeout)})
    opened = time.monotonic()
    slow_reader, slow_writer = await connect(router)
    dribble = asyncio.create_task(_dribble(slow_writer))
    try:
        answer = asyncio.create_task(read_reply(slow_reader))
        served = 0
        async with aiohttp.ClientSession() as http:
            # A good client on its own connection is served meanwhile.
            while not answer.done():
                async with http.get(router.base_url + "/healthz") as resp:
                    assert resp.status == 200
                served += 1
                await asyncio.sleep(0.1)
            reply = answer.result()
            assert await at_eof(slow_reader)
            closed_after = time.monotonic() - opened
            assert reply.status == 408
            assert reply.headers["content-type"] == "application/problem+json"
            assert reply.json()["code"] == "request_timeout"
            assert closed_after <= header_timeout + 1.5, closed_after
            assert served >= 3
            async with http.get(router.base_url + "/healthz") as resp:
                assert resp.status == 200
    finally:
        dribble.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dribble
        slow_writer.close()


# ------------------------------------------------------------------ per-address cap


async def test_connections_over_the_per_address_cap_are_refused(start_router: StartRouter) -> None:
    cap = 5
    router = await start_router(CONFIG, env={"SMSROUTER_HTTP_MAX_CONNECTIONS_PER_IP": str(cap)})
    kept = [await connect(router) for _ in range(cap)]
    try:
        for reader, writer in kept:
            writer.write(get("/healthz"))
            assert (await read_reply(reader)).status == 200

        reader, writer = await connect(router)
        writer.write(get("/healthz"))
        reply = await read_reply(reader)
        assert reply.status == 503
        assert reply.headers["content-type"] == "application/problem+json"
        assert reply.json()["code"] == "too_many_connections"
        assert int(reply.headers["retry-after"]) >= 1
        assert reply.headers["connection"] == "close"
        assert await at_eof(reader)
        writer.close()
        line = await router.wait_for_event("connection over the per-address cap refused")
        assert line["address"] == "127.0.0.1" and line["cap"] == cap

        # The kept connections are served on; closing one makes room.
        reader, writer = kept.pop()
        writer.write(get("/healthz"))
        assert (await read_reply(reader)).status == 200
        writer.close()
        status = 0
        deadline = time.monotonic() + BOUND
        while status != 200 and time.monotonic() < deadline:
            reader, writer = await connect(router)
            writer.write(get("/healthz"))
            status = (await read_reply(reader)).status
            kept.append((reader, writer)) if status == 200 else writer.close()
            if status != 200:
                await asyncio.sleep(0.05)
        assert status == 200
    finally:
        for _, writer in kept:
            writer.close()


# ------------------------------------------------------------------ failed authentications


async def test_failed_authentications_are_throttled(start_router: StartRouter) -> None:
    router = await start_router(CONFIG)
    balance = router.base_url + "/v1/balance"
    async with aiohttp.ClientSession() as http:
        async with http.get(balance, headers=AUTH) as resp:
            assert resp.status == 200
        for i in range(20):
            async with http.get(balance, headers={"Authorization": f"Bearer guess-{i}"}) as resp:
                assert resp.status == 401, i
                assert (await resp.json())["code"] == "unauthorized"
        # In the cool-down the right key is refused too, and so is a wrong one.
        for headers in (AUTH, {"Authorization": "Bearer guess-x"}):
            async with http.get(balance, headers=headers) as resp:
                assert resp.status == 429
                assert 1 <= int(resp.headers["Retry-After"]) <= 60
                problem = await resp.json()
                assert problem["code"] == "auth_throttled"
                assert resp.content_type == "application/problem+json"
        # Unauthenticated routes are not throttled.
        async with http.get(router.base_url + "/healthz") as resp:
            assert resp.status == 200
    (line,) = events(router, "authentication throttled")
    assert line["address"] == "127.0.0.1"
    output = router.output()
    assert KEY not in output and "guess-" not in output


# ------------------------------------------------------------------ file-descriptor limit


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_at_the_fd_limit_open_connections_are_served_and_refusals_logged(
    start_router: StartRouter,
) -> None:
    router = await start_router(CONFIG)
    assert router.proc is not None
    pid = router.proc.pid
    reader, writer = await connect(router)
    writer.write(get("/healthz"))
    assert (await read_reply(reader)).status == 200
    # Lower the router's soft limit to a few descriptors above what it has
    # open now (prlimit(2) on the running process).
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    headroom = 8
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (_open_fds(pid) + headroom, hard))
    held: list[asyncio.StreamWriter] = []
    served = refused = 0
    try:
        for _ in range(60):
            r, w = await connect(router)
            w.write(get("/healthz"))
            try:
                reply = await read_reply(r)
            except (asyncio.IncompleteReadError, ConnectionError):
                reply = None
            if reply is not None and reply.status == 200:
                served += 1
                held.append(w)
            else:
                # Refused: a 503 and the close, or the close alone.
                assert reply is None or reply.status == 503
                refused += 1
                w.close()
        assert served <= headroom
        assert refused >= 60 - headroom

        # The connection opened before the limit is served on, and the
        # daemon is up.
        writer.write(get("/healthz"))
        assert (await read_reply(reader)).status == 200
        assert router.proc.returncode is None

        # The refusals are logged once per interval with their count: the
        # first line at once, the rest when the interval is over.
        async with asyncio.timeout(20):
            while True:
                lines = events(router, "connections refused at the file-descriptor limit")
                if sum(line["refused"] for line in lines) >= refused:
                    break
                await asyncio.sleep(0.2)
        assert sum(line["refused"] for line in lines) == refused
        assert len(lines) <= 3, lines
        assert all(line["error"] == "EMFILE" for line in lines)
        assert "Traceback" not in router.output()

        # With descriptors to spare again, new connections are served.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (4096, hard))
        for w in held:
            w.close()
        r, w = await connect(router)
        w.write(get("/healthz"))
        assert (await read_reply(r)).status == 200
        w.close()
    finally:
        for w in held:
            w.close()
        writer.close()


# ------------------------------------------------------------------ a hung database


def _send(text: str) -> dict[str, str]:
    return {"from": SENDER, "to": RECIPIENT, "text": text}


async def test_hung_database_answers_503_within_the_request_timeout(
    start_router: StartRouter, own_pg: OwnPostgres
) -> None:
    request_timeout = 2.0
    router = await start_router(
        CONFIG,
        env={
            "SMSROUTER_DATABASE_URL": own_pg.dsn,
            "SMSROUTER_HTTP_REQUEST_TIMEOUT": str(request_timeout),
        },
    )
    url = router.base_url + "/v1/messages"
    async with aiohttp.ClientSession(headers=AUTH, connector=aiohttp.TCPConnector(limit=0)) as http:
        async with http.post(url, json=_send("before")) as resp:
            assert resp.status == 202, await resp.text()

        async def timed_post(i: int) -> tuple[float, int, str | None, dict[str, Any]]:
            started = time.monotonic()
            async with http.post(url, json=_send(f"frozen {i}")) as resp:
                body = await resp.json()
                return (
                    time.monotonic() - started,
                    resp.status,
                    resp.headers.get("Retry-After"),
                    body,
                )

        pids = own_pg.freeze()
        try:
            async with asyncio.timeout(request_timeout + 10):
                answers = await asyncio.gather(*(timed_post(i) for i in range(20)))
            for elapsed, status, retry_after, body in answers:
                assert status == 503, body
                assert retry_after is not None and int(retry_after) >= 1
                assert body["code"] == "commit_timeout", body
                assert "Idempotency-Key" in body["detail"]
                assert elapsed <= request_timeout + 1.5, elapsed
            # A read waits no longer.
            started = time.monotonic()
            async with http.get(router.base_url + "/v1/balance") as resp:
                assert resp.status == 503
                assert resp.headers.get("Retry-After")
                assert (await resp.json())["code"] == "store_timeout"
            assert time.monotonic() - started <= request_timeout + 1.5
        finally:
            own_pg.thaw(pids)

        async with asyncio.timeout(30), http.post(url, json=_send("after")) as resp:
            assert resp.status == 202, await resp.text()
