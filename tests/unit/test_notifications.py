"""The durable outbox's planner, backoff and dispatcher.

`backoff` is pure. The planner works from what the statements that end
messages return of them (store.notices), and writes a notification batch,
so it runs against a real PostgreSQL from message rows as they stand once
ended; a batch turned back into outbox rows must give the same rows.
The dispatcher runs against a real
PostgreSQL (its writes go through a GroupCommit on the test's database)
with test channels implementing the `Channel` protocol, a virtual
monotonic clock and a seeded random generator, so that every retry time it
computes can be predicted exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest
import structlog
from prometheus_client import REGISTRY

from smsrouter.router.messages import utcnow
from smsrouter.router.notifications import (
    ACCOUNT_FAILURES_BEFORE_BACKOFF,
    SMPP_RECEIPT,
    WEBHOOK,
    DeliveryFailed,
    DeliveryRefused,
    Dispatcher,
    NotAvailable,
    OutboxPlanner,
    backoff,
)
from smsrouter.router.payloads import SmppReceipt
from smsrouter.router.store import (
    GroupCommit,
    Notification,
    OutboxDone,
    OutboxRetry,
    StoreError,
    writes,
)
from smsrouter.router.store.notices import INSERT_BATCH, expand_batches
from smsrouter.router.store.operations import BatchSettled

# Every wait in this file is bounded by this; none is expected to come close.
WAIT = 5.0

CONTRACT_WEBHOOK_FIELDS = {
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


# ---------------------------------------------------------------- backoff


@pytest.mark.parametrize("seed", range(200))
def test_first_retry_is_between_half_a_second_and_one(seed: int) -> None:
    assert 0.5 <= backoff(0, random.Random(seed)) <= 1.0


def test_backoff_doubles_with_each_attempt_until_the_cap() -> None:
    # Same seed, same jitter draw: only the ceiling changes with attempts.
    for seed in range(20):
        first = backoff(0, random.Random(seed))
        for attempts in range(1, 10):  # ceilings 2 s … 512 s, all under the cap
            assert backoff(attempts, random.Random(seed)) == pytest.approx(first * 2**attempts)


@pytest.mark.parametrize("attempts", [10, 11, 20, 100, 432, 1023, 1024, 5000])
def test_backoff_is_capped_at_ten_minutes(attempts: int) -> None:
    # 432 tries is what 72 h of 10-min retries takes; larger `retry_hours`
    # (or a row restored with a large `attempts`) must not overflow either.
    rng = random.Random(attempts)
    for _ in range(50):
        assert 300.0 <= backoff(attempts, rng) <= 600.0


@pytest.mark.parametrize("attempts", [0, 1, 3, 6, 9, 12])
def test_backoff_is_jittered_over_the_upper_half_of_its_ceiling(attempts: int) -> None:
    ceiling = min(600.0, 2.0**attempts)
    rng = random.Random(1234)
    draws = [backoff(attempts, rng) for _ in range(2000)]
    assert all(ceiling / 2 <= d <= ceiling for d in draws)
    # Spread over the whole half-interval, not a constant.
    assert len(set(draws)) > 1900
    assert min(draws) < ceiling * 0.52
    assert max(draws) > ceiling * 0.98


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    a, b = random.Random(99), random.Random(99)
    assert [backoff(n, a) for n in range(15)] == [backoff(n, b) for n in range(15)]
    assert [backoff(3, random.Random(1)) for _ in range(3)] != [
        backoff(3, random.Random(2)) for _ in range(3)
    ]


# ---------------------------------------------------------------- planner

DONE_AT = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
CREATED_AT = datetime(2024, 5, 1, 12, 30, 0, tzinfo=UTC)
MESSAGE_ID = uuid.UUID("0190f3a4-5b6c-7d8e-9f00-112233445566")


async def _ended(pool: asyncpg.Pool, **kw: object) -> uuid.UUID:
    """A message row as it stands once it has ended (what the planner reads)."""
    fields: dict[str, object] = {
        "id": MESSAGE_ID,
        "account_id": "acme",
        "ingress": "http",
        "sender": "+14155550101",
        "recipient": "+14155550123",
        "body": "Your code is 123456, valid for ten minutes",
        "encoding": "gsm7",
        "data_coding": 0,
        "parts": 2,
        "price": 0,
        "status": "undelivered",
        "error_code": "dlr:001",
        "carrier": "sim-a",
        "client_ref": "order-77",
        "callback_url": "https://apps.example/dlr",
        "registered_delivery": 0,
        "created_at": CREATED_AT,
        "done_at": DONE_AT,
    }
    fields.update(kw)
    columns = ", ".join(fields)
    values = ", ".join(f"${i}" for i in range(1, len(fields) + 1))
    await pool.execute(f"INSERT INTO messages ({columns}) VALUES ({values})", *fields.values())
    return fields["id"]  # type: ignore[return-value]


async def _plan(
    pool: asyncpg.Pool, ids: list[uuid.UUID], retry_hours: float = 72
) -> list[Notification]:
    """What the planner makes of these ended messages, from what an ending
    statement returns of each (`writes._FINISHED_OF_M`)."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT {writes._FINISHED_OF_M}"
            " FROM unnest($1::uuid[]) WITH ORDINALITY AS e(id, n) JOIN messages m ON m.id = e.id"
            " ORDER BY e.n",
            ids,
        )
        return await OutboxPlanner(retry_hours).plan_notifications(conn, writes._finished(rows))


async def _expanded(pool: asyncpg.Pool, batch: int) -> dict[int, asyncpg.Record]:
    """The outbox rows the batch becomes when its notifications were not
    all settled (a crash, a stop), by id; the batch is gone."""
    async with pool.acquire() as conn:
        written = await expand_batches(conn, None, ids=[batch])
        rows = await conn.fetch("SELECT * FROM outbox ORDER BY id")
    assert written == len(rows)
    assert await pool.fetchval("SELECT count(*) FROM notification_batches") == 0
    return {r["id"]: r for r in rows}


