"""A webhook receiver for DLR callbacks: records them and checks signatures.

It takes the delivery reports of smsrouter (a JSON POST signed with
`X-Smsrouter-Signature`), Kannel (a GET of the dlr-url with its query) and
Jasmin (a form POST, or a GET with `dlr-method=GET`), on any path. For each
it notes an id and a status:

* id — JSON `id`, else the form or query field `ref` (a tag a load client
  put in the dlr-url), else `id` (Jasmin's message id);
* status — JSON `status`, else the field `status` (e.g. Kannel's `%d` put
  there by the dlr-url), else `message_status` (Jasmin).

A JSON object with neither `id` nor `status` counts as no JSON, so the query
(or nothing) names the report.

It answers `status` (200) with the body `ACK/Jasmin`, which Jasmin requires
to stop re-sending a report and the others ignore.

Tests keep every callback (`callbacks`); a load run sets `keep_bodies=False`
and only counts, optionally handing each report to `listener`.

The HTTP/1.1 server is a bare asyncio Protocol around `httptools`: a load
run receives thousands of reports a second in the same process as its
client, and a web framework's per-request cost would eat the CPU the
system under test needs. Keep-alive, pipelining, Content-Length and chunked
bodies, and `Expect: 100-continue` are handled; nothing else of HTTP is
needed by the peers that call it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl, unquote_plus

import httptools
import msgspec

from smsrouter.connectors.listeners import bound_port
from smsrouter.sims.stats import per_second

SIGNATURE_HEADER = "X-Smsrouter-Signature"
# Jasmin re-sends a DLR whose answer is not exactly this body.
JASMIN_ACK = "ACK/Jasmin"

#: listener(id, status, monotonic arrival time) for each report.
Listener = Callable[[str, str, float], None]

_SIGNATURE = SIGNATURE_HEADER.lower().encode()
# webhook-id, webhook-timestamp, webhook-signature (Standard Webhooks).
_STANDARD_PREFIX = b"webhook-"
_FORM = b"application/x-www-form-urlencoded"
# The only fields a count-only run reads from a query or form; a regex
# finds them without splitting the dozen fields of a Jasmin DLR in Python.
_FIELDS = re.compile(rb"(?:^|&)(ref|id|status|message_status)=([^&]*)")
_BLOCK = 64  # SHA-256's block size, in bytes
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Report(msgspec.Struct):
    """The two fields a count-only run reads from a JSON report; msgspec
    skips the others without building them."""

    id: Any = msgspec.UNSET
    status: Any = msgspec.UNSET


_decode_report = msgspec.json.Decoder(_Report).decode


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
    # The Standard Webhooks headers (webhook-id, webhook-timestamp,
    # webhook-signature) by their lower-case names, for a test to verify.
    headers: dict[str, str] = field(default_factory=dict)


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
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._signer: _Signer | None = None
        self._answer_of: tuple[int, str] | None = None
        self._answer = b""
        self.port = 0
        self.received = 0
        self.signature_failures = 0
        self.by_method: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.first_at = 0.0
        self.last_at = 0.0

    def verify(self, raw: bytes, signature: str | None) -> bool:
        # The secret is read at each call: tests change it on a running receiver.
        return signature is not None and self._verify(raw, signature.encode("latin-1", "replace"))

    def _verify(self, raw: bytes, signature: bytes) -> bool:
        signer = self._signer
        if signer is None or signer.secret != self.secret:
            signer = self._signer = _Signer(self.secret)
        return hmac.compare_digest(signature, signer.sign(raw))

    def _answer_bytes(self) -> bytes:
        # `status` and `reply` may change while running (tests do): rebuilt
        # only when they did.
        key = (self.status, self.reply)
        if key != self._answer_of:
            self._answer_of = key
            self._answer = _response(*key)
        return self._answer

    def _handle(
        self,
        method: bytes,
        url: bytes,
        raw: bytes,
        content_type: bytes,
        signature: bytes | None,
        standard: list[tuple[bytes, bytes]] | None = None,
    ) -> bytes:
        """One complete request; returns the answer to write."""
        now = time.monotonic()
        query = url.partition(b"?")[2]
        is_form = bool(raw) and (content_type == _FORM or _media_type(content_type) == _FORM)
        if self.keep_bodies:
            self._keep(method.decode("latin-1"), query, raw, is_form, signature, now)
            if standard:
                self.callbacks[-1].headers = {
                    name.lower().decode("latin-1"): value.decode("latin-1")
                    for name, value in standard
                }
        else:
            # Without a secret a count-only run has nothing to check.
            signature_ok = self.secret != "" and (
                signature is not None and self._verify(raw, signature)
            )
            key, status = _report_of(query, raw, is_form)
            self._count(method.decode("latin-1"), key, status, signature_ok, now)
        if self._waiters:
            self._wake()
        return self._answer_bytes()

    def _keep(
        self,
        method: str,
        query: bytes,
        raw: bytes,
        is_form: bool,
        signature: bytes | None,
        now: float,
    ) -> None:
        signature_text = signature.decode("latin-1") if signature is not None else None
        signature_ok = self.verify(raw, signature_text)
        body: dict[str, Any] = {}
        params: dict[str, str] = (
            dict(parse_qsl(query.decode("utf-8", "replace"), keep_blank_values=True))
            if query
            else {}
        )
        if raw:
            if is_form:
                params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            else:
                try:
                    decoded = json.loads(raw)
                except ValueError:
                    decoded = None
                if isinstance(decoded, dict):
                    body = decoded
        if "id" in body or "status" in body:
            key, status = str(body.get("id", "")), str(body.get("status", ""))
        else:
            key = params.get("ref") or params.get("id") or ""
            status = params.get("status") or params.get("message_status") or ""
        self._count(method, key, status, signature_ok, now)
        self.callbacks.append(
            Callback(body, raw, signature_text, signature_ok, method, params, now)
        )

    def _count(self, method: str, key: str, status: str, signature_ok: bool, now: float) -> None:
        self.received += 1
        self.by_method[method] += 1
        if self.secret and not signature_ok:
            self.signature_failures += 1
        if not self.first_at:
            self.first_at = now
        self.last_at = now
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
        loop = asyncio.get_running_loop()
        # A load run ramps many clients up at once: a deep accept queue.
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=1024, reuse_address=True
        )
        self.port = bound_port(self._server)

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
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.close()
        await server.wait_closed()


# HMAC's inner and outer pads (RFC 2104) as byte translation tables.
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class _Signer:
    """`X-Smsrouter-Signature` of a body under one secret: HMAC-SHA256.

    The two keyed SHA-256 states are computed once and copied per body;
    `hmac.digest` sets the key up again for every call, which at thousands
    of reports a second is a measurable part of a load run's CPU.
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        key = secret.encode()
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def sign(self, raw: bytes) -> bytes:
        """The header value for `raw`: b"sha256=" and the hex digest."""
        inner = self._inner.copy()
        inner.update(raw)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return b"sha256=" + outer.hexdigest().encode()


