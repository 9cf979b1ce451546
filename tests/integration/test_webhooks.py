"""DLR webhooks for real: outbox rows in PostgreSQL, signed HTTP POSTs over
127.0.0.1 to the webhook receiver simulator, retries, and a restart.

The dispatcher runs on a virtual monotonic clock so that a retry comes due
when the test moves the clock, not after real seconds of backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from smsrouter.connectors.webhooks import SIGNATURE_HEADER, WebhookChannel
from smsrouter.router import store
from smsrouter.router.accounts import AccountDirectory
from smsrouter.router.config import AccountConfig
from smsrouter.router.messages import Message, Status, new_message_id, utcnow
from smsrouter.router.notifications import (
    WEBHOOK,
    DeliveryFailed,
    Dispatcher,
    OutboxPlanner,
    backoff,
)
from smsrouter.router.store import (
    CommitListeners,
    Finished,
    GroupCommit,
    InsertMessage,
    MessageEnded,
    Notification,
    OutboxRetry,
)
from smsrouter.sims.webhook import WebhookReceiver
from tests.http_apps import serving
from tests.tools import kept_notifications

SECRET = "whsec-3f9a1c"
WAIT = 5.0  # bound on every wait; none is expected to come close
ACCOUNTS = AccountDirectory(
    [
        AccountConfig(id="acme", webhook_secret=SECRET),
        AccountConfig(id="nosecret"),
    ]
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _expected_signature(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def _message(callback_url: str | None, *, account: str = "acme", n: int = 0) -> Message:
    return Message(
        id=new_message_id(),
        account_id=account,
        ingress="http",
        sender="+14155550101",
        recipient=f"+1415555{n:04d}",
        body=f"hello {n}",
        encoding="gsm7",
        data_coding=0,
        parts=1,
        price=Decimal("0.0062"),
        created_at=datetime.now(UTC),
        client_ref=f"ref-{n}",
        callback_url=callback_url,
    )


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def _row(pool: asyncpg.Pool, outbox_id: int) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT attempts, next_attempt_at, last_error, done_at, payload FROM outbox WHERE id = $1",
        outbox_id,
    )
    assert row is not None
    return row


def _attempts(pool: asyncpg.Pool, outbox_id: int, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await pool.fetchval("SELECT attempts FROM outbox WHERE id = $1", outbox_id) == n

    return check


def _done(pool: asyncpg.Pool, outbox_id: int) -> Callable[[], Awaitable[bool]]:
    """The row is pending no more: a delivered row leaves the outbox (a
    store that keeps it marks it done)."""

    async def check() -> bool:
        return (
            await pool.fetchval(
                "SELECT coalesce((SELECT done_at IS NOT NULL FROM outbox WHERE id = $1), true)",
                outbox_id,
            )
            is True
        )

    return check


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = WebhookReceiver(secret=SECRET)
    await r.start("127.0.0.1", 0)
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def channel() -> AsyncIterator[WebhookChannel]:
    c = WebhookChannel(ACCOUNTS.get, timeout=2.0)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


class Created(list[Notification]):
    """A commit listener that keeps the notifications it is told of."""

    async def plan_notifications(
        self, conn: asyncpg.Connection, ended: list[Finished]
    ) -> list[Notification]:
        return []

    def notifications_created(self, created: list[Notification]) -> None:
        self.extend(created)

    def commit_failed(self, created: list[Notification], in_doubt: bool) -> None:
        pass

    def settled(self) -> None:
        pass


class Router:
    """The notification half of the daemon: writer → outbox → dispatcher → HTTP."""

    def __init__(self, pool: asyncpg.Pool, channel: WebhookChannel) -> None:
        self.pool = pool
        self.clock = FakeClock()
        self.created = Created()
        listeners = CommitListeners(OutboxPlanner(72), self.created)
        self.writer = GroupCommit(pool, listener=listeners)
        self.dispatcher = Dispatcher(
            writer=self.writer,
            channels={WEBHOOK: channel},
            clock=self.clock,
            rng=random.Random(5),
        )
        listeners.add(self.dispatcher)

    def start(self) -> None:
        self.writer.start()
        self.dispatcher.start()

    async def stop(self) -> None:
        await asyncio.wait_for(self.dispatcher.stop(timeout=1.0), WAIT)
        await asyncio.wait_for(self.writer.stop(), WAIT)

    async def finish(self, m: Message, status: Status = Status.UNDELIVERED) -> Notification:
        """Accept a message and end it: its webhook row is created and handed on."""
        before = len(self.created)
        await self.writer.run(InsertMessage([m]))
        await self.writer.run(MessageEnded(m.id, status, "dlr:001", utcnow(), "sim-a"))
        assert len(self.created) == before + 1
        return self.created[-1]

    def retry_due(self, seconds: float) -> None:
        """Move the dispatcher's clock and wake it."""
        self.clock.advance(seconds)
        self.dispatcher.add([])


