"""Signed HTTP POSTs of delivery receipts to apps (CONTRACT §3)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import aiohttp

from router.accounts import Account
from router.notifications import DeliveryFailed
from router.store import Notification

SIGNATURE_HEADER = "X-Smsrouter-Signature"


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the body>`, the header value apps verify."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    """Delivers webhook rows of the outbox; any 2xx is success."""

    def __init__(self, account_of: Callable[[str], Account | None], *, timeout: float) -> None:
        self._account_of = account_of
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # Keep-alive pool shared by all callbacks; a few hundred sockets at
        # most so a slow receiver cannot exhaust file descriptors.
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=256, limit_per_host=64),
            headers={"User-Agent": "smsrouter"},
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(self, n: Notification) -> None:
        assert self._session is not None and n.target
        account = self._account_of(n.account_id)
        headers = {"Content-Type": "application/json"}
        if account is not None and account.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(account.webhook_secret, n.payload)
        try:
            async with self._session.post(n.target, data=n.payload, headers=headers) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    raise DeliveryFailed(f"HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
