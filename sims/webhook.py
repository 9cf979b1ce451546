"""A webhook receiver for DLR callbacks: records them and checks signatures.

It takes the delivery reports of smsrouter (a JSON POST signed with
`X-Smsrouter-Signature`), Kannel (a GET of the dlr-url with its query) and
Jasmin (a form POST, or a GET with `dlr-method=GET`), on any path. For each
it notes an id and a status:

* id — JSON `id`, else the form or query field `ref` (a tag a load client
  put in the dlr-url), else `id` (Jasmin's message id);
* status — JSON `status`, else the field `status` (e.g. Kannel's `%d` put
  there by the dlr-url), else `message_status` (Jasmin).

It answers `status` (200) with the body `ACK/Jasmin`, which Jasmin requires
to stop re-sending a report and the others ignore.

Tests keep every callback (`callbacks`); a load run sets `keep_bodies=False`
and only counts, optionally handing each report to `listener`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from sims.stats import per_second

SIGNATURE_HEADER = "X-Smsrouter-Signature"
# Jasmin re-sends a DLR whose answer is not exactly this body.
JASMIN_ACK = "ACK/Jasmin"

#: listener(id, status, monotonic arrival time) for each report.
Listener = Callable[[str, str, float], None]


@dataclass(slots=True)
class Callback:
    body: dict[str, Any]
    raw: bytes
    signature: str | None
    signature_ok: bool
    method: str = "POST"
    # Form fields and query parameters, for the GET and form callbacks.
    params: dict[str, str] = field(default_factory=dict)
    at: float = 0.0


@dataclass
class WebhookReceiver:
    """Answers `status` (200 by default) and keeps every callback it got.

    With `keep_bodies=False` it keeps none (for load runs) and only counts:
    `received`, `by_method`, `by_status`, `signature_failures` (counted when
    a `secret` is set), the first and last arrival times.
    """

    secret: str = ""
    status: int = 200
    callbacks: list[Callback] = field(default_factory=list)
    keep_bodies: bool = True
    reply: str = JASMIN_ACK
    listener: Listener | None = None

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.port = 0
        self.received = 0
        self.signature_failures = 0
        self.by_method: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.first_at = 0.0
        self.last_at = 0.0

    def verify(self, raw: bytes, signature: str | None) -> bool:
        # The secret is read at each call: tests change it on a running receiver.
        expected = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
        return signature is not None and hmac.compare_digest(signature, expected)

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        now = time.monotonic()
        signature = request.headers.get(SIGNATURE_HEADER)
        # Without a secret a count-only run has nothing to check.
        signature_ok = self.verify(raw, signature) if self.secret or self.keep_bodies else False
        body: dict[str, Any] = {}
        params: dict[str, str] = dict(request.rel_url.query) if request.query_string else {}
        if raw:
            if request.content_type == "application/x-www-form-urlencoded":
                params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            else:
                try:
                    decoded = json.loads(raw)
                except ValueError:
                    decoded = None
                if isinstance(decoded, dict):
                    body = decoded
        self._count(request.method, body, params, signature_ok, now)
        if self.keep_bodies:
            self.callbacks.append(
                Callback(body, raw, signature, signature_ok, request.method, params, now)
            )
        if self._waiters:
            self._wake()
        return web.Response(status=self.status, text=self.reply)

    def _count(
        self,
        method: str,
        body: dict[str, Any],
        params: dict[str, str],
        signature_ok: bool,
        now: float,
    ) -> None:
        self.received += 1
        self.by_method[method] += 1
        if self.secret and not signature_ok:
            self.signature_failures += 1
        if not self.first_at:
            self.first_at = now
        self.last_at = now
        if body:
            key = str(body.get("id", ""))
            status = str(body.get("status", ""))
        else:
            key = params.get("ref") or params.get("id") or ""
            status = params.get("status") or params.get("message_status") or ""
        self.by_status[status or "?"] += 1
        if self.listener is not None:
            self.listener(key, status, now)

    def _wake(self) -> None:
        still: list[tuple[int, asyncio.Future[None]]] = []
        for count, future in self._waiters:
            if future.done():
                continue
            if self.received >= count:
                future.set_result(None)
            else:
                still.append((count, future))
        self._waiters = still

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # A load run ramps many clients up at once: a deep accept queue.
        site = web.TCPSite(self._runner, host, port, backlog=1024, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dlr"

    async def wait_for(self, count: int, timeout: float) -> list[Callback]:
        """Wait until `count` callbacks arrived (or raise TimeoutError)."""
        if self.received < count:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((count, future))
            async with asyncio.timeout(timeout):
                await future
        return self.callbacks

    def summary(self) -> dict[str, Any]:
        """Counters as a flat JSON object; rate over first to last arrival."""
        span = self.last_at - self.first_at
        return {
            "tool": "webhook",
            "port": self.port,
            "received": self.received,
            "per_s": per_second(self.received, span) if self.received > 1 else 0.0,
            "by_method": dict(sorted(self.by_method.items())),
            "by_status": dict(sorted(self.by_status.items())),
            "signature_failures": self.signature_failures,
            "span_s": round(span, 3),
        }

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def serve(
    host: str, port: int, secret: str, *, status: int = 200, keep_bodies: bool = False
) -> dict[str, Any]:
    """`smsrouter sim webhook`: run until SIGTERM/SIGINT, return the summary."""
    import signal
    import sys

    receiver = WebhookReceiver(secret=secret, status=status, keep_bodies=keep_bodies)
    await receiver.start(host, port)
    print(f"webhook receiver listening on http://{host}:{receiver.port}/", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await receiver.stop()
    return {**receiver.summary(), "cpu_s": round(time.process_time(), 3)}