@pytest.fixture
async def router(db_pool: asyncpg.Pool, channel: WebhookChannel) -> AsyncIterator[Router]:
    r = Router(db_pool, channel)
    r.start()
    try:
        yield r
    finally:
        await r.stop()


def _notification(target: str, payload: bytes, *, account: str = "acme") -> Notification:
    now = utcnow()
    return Notification(
        id=1,
        kind=WEBHOOK,
        account_id=account,
        message_id=None,
        target=target,
        payload=payload,
        attempts=0,
        next_attempt_at=now,
        expires_at=now + timedelta(hours=1),
    )


async def test_callback_is_signed_with_the_account_secret_and_row_is_done(
    db_pool: asyncpg.Pool, receiver: WebhookReceiver, router: Router
) -> None:
    m = _message(receiver.url, n=1)
    n = await router.finish(m)
    payload = await db_pool.fetchval("SELECT payload FROM outbox WHERE id = $1", n.id)
    (cb,) = await receiver.wait_for(1, WAIT)
    await eventually(_done(db_pool, n.id), "the row to be done")
    assert len(receiver.callbacks) == 1  # one attempt
    # The exact bytes of the outbox row went out, signed with the secret.
    assert cb.raw == n.payload
    assert payload in (None, n.payload)  # None: already delivered and gone
    assert SIGNATURE_HEADER == "X-Smsrouter-Signature"  # the name the receiver reads
    assert cb.signature == _expected_signature(SECRET, cb.raw)
    assert cb.signature_ok
    assert set(cb.body) == {
        "id",
        "client_ref",
        "from",
        "to",
        "status",
        "error_code",
        "carrier",
        "parts",
        "done_at",
    }
    assert cb.body["id"] == str(m.id)
    assert cb.body["client_ref"] == "ref-1"
    assert (cb.body["from"], cb.body["to"]) == ("+14155550101", "+14155550001")
    assert (cb.body["status"], cb.body["error_code"], cb.body["carrier"]) == (
        "undelivered",
        "dlr:001",
        "sim-a",
    )
    assert cb.body["parts"] == 1
    assert cb.body["done_at"].endswith("Z")


async def test_signature_does_not_verify_with_another_secret(
    receiver: WebhookReceiver, channel: WebhookChannel
) -> None:
    receiver.secret = "not-the-account-secret"
    n = _notification(receiver.url, b'{"id":"a","status":"delivered"}')
    await channel.deliver(n)
    (cb,) = await receiver.wait_for(1, WAIT)
    assert cb.signature == _expected_signature(SECRET, n.payload)
    assert not cb.signature_ok


async def test_account_without_a_secret_sends_no_signature(
    receiver: WebhookReceiver, channel: WebhookChannel
) -> None:
    n = _notification(receiver.url, b'{"id":"b"}', account="nosecret")
    await channel.deliver(n)
    (cb,) = await receiver.wait_for(1, WAIT)
    assert cb.signature is None and cb.raw == b'{"id":"b"}'


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_any_2xx_is_delivered(
    receiver: WebhookReceiver, channel: WebhookChannel, status: int
) -> None:
    receiver.status = status
    await channel.deliver(_notification(receiver.url, b"{}"))
    assert len(receiver.callbacks) == 1


@pytest.mark.parametrize("status", [400, 404, 410, 500, 503])
async def test_other_statuses_fail_the_attempt(
    receiver: WebhookReceiver, channel: WebhookChannel, status: int
) -> None:
    receiver.status = status
    with pytest.raises(DeliveryFailed, match=f"^HTTP {status}$"):
        await channel.deliver(_notification(receiver.url, b"{}"))
    assert len(receiver.callbacks) == 1


