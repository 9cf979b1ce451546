"""Callbacks carry the Standard Webhooks headers beside ours (CONTRACT §3),
checked with the specification's own library (`standardwebhooks`), over
HTTP on 127.0.0.1 to a receiver that keeps every request's headers."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import formatdate

import asyncpg
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from smsrouter.connectors.webhooks import SIGNATURE_HEADER, WebhookChannel, sign
from smsrouter.router.accounts import AccountDirectory
from smsrouter.router.config import AccountConfig
from smsrouter.router.messages import utcnow
from smsrouter.router.notifications import MAX_RETRY_SECONDS, MO, WEBHOOK, DeliveryFailed
from smsrouter.router.store import Notification
from tests.http_apps import serving
from tests.integration.test_webhooks import Router, _attempts, _done, _message, _row, eventually

SECRET = "whsec-3f9a1c"
NEXT_SECRET = "rotated-ключ-77"
ACCOUNTS = AccountDirectory(
    [
        AccountConfig(id="acme", webhook_secret=SECRET),
        AccountConfig(id="rotating", webhook_secret=SECRET, webhook_secret_next=NEXT_SECRET),
        AccountConfig(id="nosecret"),
    ]
)


def _verifier(secret: str) -> Webhook:
    # The specification's libraries take the key base64-encoded (CONTRACT §3).
    return Webhook(base64.b64encode(secret.encode()).decode())


@dataclass
class Seen:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str = ""
    status: int = 200
    extra: dict[str, str] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()

    async def hook(request: web.Request) -> web.Response:
        r.seen.append(Seen(dict(request.headers), await request.read()))
        return web.Response(status=r.status, headers=r.extra)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serving(app) as base:
        r.url = f"{base}/hook"
        yield r


@pytest.fixture
async def channel() -> AsyncIterator[WebhookChannel]:
    c = WebhookChannel(ACCOUNTS.get, timeout=2.0)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


def _notification(
    target: str, payload: bytes, *, account: str = "acme", kind: str = WEBHOOK, id: int = 41
) -> Notification:
    now = utcnow()
    return Notification(
        id=id,
        kind=kind,
        account_id=account,
        message_id=None,
        target=target,
        payload=payload,
        attempts=0,
        next_attempt_at=now,
        expires_at=now + timedelta(hours=1),
    )


@pytest.mark.parametrize("kind", [WEBHOOK, MO])
async def test_a_callback_verifies_with_the_standard_webhooks_library(
    receiver: Receiver, channel: WebhookChannel, kind: str
) -> None:
    body = b'{"id":"a1","status":"delivered"}'
    before = int(time.time())
    await channel.deliver(_notification(receiver.url, body, kind=kind))
    (seen,) = receiver.seen
    assert seen.body == body
    assert _verifier(SECRET).verify(seen.body, seen.headers) == {"id": "a1", "status": "delivered"}
    assert seen.headers["webhook-id"] == "41"  # the outbox row's id
    assert before <= int(seen.headers["webhook-timestamp"]) <= int(time.time())
    assert seen.headers["webhook-signature"].startswith("v1,")
    # Ours stays beside it.
    assert seen.headers[SIGNATURE_HEADER] == sign(SECRET, body)
    with pytest.raises(WebhookVerificationError):
        _verifier("another-secret").verify(seen.body, seen.headers)


async def test_every_attempt_of_a_notification_carries_the_same_id(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    receiver.status = 500
    n = _notification(receiver.url, b'{"id":"a2"}', id=977)
    for _ in range(2):
        with pytest.raises(DeliveryFailed):
            await channel.deliver(n)
    other = _notification(receiver.url, b'{"id":"a3"}', id=978)
    with pytest.raises(DeliveryFailed):
        await channel.deliver(other)
    ids = [s.headers["webhook-id"] for s in receiver.seen]
    assert ids == ["977", "977", "978"]
    for s in receiver.seen:
        _verifier(SECRET).verify(s.body, s.headers)


async def test_a_tampered_body_or_id_does_not_verify(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    await channel.deliver(_notification(receiver.url, b'{"id":"a4"}'))
    (seen,) = receiver.seen
    with pytest.raises(WebhookVerificationError):
        _verifier(SECRET).verify(b'{"id":"a5"}', seen.headers)
    with pytest.raises(WebhookVerificationError):
        _verifier(SECRET).verify(seen.body, {**seen.headers, "webhook-id": "42"})


async def test_during_a_rotation_both_secrets_verify(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    body = b'{"id":"r1","status":"delivered"}'
    await channel.deliver(_notification(receiver.url, body, account="rotating"))
    (seen,) = receiver.seen
    signatures = seen.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    _verifier(SECRET).verify(seen.body, seen.headers)
    _verifier(NEXT_SECRET).verify(seen.body, seen.headers)
    with pytest.raises(WebhookVerificationError):
        _verifier("neither").verify(seen.body, seen.headers)
    # X-Smsrouter-Signature stays on the current secret.
    assert seen.headers[SIGNATURE_HEADER] == sign(SECRET, body)


async def test_an_account_without_a_secret_sends_no_signature(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    await channel.deliver(_notification(receiver.url, b"{}", account="nosecret"))
    (seen,) = receiver.seen
    assert "webhook-signature" not in seen.headers and SIGNATURE_HEADER not in seen.headers
    assert seen.headers["webhook-id"] == "41"


# -- Retry-After (CONTRACT §3): a receiver's 429/503 says when to come back


@pytest.mark.parametrize("status", [429, 503])
async def test_a_pause_asked_with_retry_after_reaches_the_dispatcher(
    receiver: Receiver, channel: WebhookChannel, status: int
) -> None:
    receiver.status = status
    receiver.extra = {"Retry-After": "120"}
    with pytest.raises(DeliveryFailed) as seconds:
        await channel.deliver(_notification(receiver.url, b"{}"))
    assert seconds.value.retry_after == 120.0
    receiver.extra = {"Retry-After": formatdate(time.time() + 600, usegmt=True)}
    with pytest.raises(DeliveryFailed) as date:
        await channel.deliver(_notification(receiver.url, b"{}"))
    assert date.value.retry_after is not None and 590.0 <= date.value.retry_after <= 600.0


async def test_retry_after_on_another_status_is_not_a_pause(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    receiver.status = 500
    receiver.extra = {"Retry-After": "120"}
    with pytest.raises(DeliveryFailed) as failed:
        await channel.deliver(_notification(receiver.url, b"{}"))
    assert failed.value.retry_after is None


async def test_the_next_attempt_waits_for_retry_after(
    db_pool: asyncpg.Pool, receiver: Receiver, channel: WebhookChannel
) -> None:
    router = Router(db_pool, channel)
    router.start()
    try:
        receiver.status = 429
        receiver.extra = {"Retry-After": "300"}
        before = utcnow()
        n = await router.finish(_message(receiver.url, n=7))
        await eventually(_attempts(db_pool, n.id, 1), "the first attempt")
        row = await _row(db_pool, n.id)
        assert row["done_at"] is None and row["last_error"] == "HTTP 429"
        # Not the ~1 s of the first backoff: the 300 s the receiver asked.
        assert row["next_attempt_at"] >= before + timedelta(seconds=300)
        assert row["next_attempt_at"] <= utcnow() + timedelta(seconds=MAX_RETRY_SECONDS)

        receiver.status = 200
        router.retry_due(301.0)
        await eventually(_done(db_pool, n.id), "the row to be done")
        assert len(receiver.seen) == 2
        assert receiver.seen[0].headers["webhook-id"] == receiver.seen[1].headers["webhook-id"]
    finally:
        await router.stop()