async def test_webhook_row_carries_exactly_the_contract_fields(db_pool: asyncpg.Pool) -> None:
    message_id = await _ended(db_pool)
    before = utcnow()
    (n,) = await _plan(db_pool, [message_id])
    assert (n.kind, n.account_id, n.message_id, n.target, n.attempts) == (
        WEBHOOK,
        "acme",
        message_id,
        "https://apps.example/dlr",
        0,
    )
    assert json.loads(n.payload) == {
        "id": "0190f3a4-5b6c-7d8e-9f00-112233445566",
        "client_ref": "order-77",
        "from": "+14155550101",
        "to": "+14155550123",
        "status": "undelivered",
        "error_code": "dlr:001",
        "carrier": "sim-a",
        "parts": 2,
        "done_at": "2024-05-01T12:30:15.250000Z",
    }
    # Compact, in the contract's order, like every JSON body we write.
    assert n.payload.startswith(b'{"id":"0190f3a4-5b6c-7d8e-9f00-112233445566","client_ref":')
    assert n.expires_at == DONE_AT + timedelta(hours=72)
    assert n.next_attempt_at >= before - timedelta(seconds=1)
    batch = await db_pool.fetchrow("SELECT * FROM notification_batches")
    assert (batch["id"], batch["message_ids"], batch["kinds"], batch["outbox_ids"]) == (
        n.batch,
        [message_id],
        [WEBHOOK],
        [n.id],
    )
    assert await db_pool.fetchval("SELECT count(*) FROM outbox") == 0
    stored = (await _expanded(db_pool, n.batch))[n.id]
    assert (bytes(stored["payload"]), stored["target"], stored["expires_at"]) == (
        n.payload,
        n.target,
        n.expires_at,
    )
    assert stored["done_at"] is None and stored["owner"] is None and stored["attempts"] == 0


async def test_webhook_body_keeps_null_fields(db_pool: asyncpg.Pool) -> None:
    message_id = await _ended(
        db_pool, client_ref=None, error_code=None, carrier=None, status="rejected"
    )
    (n,) = await _plan(db_pool, [message_id])
    body = json.loads(n.payload)
    assert set(body) == CONTRACT_WEBHOOK_FIELDS
    assert body["client_ref"] is None and body["error_code"] is None and body["carrier"] is None
    assert body["status"] == "rejected"


@pytest.mark.parametrize(
    "text",
    [
        'quote " backslash \\ slash /',
        "new\nline\ttab\x01control\x1f",
        "emoji 🎉 and ü and 中文 and percent %s %%",
        '{"json": "inside"}',
    ],
)
async def test_payload_strings_are_escaped_as_json(db_pool: asyncpg.Pool, text: str) -> None:
    """Whatever an app put in client_ref or a message comes back intact."""
    message_id = await _ended(
        db_pool, client_ref=text, body=text, ingress="smpp", registered_delivery=1
    )
    webhook, receipt = await _plan(db_pool, [message_id])
    assert json.loads(webhook.payload)["client_ref"] == text
    assert msgspec.json.decode(receipt.payload, type=SmppReceipt).text == text[:20]
    # Turned back into rows, the same payloads under the same ids.
    rows = await _expanded(db_pool, webhook.batch)
    assert {i: (r["kind"], bytes(r["payload"])) for i, r in rows.items()} == {
        webhook.id: (WEBHOOK, webhook.payload),
        receipt.id: (SMPP_RECEIPT, receipt.payload),
    }


async def test_smpp_receipt_row_for_an_esme_that_asked_for_one(db_pool: asyncpg.Pool) -> None:
    message_id = await _ended(
        db_pool, ingress="smpp", registered_delivery=1, callback_url=None, status="delivered"
    )
    (n,) = await _plan(db_pool, [message_id], retry_hours=1.5)
    assert (n.kind, n.account_id, n.message_id, n.target) == (
        SMPP_RECEIPT,
        "acme",
        message_id,
        None,
    )
    assert n.expires_at == DONE_AT + timedelta(hours=1.5)
    receipt = msgspec.json.decode(n.payload, type=SmppReceipt)
    assert receipt == SmppReceipt(
        id=str(message_id),
        sender="+14155550101",
        recipient="+14155550123",
        status="delivered",
        error_code="dlr:001",
        submit_date=CREATED_AT,
        done_date=DONE_AT,
        text="Your code is 123456,",  # the first 20 characters (SMPP receipt `text:`)
    )


async def test_smpp_message_with_a_callback_url_and_a_receipt_gets_both(
    db_pool: asyncpg.Pool,
) -> None:
    message_id = await _ended(db_pool, ingress="smpp", registered_delivery=1)
    notifications = await _plan(db_pool, [message_id])
    assert [n.kind for n in notifications] == [WEBHOOK, SMPP_RECEIPT]
    assert notifications[0].id < notifications[1].id


@pytest.mark.parametrize(
    ("registered_delivery", "status", "receipts"),
    [
        (0, "delivered", 0),
        (0, "undelivered", 0),
        (1, "delivered", 1),
        (1, "undelivered", 1),
        (2, "delivered", 0),  # failure receipts only (SMPP 3.4 §5.2.17)
        (2, "expired", 1),
        (3, "undelivered", 0),  # bits 0-1 = 3 is reserved
        (0x11, "delivered", 1),  # higher bits (SME acks) do not matter here
    ],
)
async def test_smpp_receipt_follows_registered_delivery(
    db_pool: asyncpg.Pool, registered_delivery: int, status: str, receipts: int
) -> None:
    message_id = await _ended(
        db_pool,
        ingress="smpp",
        callback_url=None,
        registered_delivery=registered_delivery,
        status=status,
    )
    assert len(await _plan(db_pool, [message_id])) == receipts


@pytest.mark.parametrize(
    "kw",
    [
        {"callback_url": None},  # HTTP without a callback
        {"callback_url": ""},  # an empty callback is no callback
        {"callback_url": None, "registered_delivery": 1},  # receipts are SMPP only
        {"callback_url": None, "ingress": "smpp", "registered_delivery": 0},
    ],
)
async def test_no_row_without_a_callback_or_a_requested_receipt(
    db_pool: asyncpg.Pool, kw: dict[str, object]
) -> None:
    message_id = await _ended(db_pool, **kw)
    assert await _plan(db_pool, [message_id]) == []
    assert await db_pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert await db_pool.fetchval("SELECT count(*) FROM notification_batches") == 0


async def test_one_row_per_message_in_the_order_given(db_pool: asyncpg.Pool) -> None:
    a = await _ended(db_pool, id=uuid.uuid4(), done_at=DONE_AT)
    b = await _ended(db_pool, id=uuid.uuid4(), callback_url=None)
    c = await _ended(db_pool, id=uuid.uuid4(), done_at=DONE_AT + timedelta(minutes=5))
    notifications = await _plan(db_pool, [c, b, a], retry_hours=24)
    assert [n.message_id for n in notifications] == [c, a]
    assert [n.expires_at for n in notifications] == [
        DONE_AT + timedelta(minutes=5, hours=24),
        DONE_AT + timedelta(hours=24),
    ]
    assert notifications[0].id < notifications[1].id


# ---------------------------------------------------------------- dispatcher


