"""The DLR webhook POST: connectors.http_client against aiohttp.ClientSession.

    python -m bench.webhook_client [--posts 20000] [--concurrency 16] [--seconds 20]

Both clients POST the same signed DLR body (the headers WebhookChannel
sends) to one minimal keep-alive HTTP server on 127.0.0.1, which runs in a
subprocess of its own (``--serve``) so that its work is not counted. Each
client runs in a fresh event loop (uvloop, as the daemon does): a warm-up,
then `--posts` posts from `--concurrency` workers, stopped early after
`--seconds`. Prints one JSON line:

* ``posts_per_s``: posts per wall-clock second;
* ``cpu_us_per_post``: CPU time of this process (time.process_time, user +
  system) per post, in microseconds: the cost the router pays per callback.

aiohttp is set up as the channel had it: a TCPConnector with the same
limits, no cookie jar, no decompression, redirects not followed, the body
read up to MAX_RESPONSE_BYTES.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httptools
import uvloop

from smsrouter.connectors.http_client import HttpClient
from smsrouter.connectors.webhooks import MAX_RESPONSE_BYTES, SIGNATURE_HEADER, sign

SECRET = "whsec-bench"
BODY = (
    b'{"id":"0190f3a2-7c1e-7b3d-9a4f-2e6d8c1b5a90","client_ref":"order-81723",'
    b'"from":"+14155550101","to":"+14155550123","status":"delivered",'
    b'"error_code":null,"carrier":"sim-a","parts":1,"done_at":"2025-01-01T12:00:00.123Z"}'
)
HEADERS = (
    ("Content-Type", "application/json"),
    (SIGNATURE_HEADER, sign(SECRET, BODY)),
)
WARM_UP = 500
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


# -- the server (a subprocess)


class _Server(asyncio.Protocol):
    """Answers 200 with no body to every request, keeping the connection."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is not None:
            self.transport.write(ANSWER)


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Server, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()  # until terminated


# -- the clients


async def _run(
    post: Callable[[], Awaitable[int]], posts: int, concurrency: int, seconds: float
) -> dict[str, float]:
    for _ in range(WARM_UP):
        assert await post() == 200
    deadline = time.monotonic() + seconds
    left = posts
    done = 0

    async def worker() -> None:
        nonlocal left, done
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            assert await post() == 200
            done += 1

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "posts": done,
        "posts_per_s": round(done / wall),
        "cpu_us_per_post": round(cpu / done * 1e6, 1),
    }


async def _ours(url: str, posts: int, concurrency: int, seconds: float) -> dict[str, float]:
    client = HttpClient(timeout=10.0, max_response_bytes=MAX_RESPONSE_BYTES)
    try:
        return await _run(lambda: client.post(url, BODY, HEADERS), posts, concurrency, seconds)
    finally:
        await client.close()


async def _aiohttp(url: str, posts: int, concurrency: int, seconds: float) -> dict[str, float]:
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=10.0),
        connector=aiohttp.TCPConnector(limit=256, limit_per_host=64),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
        headers={"User-Agent": "smsrouter"},
    )
    headers = dict(HEADERS)

    async def post() -> int:
        async with session.post(url, data=BODY, headers=headers, allow_redirects=False) as resp:
            await resp.content.read(MAX_RESPONSE_BYTES)
            return resp.status

    try:
        return await _run(post, posts, concurrency, seconds)
    finally:
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_client")
    parser.add_argument("--posts", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="bound per client")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(_serve())
        return

    server = subprocess.Popen(
        [sys.executable, "-m", "bench.webhook_client", "--serve"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/dlr"
        ours = uvloop.run(_ours(url, args.posts, args.concurrency, args.seconds))
        theirs = uvloop.run(_aiohttp(url, args.posts, args.concurrency, args.seconds))
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print(
        json.dumps(
            {
                "bench": "webhook_client",
                "python": platform.python_version(),
                "concurrency": args.concurrency,
                "body_bytes": len(BODY),
                "http_client": ours,
                "aiohttp": theirs,
                "cpu_ratio": round(theirs["cpu_us_per_post"] / ours["cpu_us_per_post"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