def _media_type(content_type: bytes) -> bytes:
    return content_type.partition(b";")[0].strip().lower()


def _report_of(query: bytes, raw: bytes, is_form: bool) -> tuple[str, str]:
    """(id, status) of a count-only request, reading as little as it can."""
    if raw and not is_form:
        try:
            report = _decode_report(raw)
        except msgspec.DecodeError:
            pass
        else:
            if report.id is not msgspec.UNSET or report.status is not msgspec.UNSET:
                key = "" if report.id is msgspec.UNSET else str(report.id)
                status = "" if report.status is msgspec.UNSET else str(report.status)
                return key, status
    fields: dict[bytes, bytes] = dict(_FIELDS.findall(query)) if query else {}
    if is_form:
        fields.update(_FIELDS.findall(raw))
    if not fields:
        return "", ""
    ref = fields.get(b"ref") or fields.get(b"id") or b""
    word = fields.get(b"status") or fields.get(b"message_status") or b""
    return _unquote(ref), _unquote(word)


def _unquote(value: bytes) -> str:
    text = value.decode("utf-8", "replace")
    return unquote_plus(text) if "%" in text or "+" in text else text


def _response(status: int, reply: str) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    head = f"HTTP/1.1 {status} {phrase}\r\n"
    # No body may follow these statuses (RFC 9110 §6.4.1).
    if status < 200 or status in (204, 304):
        return (head + "\r\n").encode("latin-1")
    body = reply.encode()
    return (
        head.encode("latin-1")
        + b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )


class _Connection(asyncio.Protocol):
    """One client connection of the receiver: parse, hand over, answer."""

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body = b""
        self.content_type = b""
        self.signature: bytes | None = None
        self.standard: list[tuple[bytes, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        self.receiver._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.receiver._connections.discard(self)
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            raise  # a fault of the receiver's own (or its listener's), not of the request
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_BAD_REQUEST)
                self.transport.close()

    # httptools callbacks, in the order a request brings them.

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # A few names matter; their lengths (21, 12, 6, 10 and 17) spare
        # lowering the rest.
        size = len(name)
        if size == 21 and name.lower() == _SIGNATURE:
            self.signature = value
        elif (size == 10 or size == 17) and name[:8].lower() == _STANDARD_PREFIX:
            if self.standard is None:
                self.standard = []
            self.standard.append((name, value))
        elif size == 12 and name.lower() == b"content-type":
            self.content_type = value
        elif (
            size == 6
            and name.lower() == b"expect"
            and value.lower() == b"100-continue"
            and self.transport is not None
        ):
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        # A chunked body arrives here chunk by chunk, already unframed.
        self.body += body

    def on_message_complete(self) -> None:
        parser = self.parser
        answer = self.receiver._handle(
            parser.get_method(), self.url, self.body, self.content_type, self.signature,
            self.standard,
        )  # fmt: skip
        self.url = self.body = self.content_type = b""
        self.signature = None
        self.standard = None
        transport = self.transport
        if transport is not None:
            transport.write(answer)
            if not parser.should_keep_alive():
                transport.close()


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