class FakeClock:
    """The dispatcher's monotonic clock; moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedChannel:
    """A channel that answers each call from a script, then succeeds.

    `outcomes[i]` is raised by the i-th call (None = delivered); `gate`, when
    given, holds every call until it is set.
    """

    def __init__(
        self,
        outcomes: list[BaseException | None] | None = None,
        *,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.outcomes = list(outcomes or [])
        self.gate = gate
        self.calls: list[int] = []
        self.delivered: list[int] = []
        self.cancelled: list[int] = []
        self.active = 0
        self.max_active = 0

    async def deliver(self, notification: Notification) -> None:
        self.calls.append(notification.id)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0)
            outcome = self.outcomes.pop(0) if self.outcomes else None
            if outcome is not None:
                raise outcome
            self.delivered.append(notification.id)
        except asyncio.CancelledError:
            self.cancelled.append(notification.id)
            raise
        finally:
            self.active -= 1


class BindChannel:
    """SMPP receipts: NotAvailable unless the account has a receiver bind."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.refused: list[int] = []
        self.delivered: list[int] = []

    async def deliver(self, notification: Notification) -> None:
        if notification.account_id not in self.bound:
            self.refused.append(notification.id)
            raise NotAvailable(notification.account_id)
        await asyncio.sleep(0)
        self.delivered.append(notification.id)


def _metric(result: str) -> float:
    value = REGISTRY.get_sample_value("smsrouter_callbacks_total", {"result": result})
    return value or 0.0


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    """Poll `check` until true; fail after WAIT seconds."""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                result = check()
                if not isinstance(result, bool):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def _insert(
    pool: asyncpg.Pool,
    *,
    kind: str = WEBHOOK,
    account: str = "acme",
    target: str | None = "http://127.0.0.1:9/dlr",
    payload: bytes = b'{"id":"x"}',
    expires_at: datetime | None = None,
) -> Notification:
    now = utcnow()
    row = await pool.fetchrow(
        "INSERT INTO outbox (kind, account_id, message_id, target, payload, next_attempt_at,"
        " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " RETURNING id, kind, account_id, message_id, target, payload, attempts,"
        "   next_attempt_at, expires_at",
        kind,
        account,
        uuid.uuid4(),
        target if kind == WEBHOOK else None,
        payload,
        now,
        expires_at or now + timedelta(hours=72),
    )
    return Notification(**dict(row))


async def _row(pool: asyncpg.Pool, outbox_id: int) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT attempts, next_attempt_at, last_error, done_at FROM outbox WHERE id = $1",
        outbox_id,
    )
    assert row is not None
    return row


def _delivered(pool: asyncpg.Pool, *ids: int) -> Callable[[], Awaitable[bool]]:
    """A delivered notification has left the outbox."""

    async def check() -> bool:
        n = await pool.fetchval(
            "SELECT count(*) FROM outbox WHERE id = ANY($1::bigint[])", list(ids)
        )
        return n == 0

    return check


def _given_up(pool: asyncpg.Pool, *ids: int) -> Callable[[], Awaitable[bool]]:
    """A notification given up stays in the outbox, done, with its error."""

    async def check() -> bool:
        n = await pool.fetchval(
            "SELECT count(*) FROM outbox WHERE id = ANY($1::bigint[]) AND done_at IS NOT NULL",
            list(ids),
        )
        return n == len(ids)

    return check


