"""A webhook receiver for DLR callbacks: records them and checks signatures."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(slots=True)
class Callback:
    body: dict[str, Any]
    raw: bytes
    signature: str | None
    signature_ok: bool


@dataclass
class WebhookReceiver:
    """Answers `status` (200 by default) and keeps every callback it got."""

    secret: str = ""
    status: int = 200
    callbacks: list[Callback] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()
        self.port = 0

    def verify(self, raw: bytes, signature: str | None) -> bool:
        expected = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
        return signature is not None and hmac.compare_digest(signature, expected)

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        signature = request.headers.get("X-Smsrouter-Signature")
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        self.callbacks.append(Callback(body, raw, signature, self.verify(raw, signature)))
        async with self._arrived:
            self._arrived.notify_all()
        return web.Response(status=self.status)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dlr"

    async def wait_for(self, count: int, timeout: float) -> list[Callback]:
        """Wait until `count` callbacks arrived (or raise TimeoutError)."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.callbacks) >= count)
        return self.callbacks

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