@pytest.fixture
async def redirecting_receiver() -> AsyncIterator[tuple[str, list[str]]]:
    """POST /dlr answers a redirect to /landing (status from ?status=), which
    answers 200 to anything; returns the URL base and the requests seen."""
    seen: list[str] = []

    async def dlr(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        await request.read()
        status = int(request.query["status"])
        return web.Response(status=status, headers={"Location": "/landing"})

    async def landing(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/dlr", dlr)
    app.router.add_route("*", "/landing", landing)
    async with serving(app) as base:
        yield base, seen


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_not_a_delivery(
    redirecting_receiver: tuple[str, list[str]], channel: WebhookChannel, status: int
) -> None:
    # Followed, a 301/302/303 turns the POST into a body-less GET whose 200
    # would mark the callback delivered though the app never got it (and a
    # redirect could point the signed body anywhere): any 3xx is a failure.
    base, seen = redirecting_receiver
    with pytest.raises(DeliveryFailed, match=f"^HTTP {status}$"):
        await channel.deliver(_notification(f"{base}/dlr?status={status}", b'{"id":"r"}'))
    assert seen == ["POST /dlr"]


async def test_receiver_failing_twice_gets_the_callback_in_the_end(
    db_pool: asyncpg.Pool, receiver: WebhookReceiver, router: Router
) -> None:
    twin = random.Random(5)  # the dispatcher's rng: the same delays
    receiver.status = 500
    n = await router.finish(_message(receiver.url, n=2))
    await receiver.wait_for(1, WAIT)
    await eventually(_attempts(db_pool, n.id, 1), "the first failure")
    row = await _row(db_pool, n.id)
    assert row["done_at"] is None and row["last_error"] == "HTTP 500"
    payload = row["payload"]

    router.retry_due(backoff(0, twin))
    await receiver.wait_for(2, WAIT)
    await eventually(_attempts(db_pool, n.id, 2), "the second failure")
    row = await _row(db_pool, n.id)
    assert row["done_at"] is None and row["last_error"] == "HTTP 500"

    receiver.status = 200
    router.retry_due(backoff(1, twin))
    await receiver.wait_for(3, WAIT)
    await eventually(_done(db_pool, n.id), "the row to be done")
    # Every try carried the same body and signature: receivers dedupe on id + status.
    assert len(receiver.callbacks) == 3
    assert {cb.raw for cb in receiver.callbacks} == {payload}
    assert all(cb.signature_ok for cb in receiver.callbacks)


async def test_receiver_down_fails_the_attempt(channel: WebhookChannel) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/dlr"
    with pytest.raises(DeliveryFailed, match=r"^cannot connect to .*: Connection refused$"):
        await channel.deliver(_notification(url, b"{}"))


async def test_receiver_down_is_retried_later_and_delivered_when_it_is_back(
    db_pool: asyncpg.Pool, router: Router
) -> None:
    port = _closed_port()
    before = utcnow()
    n = await router.finish(_message(f"http://127.0.0.1:{port}/dlr", n=3))
    await eventually(_attempts(db_pool, n.id, 1), "the failed attempt")
    row = await _row(db_pool, n.id)
    assert row["done_at"] is None
    assert row["last_error"].startswith(f"cannot connect to http://127.0.0.1:{port}")
    # Later, not now: at least the first retry's floor after the failure.
    assert row["next_attempt_at"] >= before + timedelta(seconds=0.5)

    back = WebhookReceiver(secret=SECRET)
    await back.start("127.0.0.1", port)
    try:
        router.retry_due(1.0)  # the first retry's ceiling
        (cb,) = await back.wait_for(1, WAIT)
        await eventually(_done(db_pool, n.id), "the row to be done")
    finally:
        await back.stop()
    assert cb.signature_ok and cb.raw == row["payload"]
    assert len(back.callbacks) == 1
    assert await store.pending_notifications(db_pool) == []


@pytest.fixture
async def silent_receiver() -> AsyncIterator[str]:
    """Accepts connections and reads requests, never answers."""
    connections: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/dlr"
    finally:
        for w in connections:
            w.close()
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT)


async def test_receiver_that_never_answers_times_out(silent_receiver: str) -> None:
    channel = WebhookChannel(ACCOUNTS.get, timeout=0.3)
    await channel.start()
    try:
        with pytest.raises(DeliveryFailed, match=r"^timed out"):
            await asyncio.wait_for(channel.deliver(_notification(silent_receiver, b"{}")), WAIT)
    finally:
        await channel.stop()


async def test_rows_pending_at_restart_are_delivered_by_a_new_dispatcher(
    db_pool: asyncpg.Pool, receiver: WebhookReceiver, channel: WebhookChannel
) -> None:
    # Before the "crash": two messages end, their notification batches are
    # committed, and no dispatcher ever runs.
    created = Created()
    writer = GroupCommit(db_pool, listener=CommitListeners(OutboxPlanner(72), created))
    writer.start()
    due_now, due_later = _message(receiver.url, n=4), _message(receiver.url, n=5)
    later = utcnow() + timedelta(hours=1)
    for m in (due_now, due_later):
        await writer.run(InsertMessage([m]))
        await writer.run(MessageEnded(m.id, Status.DELIVERED, "", utcnow(), "sim-b"))
    first, second = created
    # What a start finds: the batches become outbox rows, under the ids
    # the notifications were planned with.
    kept = await kept_notifications(db_pool)
    assert [(p.id, p.attempts, p.payload) for p in kept] == [
        (first.id, 0, first.payload),
        (second.id, 0, second.payload),
    ]
    # And one of them had already failed 3 times and is due again in an hour.
    for _ in range(3):
        await writer.run(OutboxRetry(second.id, later, "HTTP 503"))
    await asyncio.wait_for(writer.stop(), WAIT)

    pending = await store.pending_notifications(db_pool)
    assert [(p.id, p.attempts) for p in pending] == [(first.id, 0), (second.id, 3)]
    assert [p.target for p in pending] == [receiver.url, receiver.url]
    assert pending[1].next_attempt_at == later

    # The restart: a new writer and dispatcher, fed from the table as the
    # daemon does on start.
    router = Router(db_pool, channel)
    router.start()
    try:
        router.dispatcher.add(pending)
        (cb,) = await receiver.wait_for(1, WAIT)
        await eventually(_done(db_pool, first.id), "the due row to be done")
        assert cb.body["id"] == str(due_now.id) and cb.body["status"] == "delivered"
        assert cb.signature_ok
        # The other keeps its time: not attempted before its hour.
        await asyncio.sleep(0.05)
        assert len(receiver.callbacks) == 1
        row = await _row(db_pool, second.id)
        assert (row["attempts"], row["done_at"]) == (3, None)

        router.retry_due(3600)
        await receiver.wait_for(2, WAIT)
        await eventually(_done(db_pool, second.id), "the later row to be done")
    finally:
        await router.stop()
    assert receiver.callbacks[1].body["id"] == str(due_later.id)
    assert len(receiver.callbacks) == 2
    assert await store.pending_notifications(db_pool) == []


# ------------------------------------------------ refused callback addresses


def _metric(result: str) -> float:
    value = REGISTRY.get_sample_value("smsrouter_callbacks_total", {"result": result})
    return value or 0.0


@pytest.fixture
async def denying_channel() -> AsyncIterator[WebhookChannel]:
    c = WebhookChannel(ACCOUNTS.get, timeout=2.0, deny_private_networks=True)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


@pytest.mark.parametrize("host", ["127.1", "0x7f.1", "2130706433", "localhost.", "[::1]"])
async def test_a_refused_callback_is_given_up_at_once_not_retried(
    db_pool: asyncpg.Pool,
    receiver: WebhookReceiver,
    denying_channel: WebhookChannel,
    host: str,
) -> None:
    # The receiver listens where the URL points: a client that read `127.1`
    # as 127.0.0.1 and connected would deliver it, and the test would fail.
    refused_before, retry_before = _metric("refused"), _metric("retry")
    router = Router(db_pool, denying_channel)
    router.start()
    try:
        n = await router.finish(_message(f"http://{host}:{receiver.port}/dlr", n=7))
        await eventually(_done(db_pool, n.id), "the row to be given up")
        row = await _row(db_pool, n.id)
        assert row["attempts"] == 1
        assert row["last_error"].startswith("refused: ")
        assert row["last_error"].endswith("is a private network address")
        assert _metric("refused") == refused_before + 1
        assert _metric("retry") == retry_before
        # Not retried, however long the clock runs.
        router.retry_due(72 * 3600)
        await asyncio.sleep(0.1)
        assert (await _row(db_pool, n.id))["attempts"] == 1
        assert router.dispatcher.pending == 0
    finally:
        await router.stop()
    assert receiver.callbacks == []
    assert await store.pending_notifications(db_pool) == []


async def test_a_callback_url_no_client_can_use_is_given_up_at_once(
    db_pool: asyncpg.Pool, router: Router
) -> None:
    # An older row's URL, from before the API checked it: refused whatever
    # deny_private_networks says.
    n = await router.finish(_message("ftp://apps.example/dlr", n=8))
    await eventually(_done(db_pool, n.id), "the row to be given up")
    row = await _row(db_pool, n.id)
    assert row["attempts"] == 1
    assert row["last_error"] == (
        "refused: bad URL 'ftp://apps.example/dlr': scheme must be http or https"
    )