def _attempts(pool: asyncpg.Pool, outbox_id: int, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await pool.fetchval("SELECT attempts FROM outbox WHERE id = $1", outbox_id) == n

    return check


@pytest.fixture
async def writer(db_pool: asyncpg.Pool) -> AsyncIterator[GroupCommit]:
    w = GroupCommit(db_pool)
    w.start()
    try:
        yield w
    finally:
        await asyncio.wait_for(w.stop(), WAIT)


@pytest.fixture
async def make_dispatcher(
    writer: GroupCommit,
) -> AsyncIterator[Callable[..., Dispatcher]]:
    started: list[Dispatcher] = []

    def make(channels: dict[str, object], **kw: object) -> Dispatcher:
        kw.setdefault("rng", random.Random(7))
        d = Dispatcher(writer=writer, channels=channels, **kw)  # type: ignore[arg-type]
        d.start()
        started.append(d)
        return d

    yield make
    for d in started:
        await asyncio.wait_for(d.stop(timeout=0.5), WAIT)


async def test_delivered_notification_leaves_the_outbox(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    ok_before = _metric("ok")
    channel = ScriptedChannel()
    d = make_dispatcher({WEBHOOK: channel}, clock=FakeClock())
    n = await _insert(db_pool)
    d.add([n])
    await eventually(_delivered(db_pool, n.id), "the row to leave the outbox")
    assert channel.calls == [n.id] and channel.delivered == [n.id]
    assert _metric("ok") == ok_before + 1
    assert d.pending == 0


async def test_failed_delivery_is_retried_with_backoff_until_it_succeeds(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    retry_before = _metric("retry")
    clock = FakeClock()
    # The dispatcher's rng and a twin give the delays it will draw.
    twin = random.Random(42)
    first_delay, second_delay = backoff(0, twin), backoff(1, twin)
    channel = ScriptedChannel([DeliveryFailed("HTTP 503"), DeliveryFailed("HTTP 502")])
    d = make_dispatcher({WEBHOOK: channel}, clock=clock, rng=random.Random(42))
    n = await _insert(db_pool)

    before = utcnow()
    d.add([n])
    await eventually(_attempts(db_pool, n.id, 1), "the first failure to be recorded")
    after = utcnow()
    row = await _row(db_pool, n.id)
    assert row["done_at"] is None
    assert row["last_error"] == "HTTP 503"
    assert before + timedelta(seconds=first_delay) <= row["next_attempt_at"]
    # In the future: the failure's time (between `before` and `after`) plus
    # exactly the delay drawn.
    assert row["next_attempt_at"] <= after + timedelta(seconds=first_delay)
    assert _metric("retry") == retry_before + 1

    # Not due before its time on the dispatcher's clock.
    clock.advance(first_delay - 0.01)
    d.add([])  # wakes the loop
    await asyncio.sleep(0.05)
    assert channel.calls == [n.id]
    assert d.pending == 1

    clock.advance(0.01)
    before = utcnow()
    d.add([])
    await eventually(_attempts(db_pool, n.id, 2), "the second failure to be recorded")
    after = utcnow()
    row = await _row(db_pool, n.id)
    assert row["done_at"] is None
    assert row["last_error"] == "HTTP 502"
    # The second wait is drawn from a ceiling twice the first's.
    assert 1.0 <= second_delay <= 2.0
    assert before + timedelta(seconds=second_delay) <= row["next_attempt_at"]
    assert row["next_attempt_at"] <= after + timedelta(seconds=second_delay)
    assert _metric("retry") == retry_before + 2

    clock.advance(second_delay)
    d.add([])
    await eventually(_delivered(db_pool, n.id), "the third attempt to deliver")
    assert channel.calls == [n.id, n.id, n.id]
    assert channel.delivered == [n.id]
    assert d.pending == 0


async def test_retry_continues_the_backoff_of_a_restored_row(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    # A row read back after a restart with 5 attempts already: its next
    # wait comes from the 6th ceiling (32 s), not from the first.
    n = await _insert(db_pool)
    await db_pool.execute("UPDATE outbox SET attempts = 5 WHERE id = $1", n.id)
    n.attempts = 5
    expected = backoff(5, random.Random(3))
    channel = ScriptedChannel([DeliveryFailed("HTTP 500")])
    d = make_dispatcher({WEBHOOK: channel}, clock=FakeClock(), rng=random.Random(3))
    before = utcnow()
    d.add([n])
    await eventually(_attempts(db_pool, n.id, 6), "the failure to be recorded")
    after = utcnow()
    row = await _row(db_pool, n.id)
    assert 16.0 <= expected <= 32.0
    assert before + timedelta(seconds=expected) <= row["next_attempt_at"]
    assert row["next_attempt_at"] <= after + timedelta(seconds=expected)


async def test_a_channel_bug_does_not_lose_the_row(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    channel = ScriptedChannel([RuntimeError("boom")])
    d = make_dispatcher({WEBHOOK: channel}, clock=FakeClock())
    n = await _insert(db_pool)
    d.add([n])
    await eventually(_attempts(db_pool, n.id, 1), "the failure to be recorded")
    row = await _row(db_pool, n.id)
    assert row["done_at"] is None
    assert row["last_error"] == "RuntimeError('boom')"
    assert d.pending == 1


async def test_a_kind_without_a_channel_is_retried_not_dropped(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    d = make_dispatcher({WEBHOOK: ScriptedChannel()}, clock=FakeClock())
    n = await _insert(db_pool, kind=SMPP_RECEIPT)
    d.add([n])
    await eventually(_attempts(db_pool, n.id, 1), "the failure to be recorded")
    row = await _row(db_pool, n.id)
    assert row["done_at"] is None
    assert row["last_error"] == "no channel for smpp_receipt"


async def test_gives_up_once_the_row_has_expired(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    expired_before = _metric("expired")
    retry_before = _metric("retry")
    clock = FakeClock()
    channel = ScriptedChannel([DeliveryFailed("HTTP 500")] * 10)
    d = make_dispatcher({WEBHOOK: channel}, clock=clock)
    n = await _insert(db_pool, expires_at=utcnow() - timedelta(seconds=1))
    d.add([n])
    await eventually(_given_up(db_pool, n.id), "the row to be given up")
    row = await _row(db_pool, n.id)
    assert row["attempts"] == 1
    assert _metric("expired") == expired_before + 1
    assert _metric("retry") == retry_before
    assert d.pending == 0
    # Nothing is scheduled any more, however long the clock runs.
    clock.advance(3600)
    d.add([])
    await asyncio.sleep(0.05)
    assert channel.calls == [n.id]


async def test_receipts_wait_for_their_account_to_bind_then_go_in_order(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    channel = BindChannel()
    channel.bound.add("other")
    d = make_dispatcher({SMPP_RECEIPT: channel}, clock=FakeClock())
    a1 = await _insert(db_pool, kind=SMPP_RECEIPT, account="acme")
    a2 = await _insert(db_pool, kind=SMPP_RECEIPT, account="acme")
    b1 = await _insert(db_pool, kind=SMPP_RECEIPT, account="other")
    a3 = await _insert(db_pool, kind=SMPP_RECEIPT, account="acme")
    d.add([a1, a2, b1, a3])
    await eventually(_delivered(db_pool, b1.id), "the bound account's receipt")
    await eventually(lambda: len(channel.refused) == 3, "three refusals")
    # Arrives while the account is still unbound: parked behind the others.
    a4 = await _insert(db_pool, kind=SMPP_RECEIPT, account="acme")
    d.add([a4])
    await eventually(lambda: len(channel.refused) == 4, "the fourth refusal")
    assert channel.delivered == [b1.id]
    assert d.pending == 4
    # Parked, not failed: no attempt counted, no backoff, no error.
    for n in (a1, a2, a3, a4):
        row = await _row(db_pool, n.id)
        assert (row["attempts"], row["last_error"], row["done_at"]) == (0, None, None)

    d.account_ready("nobody")  # another account binding changes nothing
    await asyncio.sleep(0.05)
    assert len(channel.refused) == 4

    channel.bound.add("acme")
    d.account_ready("acme")
    await eventually(_delivered(db_pool, a1.id, a2.id, a3.id, a4.id), "the parked receipts")
    assert channel.delivered == [b1.id, a1.id, a2.id, a3.id, a4.id]
    assert len(channel.refused) == 4
    assert d.pending == 0


async def test_backlog_counts_rows_not_done_by_kind(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    # smsrouter_outbox_backlog{kind} reads these counts (CONTRACT §5).
    gate = asyncio.Event()
    webhooks = ScriptedChannel([DeliveryFailed("503")], gate=gate)
    receipts = BindChannel()
    d = make_dispatcher({WEBHOOK: webhooks, SMPP_RECEIPT: receipts}, clock=FakeClock())
    w1 = await _insert(db_pool)
    w2 = await _insert(db_pool)
    r1 = await _insert(db_pool, kind=SMPP_RECEIPT)
    d.add([w1, w2, r1])
    assert (d.backlog(WEBHOOK), d.backlog(SMPP_RECEIPT)) == (2, 1)
    # Read back from the table again: rows already held are not counted twice.
    assert d.add_missing([w1, w2, r1]) == 0
    assert (d.backlog(WEBHOOK), d.backlog(SMPP_RECEIPT)) == (2, 1)

    gate.set()  # w1 fails and waits for its retry, w2 is delivered
    await eventually(lambda: d.backlog(WEBHOOK) == 1, "the delivered row to leave the backlog")
    assert d.backlog(SMPP_RECEIPT) == 1  # parked until its account binds

    receipts.bound.add("acme")
    d.account_ready("acme")
    await eventually(lambda: d.backlog(SMPP_RECEIPT) == 0, "the receipt to leave the backlog")
    assert d.backlog(WEBHOOK) == 1


async def test_concurrency_is_bounded(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    gate = asyncio.Event()
    channel = ScriptedChannel(gate=gate)
    d = make_dispatcher({WEBHOOK: channel}, clock=FakeClock(), concurrency=3)
    # Four accounts: no account's own cap (a quarter of 3, so 1) binds first.
    rows = [await _insert(db_pool, account=f"acct-{i % 4}") for i in range(8)]
    d.add(rows)
    await eventually(lambda: channel.active == 3, "three deliveries in flight")
    await asyncio.sleep(0.05)  # room for the loop to (wrongly) start more
    assert channel.active == 3 and len(channel.calls) == 3
    assert d.pending == 8
    gate.set()
    await eventually(_delivered(db_pool, *(n.id for n in rows)), "every row to be done")
    assert channel.max_active == 3
    assert sorted(channel.delivered) == sorted(n.id for n in rows)


@pytest.mark.parametrize(("concurrency", "rows"), [(4, 2), (1, 1), (1, 3), (2, 5)])
async def test_stop_returns_within_its_timeout_with_a_hung_channel(
    db_pool: asyncpg.Pool, writer: GroupCommit, concurrency: int, rows: int
) -> None:
    hung = ScriptedChannel(gate=asyncio.Event())  # never set
    d = Dispatcher(
        writer=writer,
        channels={WEBHOOK: hung},
        concurrency=concurrency,
        account_concurrency=concurrency,
        clock=FakeClock(),
        rng=random.Random(1),
    )
    d.start()
    notifications = [await _insert(db_pool) for _ in range(rows)]
    d.add(notifications)
    in_flight = min(concurrency, rows)
    await eventually(lambda: hung.active == in_flight, "the deliveries to hang")
    # 0.2 s asked; the bound below only keeps a broken stop() from hanging
    # the suite.
    try:
        await asyncio.wait_for(d.stop(timeout=0.2), 3.0)
    except TimeoutError:
        pytest.fail("Dispatcher.stop() did not return with a hung channel")
    assert sorted(hung.cancelled) == sorted(hung.calls)
    assert len(hung.calls) == in_flight
    assert hung.active == 0
    # Nothing was marked: the rows are still pending for the next start.
    await writer.stop()
    for n in notifications:
        row = await _row(db_pool, n.id)
        assert (row["attempts"], row["last_error"], row["done_at"]) == (0, None, None)


# ------------------------------------------- dispatcher: accounts are isolated
#
# CONTRACT §11: one account's dead receiver must not delay another's
# callbacks. These run on a virtual clock with a writer that only records
# what it is given (no database: what is decided is the order and timing of
# attempts, and each outcome handed to the writer).


class RecordingWriter:
    """Takes outcomes as GroupCommit.submit_then does; settles each at once,
    or, with `hold`, only when `settle()` is called."""

    def __init__(self, *, hold: bool = False) -> None:
        self.ops: list[OutboxDone | OutboxRetry] = []
        self.hold = hold
        self._unsettled: list[Callable[[object, StoreError | None], None]] = []

    def submit_then(
        self, op: OutboxDone | OutboxRetry, settled: Callable[[object, StoreError | None], None]
    ) -> None:
        self.ops.append(op)
        if self.hold:
            self._unsettled.append(settled)
        else:
            settled(None, None)

    def settle(self) -> None:
        unsettled, self._unsettled = self._unsettled, []
        for settled in unsettled:
            settled(None, None)

    def done(self, outbox_id: int) -> OutboxDone | None:
        return next(
            (op for op in self.ops if isinstance(op, OutboxDone) and op.outbox_id == outbox_id),
            None,
        )


class AccountsChannel:
    """A webhook channel whose receivers behave per account: `hung`
    accounts' calls wait for `release`, then time out if the account is
    still hung and go on as the others otherwise; `failing` ones fail,
    `refusing` ones are refused; the others deliver at once."""

    def __init__(self) -> None:
        self.hung: set[str] = set()
        self.failing: set[str] = set()
        self.refusing: set[str] = set()
        self.release = asyncio.Event()
        self.calls: list[tuple[str, int]] = []
        self.delivered: list[tuple[str, int]] = []
        self.active: dict[str, int] = {}
        self.max_active: dict[str, int] = {}

    def calls_of(self, account: str) -> list[int]:
        return [i for a, i in self.calls if a == account]

    async def deliver(self, n: Notification) -> None:
        account = n.account_id
        self.calls.append((account, n.id))
        self.active[account] = self.active.get(account, 0) + 1
        self.max_active[account] = max(self.max_active.get(account, 0), self.active[account])
        try:
            if account in self.hung:
                await self.release.wait()
                if account in self.hung:
                    raise DeliveryFailed("timed out: no complete response within 10 s")
            await asyncio.sleep(0)
            if account in self.refusing:
                raise DeliveryRefused("127.1 is a private network address")
            if account in self.failing:
                raise DeliveryFailed("HTTP 503")
            self.delivered.append((account, n.id))
        finally:
            self.active[account] -= 1


_ids = itertools.count(1)


def _row_of(account: str, *, due_in: float = 0.0, expired: bool = False) -> Notification:
    now = utcnow()
    return Notification(
        next(_ids),
        WEBHOOK,
        account,
        uuid.uuid4(),
        f"http://{account}.example/dlr",
        b"{}",
        0,
        now + timedelta(seconds=due_in),
        now - timedelta(seconds=1) if expired else now + timedelta(hours=72),
    )


@pytest.fixture
async def dispatch() -> AsyncIterator[Callable[..., Dispatcher]]:
    """dispatch(channels, **kw): a started Dispatcher on a RecordingWriter
    (pass writer=... for another) and a FakeClock, stopped afterwards."""
    started: list[Dispatcher] = []

    def make(channels: dict[str, object], **kw: object) -> Dispatcher:
        kw.setdefault("writer", RecordingWriter())
        kw.setdefault("clock", FakeClock())
        kw.setdefault("rng", random.Random(11))
        d = Dispatcher(channels=channels, **kw)  # type: ignore[arg-type]
        d.start()
        started.append(d)
        return d

    yield make
    for d in started:
        await asyncio.wait_for(d.stop(timeout=0.2), WAIT)


async def test_a_hung_receiver_does_not_delay_another_accounts_callbacks(
    dispatch: Callable[..., Dispatcher],
) -> None:
    channel = AccountsChannel()
    channel.hung.add("slow")
    # 8 slots: each account's share is 2 (a quarter).
    d = dispatch({WEBHOOK: channel}, concurrency=8)
    slow = [_row_of("slow") for _ in range(200)]
    d.add(slow)
    # Alone, it borrows idle slots beyond its share, but leaves a share free.
    await eventually(lambda: channel.active.get("slow") == 6, "six attempts in flight")
    await asyncio.sleep(0.05)  # room for the loop to (wrongly) start more
    assert len(channel.calls_of("slow")) == 6

    fast = [_row_of("fast") for _ in range(20)]
    d.add(fast)
    await eventually(lambda: len(channel.delivered) == 20, "the other account's callbacks")
    assert [i for a, i in channel.delivered] == [n.id for n in fast]
    # The hung account got no slot more meanwhile: the rest of its rows
    # wait behind their own account.
    assert channel.active["slow"] == 6 and len(channel.calls_of("slow")) == 6
    assert d.pending == 200


async def test_a_busy_accounts_backlog_waits_behind_its_own_rows(
    dispatch: Callable[..., Dispatcher],
) -> None:
    channel = AccountsChannel()
    channel.hung.add("slow")
    d = dispatch({WEBHOOK: channel}, concurrency=8)
    slow = [_row_of("slow") for _ in range(200)]
    fast = [_row_of("fast") for _ in range(20)]
    d.add(slow)  # the busy account's backlog arrives first
    d.add(fast)
    await eventually(lambda: len(channel.delivered) == 20, "the other account's callbacks")
    # The first callback of the other account waited one turn, no more.
    assert channel.calls.index(("fast", fast[0].id)) == 1
    assert channel.active["slow"] <= 6


async def test_accounts_with_due_rows_take_turns(dispatch: Callable[..., Dispatcher]) -> None:
    channel = AccountsChannel()
    d = dispatch({WEBHOOK: channel}, concurrency=1)  # one slot: strict turns
    a, b, c = [_row_of("a") for _ in range(3)], [_row_of("b") for _ in range(3)], [_row_of("c")]
    d.add(a)
    d.add(b)
    d.add(c)
    await eventually(lambda: len(channel.delivered) == 7, "every row delivered")
    assert [acct for acct, _ in channel.calls] == ["a", "b", "c", "a", "b", "a", "b"]
    # Within an account, its rows keep their order.
    assert channel.calls_of("a") == [n.id for n in a]


async def test_an_account_always_finds_its_share_of_slots(
    dispatch: Callable[..., Dispatcher],
) -> None:
    channel = AccountsChannel()
    channel.hung.update({"a", "b"})
    d = dispatch({WEBHOOK: channel}, concurrency=10, account_concurrency=3)
    d.add([_row_of("a") for _ in range(20)])
    # 10 slots less b's share of 3.
    await eventually(lambda: channel.active.get("a") == 7, "seven attempts in flight")
    d.add([_row_of("b") for _ in range(20)])
    await eventually(lambda: channel.active.get("b") == 3, "b's share in flight")
    await asyncio.sleep(0.05)  # room for the loop to (wrongly) start more
    assert channel.active == {"a": 7, "b": 3}
    assert len(channel.calls) == 10
    channel.hung.clear()
    channel.release.set()  # the receivers answer
    await eventually(lambda: len(channel.delivered) == 40, "every row delivered")
    assert channel.max_active["a"] == 7


async def test_an_account_that_failed_lately_does_not_borrow_slots(
    dispatch: Callable[..., Dispatcher],
) -> None:
    channel = AccountsChannel()
    channel.failing.add("a")
    d = dispatch({WEBHOOK: channel}, concurrency=10, account_concurrency=3)
    d.add([_row_of("a")])
    await eventually(lambda: len(channel.calls) == 1, "the failed attempt")
    channel.failing.clear()
    channel.hung.add("a")
    d.add([_row_of("a") for _ in range(10)])
    await eventually(lambda: channel.active.get("a") == 3, "its share in flight")
    await asyncio.sleep(0.05)
    assert channel.active["a"] == 3


def test_an_accounts_share_is_a_quarter_of_the_slots_but_at_least_one() -> None:
    writer = RecordingWriter()
    assert Dispatcher(writer=writer, channels={}, concurrency=64)._account_share == 16
    assert Dispatcher(writer=writer, channels={}, concurrency=3)._account_share == 1
    with pytest.raises(ValueError):
        Dispatcher(writer=writer, channels={}, concurrency=0)


async def test_a_failing_account_backs_off_then_probes_and_resets_on_success(
    dispatch: Callable[..., Dispatcher],
) -> None:
    assert ACCOUNT_FAILURES_BEFORE_BACKOFF == 3
    clock = FakeClock()
    channel = AccountsChannel()
    channel.failing.add("a")
    # Two at a time: its share, and no slot to borrow beyond it.
    d = dispatch({WEBHOOK: channel}, clock=clock, concurrency=4, account_concurrency=2)
    rows = [_row_of("a") for _ in range(5)]
    with structlog.testing.capture_logs() as logs:
        d.add(rows)
        # Two at a time: r1, r2 fail, then r3, r4; the third failure backs
        # the account off for 1 s, the fourth (in flight with it) does not
        # lengthen that. r5 waits.
        await eventually(lambda: len(channel.calls) == 4, "four failed attempts")
        await asyncio.sleep(0.05)
    assert channel.calls_of("a") == [n.id for n in rows[:4]]
    backing_off = [e for e in logs if e["event"] == "account callbacks backing off"]
    assert [(e["account"], e["seconds"]) for e in backing_off] == [("a", 1.0)]

    # r1..r4's own retries (0.5-1 s) come due with the account's backoff;
    # the account then tries one row at a time: r5 first, the oldest due.
    clock.advance(0.99)
    d.add([])
    await asyncio.sleep(0.05)
    assert len(channel.calls) == 4
    clock.advance(0.01)
    d.add([])
    await eventually(lambda: len(channel.calls) == 5, "one probe")
    await asyncio.sleep(0.05)
    assert channel.calls[-1] == ("a", rows[4].id)
    assert len(channel.calls) == 5  # one, not its cap

    # The probe failed: the next backoff is twice as long.
    clock.advance(1.99)
    d.add([])
    await asyncio.sleep(0.05)
    assert len(channel.calls) == 5
    channel.failing.clear()  # the receiver is back
    clock.advance(0.01)
    d.add([])
    # The probe succeeds: the backoff is over and every row goes, without
    # the clock moving again (their own retry times have passed).
    await eventually(lambda: len(channel.delivered) == 5, "every row delivered")
    assert len(channel.calls) == 10
    assert d.pending == 0


async def test_a_success_resets_the_count_of_failures(
    dispatch: Callable[..., Dispatcher],
) -> None:
    clock = FakeClock()
    channel = AccountsChannel()
    d = dispatch({WEBHOOK: channel}, clock=clock, concurrency=1)
    # Two failures, a success, two failures: never three in a row.
    for fails in (True, True, False, True, True, False):
        if fails:
            channel.failing.add("a")
        else:
            channel.failing.discard("a")
        before = len(channel.calls)
        d.add([_row_of("a")])
        await eventually(lambda: len(channel.calls) == before + 1, "the attempt")  # noqa: B023
        await asyncio.sleep(0.01)
    # The last row went at once: the account never backed off.
    assert len(channel.delivered) == 2


async def test_a_refused_callback_is_given_up_at_once_not_retried(
    dispatch: Callable[..., Dispatcher],
) -> None:
    refused_before, retry_before = _metric("refused"), _metric("retry")
    clock = FakeClock()
    writer = RecordingWriter()
    channel = AccountsChannel()
    channel.refusing.add("a")
    d = dispatch({WEBHOOK: channel}, clock=clock, writer=writer)
    rows = [_row_of("a") for _ in range(5)]
    with structlog.testing.capture_logs() as logs:
        d.add(rows)
        await eventually(lambda: len(writer.ops) == 5, "five outcomes")
    for n in rows:
        done = writer.done(n.id)
        assert done is not None
        assert done.error == "refused: 127.1 is a private network address"
    assert _metric("refused") == refused_before + 5
    assert _metric("retry") == retry_before
    assert d.pending == 0
    # One line for the five.
    assert [e["event"] for e in logs] == ["notification refused, given up"]
    # Nothing comes back, however long the clock runs; refusals are not
    # failures of the receiver, so another row of the account goes at once.
    clock.advance(3600)
    channel.refusing.clear()
    later = _row_of("a")
    d.add([later])
    await eventually(lambda: len(channel.delivered) == 1, "the next row")
    assert channel.calls_of("a") == [n.id for n in rows] + [later.id]


async def test_repeated_failures_are_logged_once_per_account_and_interval(
    dispatch: Callable[..., Dispatcher],
) -> None:
    clock = FakeClock()
    channel = AccountsChannel()
    channel.failing.update({"a", "b"})
    d = dispatch({WEBHOOK: channel}, clock=clock, concurrency=40, account_concurrency=20)
    with structlog.testing.capture_logs() as logs:
        d.add([_row_of("a") for _ in range(20)] + [_row_of("b") for _ in range(3)])
        await eventually(lambda: len(channel.calls) == 23, "every attempt")
        await asyncio.sleep(0.05)
        retry_lines = [e for e in logs if e["event"] == "notification failed, will retry"]
        assert sorted(e["account"] for e in retry_lines) == ["a", "b"]
        assert all("repeated" not in e for e in retry_lines)
        # Past the interval, the next line says how many were held back.
        clock.advance(60)
        channel.failing.discard("b")
        d.add([])
        await eventually(lambda: len(channel.calls) >= 24, "a probe of a")
        await asyncio.sleep(0.05)
    retry_lines = [e for e in logs if e["event"] == "notification failed, will retry"]
    assert [(e["account"], e.get("repeated")) for e in retry_lines][-1] == ("a", 19)


async def test_a_failing_accounts_expired_rows_are_given_up_without_an_attempt(
    dispatch: Callable[..., Dispatcher],
) -> None:
    clock = FakeClock()
    writer = RecordingWriter()
    channel = AccountsChannel()
    channel.failing.add("a")
    d = dispatch(
        {WEBHOOK: channel}, clock=clock, writer=writer, concurrency=6, account_concurrency=3
    )
    failing = [_row_of("a") for _ in range(3)]
    expired = [_row_of("a", expired=True) for _ in range(2)]
    d.add(failing + expired)
    await eventually(lambda: len(writer.ops) == 3, "three failures")  # then it backs off
    clock.advance(1.0)
    d.add([])
    await eventually(lambda: len(channel.calls) == 4, "a probe")
    assert all(i not in channel.calls_of("a") for i in (n.id for n in expired))
    for n in expired:
        done = writer.done(n.id)
        assert done is not None
        assert done.error == "gave up after 0 attempts: its receiver kept failing"


async def test_add_missing_adds_only_rows_not_held(dispatch: Callable[..., Dispatcher]) -> None:
    clock = FakeClock()
    writer = RecordingWriter(hold=True)
    webhooks = AccountsChannel()
    webhooks.hung.add("hung")
    receipts = BindChannel()
    d = dispatch(
        {WEBHOOK: webhooks, SMPP_RECEIPT: receipts},
        clock=clock,
        writer=writer,
        concurrency=2,
        account_concurrency=1,  # and no slot to borrow
    )
    in_flight = _row_of("hung")
    behind = _row_of("hung")  # due, queued behind its account's cap
    later = _row_of("ok", due_in=3600)  # not yet due
    waiting = _row_of("unbound")
    waiting.kind, waiting.target = SMPP_RECEIPT, None  # its ESME is not bound
    delivered = _row_of("ok")  # done, its outcome not yet written
    d.add([in_flight, behind, later, waiting, delivered])
    await eventually(lambda: len(receipts.refused) == 1, "the receipt parked")
    await eventually(lambda: len(webhooks.delivered) == 1, "the row delivered")
    assert writer.done(delivered.id) is not None

    # After an outage, the whole outbox as read back, plus two rows whose
    # commit's answer was lost (never handed to the dispatcher).
    lost = [_row_of("ok"), _row_of("ok")]
    held = [in_flight, behind, later, waiting, delivered]
    assert d.add_missing([*held, *lost]) == 2
    await eventually(lambda: len(webhooks.delivered) == 3, "the lost rows delivered")
    assert sorted(i for _, i in webhooks.delivered) == sorted([delivered.id] + [n.id for n in lost])
    assert webhooks.calls_of("hung") == [in_flight.id]
    assert d.pending == 4  # in flight, behind it, later, waiting

    # Once an outcome is written, the row is the table's again: read back
    # pending (its write had failed, say), it is added.
    writer.settle()
    assert d.add_missing([delivered, in_flight]) == 1
    await eventually(lambda: len(webhooks.delivered) == 4, "the row sent again")
    webhooks.release.set()


# ------------------------------------------- dispatcher: notification batches
#
# A flush's notifications are kept by one batch row (migration 0018), not a
# row each: delivered at the first try they write nothing, and the batch's
# row goes once each was delivered or kept in an outbox row of its own,
# under the id it was first sent with (the webhook-id of every try).


async def _batch(
    pool: asyncpg.Pool, count: int, *, kind: str = WEBHOOK, account: str = "acme"
) -> list[Notification]:
    """A batch's row as the planner writes it, and its notifications."""
    now = utcnow()
    message_ids = [uuid.uuid4() for _ in range(count)]
    row = await pool.fetchrow(INSERT_BATCH, message_ids, [kind] * count, 72.0)
    target = "http://127.0.0.1:9/dlr" if kind == WEBHOOK else None
    return [
        Notification(
            outbox_id, kind, account, message_id, target, b'{"id":"x"}', 0, now,
            now + timedelta(hours=72), row["id"],
        )
        for outbox_id, message_id in zip(row["outbox_ids"], message_ids, strict=True)
    ]  # fmt: skip


def _batch_gone(pool: asyncpg.Pool, batch: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        n = await pool.fetchval("SELECT count(*) FROM notification_batches WHERE id = $1", batch)
        return n == 0

    return check


async def _outbox_ids(pool: asyncpg.Pool) -> list[int]:
    return [r["id"] for r in await pool.fetch("SELECT id FROM outbox ORDER BY id")]


async def test_a_batch_delivered_at_once_writes_no_outbox_row_and_its_row_goes(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    channel = ScriptedChannel()
    d = make_dispatcher({WEBHOOK: channel}, clock=FakeClock())
    batch = await _batch(db_pool, 3)
    d.add(batch)
    assert d.backlog(WEBHOOK) == 3 and d.batches() == [batch[0].batch]
    await eventually(_batch_gone(db_pool, batch[0].batch), "the batch's row to go")
    assert channel.delivered == [n.id for n in batch]
    assert await _outbox_ids(db_pool) == []
    assert d.pending == 0 and d.backlog(WEBHOOK) == 0 and d.batches() == []


async def test_a_batch_stays_until_every_one_of_its_notifications_is_settled(
    db_pool: asyncpg.Pool, writer: GroupCommit
) -> None:
    gate = asyncio.Event()
    slow, fast = ScriptedChannel(gate=gate), ScriptedChannel()
    d = Dispatcher(writer=writer, channels={WEBHOOK: fast, SMPP_RECEIPT: slow}, clock=FakeClock())
    d.start()
    try:
        webhook, receipt = await _batch(db_pool, 2)
        receipt.kind, receipt.target = SMPP_RECEIPT, None
        d.add([webhook, receipt])
        await eventually(lambda: fast.delivered == [webhook.id] and slow.active == 1, "one out")
        await writer.run(BatchSettled(-1))  # a flush after the delivery: nothing went
        assert not await _batch_gone(db_pool, webhook.batch)()
        gate.set()
        await eventually(_batch_gone(db_pool, webhook.batch), "the batch's row to go")
        assert await _outbox_ids(db_pool) == []
    finally:
        await d.stop(timeout=0.5)


async def test_a_batched_notification_that_fails_keeps_its_id_in_a_row_of_its_own(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    clock = FakeClock()
    first_delay = backoff(0, random.Random(42))
    channel = ScriptedChannel([DeliveryFailed("HTTP 503")])
    d = make_dispatcher({WEBHOOK: channel}, clock=clock, rng=random.Random(42))
    failing, delivered = await _batch(db_pool, 2)
    before = utcnow()
    d.add([failing, delivered])
    await eventually(_attempts(db_pool, failing.id, 1), "the failed one's row")
    after = utcnow()
    await eventually(_batch_gone(db_pool, failing.batch), "the batch's row to go")
    assert await _outbox_ids(db_pool) == [failing.id]
    row = await db_pool.fetchrow("SELECT * FROM outbox WHERE id = $1", failing.id)
    assert (row["kind"], row["account_id"], row["message_id"], row["target"]) == (
        WEBHOOK,
        "acme",
        failing.message_id,
        failing.target,
    )
    assert (bytes(row["payload"]), row["expires_at"], row["last_error"], row["done_at"]) == (
        failing.payload,
        failing.expires_at,
        "HTTP 503",
        None,
    )
    assert before + timedelta(seconds=first_delay) <= row["next_attempt_at"]
    assert row["next_attempt_at"] <= after + timedelta(seconds=first_delay)
    assert failing.batch == 0 and d.batches() == []

    # Its retry goes under the same id, and the row goes when it delivers.
    clock.advance(first_delay)
    d.add([])
    await eventually(_delivered(db_pool, failing.id), "the retry to deliver")
    assert channel.calls == [failing.id, delivered.id, failing.id]
    assert d.pending == 0 and d.backlog(WEBHOOK) == 0


async def test_a_batched_notification_refused_is_kept_done_with_its_error(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    channel = ScriptedChannel([DeliveryRefused("127.1 is a private network address")])
    d = make_dispatcher({WEBHOOK: channel}, clock=FakeClock())
    (n,) = await _batch(db_pool, 1)
    d.add([n])
    await eventually(_given_up(db_pool, n.id), "the row given up")
    await eventually(_batch_gone(db_pool, n.batch or 0), "the batch's row to go")
    row = await db_pool.fetchrow("SELECT * FROM outbox WHERE id = $1", n.id)
    assert (row["attempts"], row["last_error"]) == (
        1,
        "refused: 127.1 is a private network address",
    )
    assert d.pending == 0 and d.backlog(WEBHOOK) == 0


async def test_a_batched_receipt_for_an_unbound_esme_waits_in_a_row_of_its_own(
    db_pool: asyncpg.Pool, make_dispatcher: Callable[..., Dispatcher]
) -> None:
    channel = BindChannel()
    d = make_dispatcher({SMPP_RECEIPT: channel}, clock=FakeClock())
    batch = await _batch(db_pool, 2, kind=SMPP_RECEIPT)
    batch_id = batch[0].batch
    d.add(batch)
    await eventually(_batch_gone(db_pool, batch_id), "the batch's row to go")
    assert await _outbox_ids(db_pool) == [n.id for n in batch]
    for n in batch:
        row = await _row(db_pool, n.id)
        assert (row["attempts"], row["last_error"], row["done_at"]) == (0, None, None)
    # Another instance may take them: they are handed off once written.
    assert sorted(d.hand_off_waiting()) == [n.id for n in batch]
    assert d.pending == 0


async def test_a_stop_keeps_what_only_a_batch_holds_in_rows_of_their_own(
    db_pool: asyncpg.Pool, writer: GroupCommit
) -> None:
    hung = ScriptedChannel(gate=asyncio.Event())  # never set
    d = Dispatcher(
        writer=writer,
        channels={WEBHOOK: hung},
        concurrency=1,
        clock=FakeClock(),
        rng=random.Random(1),
    )
    d.start()
    batch = await _batch(db_pool, 3)
    d.add(batch)
    await eventually(lambda: hung.active == 1, "the first delivery to hang")
    await asyncio.wait_for(d.stop(timeout=0.2), 3.0)
    # The one cancelled and the two never tried: rows as they stand, the
    # batch settled, so the next start sends those three alone.
    assert hung.cancelled == [batch[0].id]
    assert await _outbox_ids(db_pool) == [n.id for n in batch]
    for n in batch:
        row = await _row(db_pool, n.id)
        assert (row["attempts"], row["last_error"], row["done_at"]) == (0, None, None)
    assert await _batch_gone(db_pool, batch[0].batch)()


async def test_a_planner_hands_over_the_batches_of_a_commit_in_doubt() -> None:
    planner = OutboxPlanner(72)
    now = utcnow()

    def of(batch: int) -> Notification:
        return Notification(batch * 10, WEBHOOK, "a", None, "u", b"{}", 0, now, now, batch)

    planner.commit_failed([of(3), of(3)], in_doubt=False)  # rolled back: nothing
    assert planner.take_doubtful() == []
    planner.commit_failed([of(5), of(4), of(0)], in_doubt=True)  # 0: an MO's own row
    assert planner.take_doubtful() == [4, 5]
    assert planner.take_doubtful() == []
    planner.give_back([5])  # turning it into rows failed: next time
    assert planner.take_doubtful() == [5]
