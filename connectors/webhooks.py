"""Signed HTTP POSTs of delivery receipts to apps (CONTRACT §3)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from router.accounts import Account
from router.notifications import DeliveryFailed
from router.store import Notification

SIGNATURE_HEADER = "X-Smsrouter-Signature"

# An app's answer is not ours to keep: only this much of its body is read.
MAX_RESPONSE_BYTES = 64 * 1024


def is_private_address(host: str) -> bool:
    """Loopback, private, link-local or otherwise non-public (RFC 6890)."""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower() == "localhost" or host.lower().endswith(".localhost")
    return not addr.is_global


class PublicOnlyResolver(AbstractResolver):
    """Resolves as usual but drops non-public addresses, so a callback URL
    cannot reach the router's own network ([webhooks] deny_private_networks)
    even through a DNS name that points inside it."""

    def __init__(self) -> None:
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = [
            r
            for r in await self._inner.resolve(host, port, family)
            if not is_private_address(r["host"])
        ]
        if not results:
            raise OSError(f"{host} resolves only to private addresses")
        return results

    async def close(self) -> None:
        await self._inner.close()


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the body>`, the header value apps verify."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    """Delivers webhook rows of the outbox; any 2xx is success."""

    def __init__(
        self,
        account_of: Callable[[str], Account | None],
        *,
        timeout: float,
        deny_private_networks: bool = False,
    ) -> None:
        self._account_of = account_of
        self._deny_private = deny_private_networks
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # Keep-alive pool shared by all callbacks; a few hundred sockets at
        # most so a slow receiver cannot exhaust file descriptors.
        options: dict[str, Any] = {"limit": 256, "limit_per_host": 64}
        if self._deny_private:
            options["resolver"] = PublicOnlyResolver()
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(**options),
            # A callback needs no cookies and no compressed answer: both cost
            # work on every response and carry nothing the router uses.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
            headers={"User-Agent": "smsrouter"},
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(self, n: Notification) -> None:
        assert self._session is not None and n.target
        # aiohttp connects to IP literals without asking the resolver.
        if self._deny_private and is_private_address(URL(n.target).host or ""):
            raise DeliveryFailed("callback URL points to a private network")
        account = self._account_of(n.account_id)
        headers = {"Content-Type": "application/json"}
        if account is not None and account.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(account.webhook_secret, n.payload)
        try:
            # Redirects are not followed: aiohttp would turn the POST of a
            # 301/302/303 into a GET without the body, whose 2xx would count
            # as delivered, and a redirect could carry the signed receipt to
            # another host. A 3xx is a failed attempt (Chargebee's webhooks,
            # for one, refuse redirects the same way).
            async with self._session.post(
                n.target, data=n.payload, headers=headers, allow_redirects=False
            ) as resp:
                await resp.content.read(MAX_RESPONSE_BYTES)
                if not 200 <= resp.status < 300:
                    raise DeliveryFailed(f"HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
