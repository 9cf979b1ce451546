"""Callbacks leave through HTTP_PROXY / HTTPS_PROXY when set (NO_PROXY
honoured): http targets asked of the proxy in absolute form, https ones
tunnelled with CONNECT. A small proxy on 127.0.0.1 (tests/web_proxy.py)
relays them to the receiver and records what it was asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from smsrouter.connectors.http_client import HttpClient
from smsrouter.connectors.webhooks import WebhookChannel
from smsrouter.router.accounts import AccountDirectory
from smsrouter.router.config import AccountConfig
from smsrouter.router.messages import utcnow
from smsrouter.router.notifications import WEBHOOK, DeliveryFailed
from smsrouter.router.store import Notification
from tests.http_apps import serving
from tests.integration.test_http_client import certificate, tls_server
from tests.web_proxy import WebProxy, web_proxy

__all__ = ["certificate"]  # a fixture, used by name

ACCOUNTS = AccountDirectory([AccountConfig(id="acme", webhook_secret="s3cret")])


@pytest.fixture
async def proxy() -> AsyncIterator[WebProxy]:
    async with web_proxy() as p:
        yield p


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


async def test_an_http_callback_is_asked_of_the_proxy_in_absolute_form(
    proxy: WebProxy, receiver: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = receiver
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    await _deliver(url)
    assert bodies == [b'{"id":"p1"}']
    authority = url.split("/")[2]
    # RFC 9112 §3.2.2: the whole URL on the request line, Host the origin's.
    assert proxy.request_lines == [f"POST http://{authority}/hook HTTP/1.1"]
    assert proxy.header(0, "Host") == authority
    assert proxy.header(0, "Proxy-Authorization") is None


async def test_proxy_credentials_go_in_proxy_authorization(
    proxy: WebProxy, receiver: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = receiver
    monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://egress:p%40ss@"))
    await _deliver(url)
    assert bodies == [b'{"id":"p1"}']
    # Basic base64("egress:p@ss"); the receiver never sees it.
    assert proxy.header(0, "Proxy-Authorization") == "Basic ZWdyZXNzOnBAc3M="


async def test_callbacks_share_one_connection_to_the_proxy(
    proxy: WebProxy, receiver: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = receiver
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    channel = WebhookChannel(ACCOUNTS.get, timeout=2.0)
    await channel.start()
    try:
        for _ in range(3):
            await channel.deliver(_notification(url))
    finally:
        await channel.stop()
    assert len(bodies) == 3 and len(proxy.asked) == 3
    assert proxy.connections == 1  # kept alive (RFC 9112 §9.3)


async def test_a_proxy_that_cannot_reach_the_receiver_fails_the_attempt(
    proxy: WebProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with pytest.raises(DeliveryFailed, match="HTTP 502"):
        await _deliver("http://127.0.0.1:9/hook")  # the discard port: nothing listens
    assert proxy.request_lines == ["POST http://127.0.0.1:9/hook HTTP/1.1"]


async def test_an_unreachable_proxy_fails_the_attempt(
    receiver: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = receiver
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with pytest.raises(DeliveryFailed, match=r"cannot connect to the proxy 127\.0\.0\.1:9"):
        await _deliver(url)
    assert bodies == []


async def test_no_proxy_exempts_a_host(
    proxy: WebProxy, receiver: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = receiver
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    await _deliver(url)
    assert bodies == [b'{"id":"p1"}'] and proxy.asked == []


async def test_a_tunnel_the_proxy_refuses_fails_the_attempt(
    proxy: WebProxy, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy.answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    async with tls_server(*certificate) as port:
        with pytest.raises(DeliveryFailed, match=r"proxy refused the tunnel .*403 Forbidden"):
            await _deliver(f"https://localhost:{port}/dlr")
    assert len(proxy.asked) == 1


async def test_https_is_tunnelled_and_verified_end_to_end(
    proxy: WebProxy, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # TLS runs inside the tunnel, to the origin: the proxy sees no callback.
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    async with tls_server(*certificate) as port:
        await _deliver(f"https://localhost:{port}/dlr")
    (head,) = proxy.asked
    assert head.startswith(f"CONNECT localhost:{port} HTTP/1.1\r\n".encode())


async def test_with_deny_private_networks_http_is_tunnelled_to_the_judged_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The proxy would resolve a forwarded name itself, perhaps to a private
    # address (CONTRACT §11): with the guard on, http goes by CONNECT to the
    # address the router resolved and judged, as https does.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    guarded = HttpClient(timeout=1.0, deny_private_networks=True, trust_env=True)
    plain = HttpClient(timeout=1.0, trust_env=True)
    try:
        assert guarded._target("http://example.com/dlr").head.startswith(b"POST /dlr HTTP/1.1\r\n")
        assert plain._target("http://example.com/dlr").head.startswith(
            b"POST http://example.com/dlr HTTP/1.1\r\n"
        )
    finally:
        await guarded.close()
        await plain.close()
