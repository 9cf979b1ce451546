"""Callbacks leave through HTTP_PROXY / HTTPS_PROXY when set (NO_PROXY
honoured), tunnelled with CONNECT: a tiny CONNECT proxy on 127.0.0.1 relays
them to the receiver and records what it was asked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from smsrouter.connectors.webhooks import WebhookChannel
from smsrouter.router.accounts import AccountDirectory
from smsrouter.router.config import AccountConfig
from smsrouter.router.messages import utcnow
from smsrouter.router.notifications import WEBHOOK, DeliveryFailed
from smsrouter.router.store import Notification
from tests.http_apps import serving
from tests.integration.test_http_client import certificate, tls_server

__all__ = ["certificate"]  # a fixture, used by name

ACCOUNTS = AccountDirectory([AccountConfig(id="acme", webhook_secret="s3cret")])


@dataclass
class Proxy:
    url: str = ""
    answer: bytes = b"HTTP/1.1 200 Connection established\r\n\r\n"
    asked: list[bytes] = field(default_factory=list)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    p = Proxy()
    tasks: set[asyncio.Task[None]] = set()

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        p.asked.append(head)
        writer.write(p.answer)
        if not p.answer.startswith(b"HTTP/1.1 200"):
            writer.close()
            return
        host, port = head.split(b" ")[1].decode().rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(tunnel(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    p.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield p
    finally:
        server.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serving(app) as base:
        yield f"{base}/hook", bodies


def _notification(target: str) -> Notification:
    now = utcnow()
    return Notification(
        id=5,
        kind=WEBHOOK,
        account_id="acme",
        message_id=None,
        target=target,
        payload=b'{"id":"p1"}',
        attempts=0,
        next_attempt_at=now,
        expires_at=now + timedelta(hours=1),
    )


async def _deliver(target: str) -> None:
    channel = WebhookChannel(ACCOUNTS.get, timeout=2.0)
    await channel.start()
    try:
        await channel.deliver(_notification(target))
    finally:
        await channel.stop()


@pytest.fixture(autouse=True)
def _no_inherited_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_a_callback_goes_through_the_proxy(
    proxy: Proxy, receiver: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = receiver
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    await _deliver(url)
    assert bodies == [b'{"id":"p1"}']
    port = url.split(":")[2].split("/")[0]
    (head,) = proxy.asked
    assert head.startswith(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n".encode())


async def test_no_proxy_exempts_a_host(
    proxy: Proxy, receiver: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = receiver
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    await _deliver(url)
    assert bodies == [b'{"id":"p1"}'] and proxy.asked == []


async def test_a_tunnel_the_proxy_refuses_fails_the_attempt(
    proxy: Proxy, receiver: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = receiver
    proxy.answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with pytest.raises(DeliveryFailed, match=r"proxy refused the tunnel .*403 Forbidden"):
        await _deliver(url)
    assert bodies == [] and len(proxy.asked) == 1


async def test_https_is_tunnelled_and_verified_end_to_end(
    proxy: Proxy, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # TLS runs inside the tunnel, to the origin: the proxy sees no callback.
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    async with tls_server(*certificate) as port:
        await _deliver(f"https://localhost:{port}/dlr")
    (head,) = proxy.asked
    assert head.startswith(f"CONNECT localhost:{port} HTTP/1.1\r\n".encode())
