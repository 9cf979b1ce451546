"""Retention by daily partition on a real PostgreSQL (migration 0012,
router/store/partitions.py, CONTRACT §10): days made ahead, rows across days
in their partitions, expired days dropped whole, a day with a message not
ended or a notification not done kept, the DEFAULT partitions empty, the
ledger folded without breaking balance = initial credit + sum(ledger)."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from smsrouter.router import retention
from smsrouter.router.messages import Message, Status, new_message_id
from smsrouter.router.retention import (
    CARRIER_SUBMITS,
    DAY,
    IDEMPOTENCY_KEYS,
    MESSAGE_EVENTS,
    MESSAGES,
    OUTBOX,
    TABLES,
)
from smsrouter.router.store import partitions, writes
from smsrouter.router.store.group_commit import GroupCommit
from smsrouter.router.store.ledger import CARRIED_FORWARD, balance_identity
from smsrouter.router.store.operations import (
    CarrierReceipt,
    IdempotentAnswer,
    InsertMessage,
    MessageEvent,
    NewNotification,
    OutboxDone,
    PartSent,
)
from smsrouter.router.store.queries import get_message

TODAY = datetime.now(UTC).date()


def _uuid7(moment: datetime) -> uuid.UUID:
    ms = int(moment.timestamp() * 1000)
    return uuid.UUID(int=ms << 80 | 7 << 76 | 2 << 62 | random.getrandbits(62))


def _message(n: int, price: str) -> Message:
    return Message(
        id=new_message_id(), account_id="acc", ingress="http", sender="12345",
        recipient=f"+1415555{n % 10_000:04d}", body="b", encoding="gsm7", data_coding=0,
        parts=1, price=Decimal(price), created_at=datetime.now(UTC),
    )  # fmt: skip


def _noon(day: date) -> datetime:
    return retention.day_start(day) + timedelta(hours=12)


async def _store_day(
    conn: asyncpg.Connection, day: date, *, status: str = "delivered"
) -> uuid.UUID:
    """A message of `day` with a part, an event, a given-up notification and
    an Idempotency-Key, as if written that day (price 0: no charge)."""
    for table in TABLES:
        await partitions.create_partition(conn, table, day)
    message_id = _uuid7(_noon(day))
    await conn.execute(
        "INSERT INTO messages (id, account_id, ingress, sender, recipient, body, encoding,"
        " data_coding, parts, price, status, created_at)"
        " VALUES ($1, 'acc', 'http', '12345', '+14155550123', 'b', 'gsm7', 0, 1, 0, $2, $3)",
        message_id,
        status,
        _noon(day),
    )
    await conn.execute(
        "INSERT INTO carrier_submits (carrier, carrier_message_id, message_id, part, submitted_at)"
        " VALUES ('sim', $1, $2, 0, $3)",
        f"c-{message_id}",
        message_id,
        _noon(day),
    )
    await conn.execute(
        "INSERT INTO message_events (message_id, at, status) VALUES ($1, $2, 'note')",
        message_id,
        _noon(day),
    )
    await conn.execute(
        "INSERT INTO outbox (id, kind, account_id, message_id, payload, next_attempt_at,"
        " expires_at, created_at, done_at)"
        " VALUES ($1, 'webhook', 'acc', $2, 'x', $3, $3, $3, $3)",
        retention.outbox_id_floor(day) + 1,
        message_id,
        _noon(day),
    )
    await conn.execute(
        "INSERT INTO idempotency_keys (account_id, key, day, request_hash, status, created_at)"
        " VALUES ('acc', $1, $2, 'h', 202, $3)",
        f"k-{message_id}",
        day,
        _noon(day),
    )
    return message_id


async def _partition_of(conn: asyncpg.Connection, table: str, where: str, *args: object) -> str:
    name: str = await conn.fetchval(
        f"SELECT tableoid::regclass::text FROM {table} WHERE {where}", *args
    )
    return name


async def _default_rows(conn: asyncpg.Connection) -> dict[str, int]:
    return await partitions.default_rows(conn)


async def test_the_migration_and_the_chore_make_the_same_partitions(
    db_pool: asyncpg.Pool,
) -> None:
    """Migration 0012 made today's and the next days' partitions; their
    bounds are those router/retention.py computes, and the chore finds
    nothing to add."""
    async with db_pool.acquire() as conn:
        existing = await partitions.existing_days(conn)
        for table in TABLES:
            for n in range(retention.AHEAD_DAYS + 1):
                assert TODAY + timedelta(days=n) in existing[table.name], table.name
        for table in TABLES:
            for day in existing[table.name]:
                bound = await conn.fetchval(
                    "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = $1",
                    retention.partition_name(table, day),
                )
                low, high = retention.bounds(table, day)
                # PostgreSQL quotes bigint bounds too.
                assert bound.replace("'", "") == f"FOR VALUES FROM ({low}) TO ({high})".replace(
                    "'", ""
                )
        assert await partitions.prepare_partitions(conn, TODAY) == []
        # Two days later, two more days ahead.
        made = await partitions.prepare_partitions(conn, TODAY + timedelta(days=2))
        assert made == [
            retention.partition_name(t, TODAY + timedelta(days=n)) for t in TABLES for n in (4, 5)
        ]


async def test_what_the_writer_stores_lands_in_todays_partitions(db_pool: asyncpg.Pool) -> None:
    """Every statement of the store at work: nothing reaches a DEFAULT
    partition, and the reserve trigger (migration 0005) still charges."""
    writer = GroupCommit(db_pool)
    writer.start()
    now = datetime.now(UTC)
    m = _message(0, "0.5")
    credit = await db_pool.fetchval("SELECT credit FROM accounts WHERE id = 'acc'")
    try:
        answer = IdempotentAnswer("acc", "key-1", b"h" * 32, 202, b"{}")
        assert await writer.submit(InsertMessage([m], answer)) is None
        await writer.submit(PartSent(m.id, 0, "sim", "c1", now))
        await writer.submit(MessageEvent(m.id, now, "note", ""))
        await writer.submit(CarrierReceipt("sim", "c1", Status.DELIVERED, None, now))
        row = await writer.submit(
            NewNotification("webhook", "acc", "http://127.0.0.1:1/", b"{}", now + DAY)
        )
        await writer.submit(OutboxDone(row.id, now, None))
    finally:
        await writer.stop()
    today = f"_p{TODAY:%Y%m%d}"
    async with db_pool.acquire() as conn:
        assert await _partition_of(conn, "messages", "id = $1", m.id) == f"messages{today}"
        assert await _partition_of(conn, "carrier_submits", "message_id = $1", m.id) == (
            f"carrier_submits{today}"
        )
        assert await _partition_of(conn, "message_events", "message_id = $1", m.id) == (
            f"message_events{today}"
        )
        assert retention.day_of_outbox_id(row.id) == TODAY
        assert await _default_rows(conn) == {}
    shown = await get_message(db_pool, m.id, "acc")
    assert shown is not None and shown["status"] == "delivered"
    assert sorted(e["status"] for e in shown["events"]) == [
        "accepted", "delivered", "note", "queued", "sent"
    ]  # fmt: skip
    assert await db_pool.fetchval("SELECT credit FROM accounts WHERE id = 'acc'") == (
        credit - Decimal("0.5")
    )


async def test_expired_days_are_dropped_whole_and_the_rest_stays(db_pool: asyncpg.Pool) -> None:
    old, older, recent = TODAY - 35 * DAY, TODAY - 40 * DAY, TODAY - 3 * DAY
    async with db_pool.acquire() as conn:
        ids = {day: await _store_day(conn, day) for day in (older, old, recent, TODAY)}
        run = await partitions.run_retention(conn, datetime.now(UTC), days=30)
        assert run.ran and not run.kept
        expected = [
            retention.partition_name(t, d)
            for t in (CARRIER_SUBMITS, MESSAGE_EVENTS, MESSAGES, OUTBOX)
            for d in (older, old)
        ] + [
            retention.partition_name(IDEMPOTENCY_KEYS, d)
            # Keys go one day after their day ended: yesterday's stays.
            for d in (older, old, recent)
        ]
        assert sorted(run.dropped) == sorted(expected)
        for day in (older, old):
            for table in ("messages", "carrier_submits", "message_events"):
                assert (
                    await conn.fetchval("SELECT to_regclass($1)", f"{table}_p{day:%Y%m%d}") is None
                )
            assert await conn.fetchval("SELECT count(*) FROM messages WHERE id = $1", ids[day]) == 0
        for day in (recent, TODAY):
            assert await conn.fetchval("SELECT count(*) FROM messages WHERE id = $1", ids[day]) == 1
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM carrier_submits WHERE message_id = $1", ids[day]
                )
                == 1
            )
        # The same run again: nothing left to drop.
        again = await partitions.run_retention(conn, datetime.now(UTC), days=30)
        assert again.dropped == []
        # As if the time were later: the recent day goes too.
        later = await partitions.run_retention(conn, datetime.now(UTC) + 30 * DAY, days=30)
        assert retention.partition_name(MESSAGES, recent) in later.dropped
        assert retention.partition_name(MESSAGES, TODAY) not in later.dropped
        assert await _default_rows(conn) == {}


async def test_a_day_with_a_message_not_ended_is_kept_until_it_ends(
    db_pool: asyncpg.Pool,
) -> None:
    day = TODAY - 40 * DAY
    async with db_pool.acquire() as conn:
        waiting = await _store_day(conn, day, status="queued")
        run = await partitions.run_retention(conn, datetime.now(UTC), days=30)
        for table in (MESSAGES, CARRIER_SUBMITS, MESSAGE_EVENTS):
            assert retention.partition_name(table, day) not in run.dropped
        assert run.kept == {retention.partition_name(MESSAGES, day): "1 messages not ended"}
        # The notification of that day was done: its partition goes.
        assert retention.partition_name(OUTBOX, day) in run.dropped
        assert await conn.fetchval("SELECT status FROM messages WHERE id = $1", waiting) == "queued"

        await conn.execute("UPDATE messages SET status = 'expired' WHERE id = $1", waiting)
        run = await partitions.run_retention(conn, datetime.now(UTC), days=30)
        assert not run.kept
        for table in (MESSAGES, CARRIER_SUBMITS, MESSAGE_EVENTS):
            assert retention.partition_name(table, day) in run.dropped


async def test_a_day_with_a_notification_not_done_is_kept(db_pool: asyncpg.Pool) -> None:
    day = TODAY - 40 * DAY
    async with db_pool.acquire() as conn:
        await _store_day(conn, day)
        await conn.execute("UPDATE outbox SET done_at = NULL")
        run = await partitions.run_retention(conn, datetime.now(UTC), days=30)
        assert retention.partition_name(OUTBOX, day) not in run.dropped
        assert run.kept == {retention.partition_name(OUTBOX, day): "1 notifications not done"}
        assert retention.partition_name(MESSAGES, day) in run.dropped


async def test_rows_of_a_day_without_partition_wait_in_default_and_move_in(
    db_pool: asyncpg.Pool,
) -> None:
    """No insert fails for want of a partition: a row of a day not made yet
    goes to the DEFAULT partition (and is reported), and moves into its
    day's partition when the day is made."""
    far = TODAY + 20 * DAY
    message_id = _uuid7(_noon(far))
    async with db_pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO messages (id, account_id, ingress, sender, recipient, body, encoding,"
            " data_coding, parts, price, status, created_at)"
            " VALUES ($1, 'acc', 'http', '12345', '+1', 'b', 'gsm7', 0, 1, 0, 'queued', now())",
            message_id,
        )
        assert await _partition_of(conn, "messages", "id = $1", message_id) == "messages_default"
        run = await partitions.run_retention(conn, datetime.now(UTC), days=30)
        assert run.default_rows == {"messages_default": 1}
        assert await partitions.create_partition(conn, MESSAGES, far)
        assert await _partition_of(conn, "messages", "id = $1", message_id) == (
            retention.partition_name(MESSAGES, far)
        )
        assert await _default_rows(conn) == {}
        # The table's indexes came with the attach.
        indexes = await conn.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE tablename = $1",
            retention.partition_name(MESSAGES, far),
        )
        parent = await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'messages'")
        assert indexes == parent == 3


async def test_a_drop_gives_way_to_the_writers_rather_than_wait(
    db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table's lock is waited for LOCK_TIMEOUT_MS at a time: while a
    transaction holds the table, the drop gives up instead of queuing every
    flush behind it; once it ends, the drop goes through."""
    monkeypatch.setattr(partitions, "LOCK_TRIES", 2)
    monkeypatch.setattr(partitions, "LOCK_RETRY_SECONDS", 0.05)
    day = TODAY - 40 * DAY
    async with db_pool.acquire() as conn, db_pool.acquire() as writer:
        await _store_day(conn, day)
        tx = writer.transaction()
        await tx.start()
        await writer.execute("SELECT count(*) FROM messages")  # holds a lock on every partition
        with pytest.raises(asyncpg.LockNotAvailableError):
            await partitions.drop_partition(conn, MESSAGES, day)
        # Meanwhile the writer went on.
        await writer.execute(
            "INSERT INTO message_events (message_id, at, status) VALUES ($1, now(), 'x')",
            new_message_id(),
        )
        await tx.commit()
        assert await partitions.drop_partition(conn, MESSAGES, day)
        assert await conn.fetchval("SELECT to_regclass($1)", f"messages_p{day:%Y%m%d}") is None


async def test_one_process_runs_retention_at_a_time(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as one, db_pool.acquire() as other:
        await one.execute("SELECT pg_advisory_lock($1)", partitions._LOCK_ID)
        try:
            run = await partitions.run_retention(other, datetime.now(UTC), days=30)
            assert not run.ran
        finally:
            await one.execute("SELECT pg_advisory_unlock($1)", partitions._LOCK_ID)
        assert (await partitions.run_retention(other, datetime.now(UTC), days=30)).ran


async def test_ledger_days_fold_old_rows_and_keep_the_balance_identity(
    db_pool: asyncpg.Pool,
) -> None:
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        for n in range(6):
            assert await writer.submit(InsertMessage([_message(n, "0.25")])) is None
    finally:
        await writer.stop()
    async with db_pool.acquire() as conn:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM ledger ORDER BY id")]
        assert len(ids) == 6
        # The first four are a hundred days old.
        await conn.execute(
            "UPDATE ledger SET at = now() - interval '100 days' WHERE id = ANY($1::bigint[])",
            ids[:4],
        )
        last_old = await conn.fetchrow("SELECT balance FROM ledger WHERE id = $1", ids[3])
        run = await partitions.run_retention(conn, datetime.now(UTC), days=30, ledger_days=90)
        assert run.ledger_rows_folded == 3
        rows = await conn.fetch(
            "SELECT id, kind, amount, balance, messages FROM ledger ORDER BY id"
        )
        assert [r["id"] for r in rows] == ids[3:]
        carried = rows[0]
        assert carried["kind"] == CARRIED_FORWARD
        assert carried["amount"] == Decimal("-1.00")
        assert carried["messages"] == 4
        assert carried["balance"] == last_old["balance"]
        credit, summed = await balance_identity(conn, "acc")
        assert credit == summed
        # Folded once: a second run leaves the carried row alone.
        again = await partitions.run_retention(conn, datetime.now(UTC), days=30, ledger_days=90)
        assert again.ledger_rows_folded == 0
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 3


async def test_a_drop_under_load_loses_no_flush(db_pool: asyncpg.Pool) -> None:
    """Flushes keep committing while expired days are dropped and new days
    made: each change of partitions waits for the flushes in flight, and
    they for it, briefly; none fails."""
    async with db_pool.acquire() as conn:
        for n in range(5):
            await _store_day(conn, TODAY - (40 + n) * DAY)
    writer = GroupCommit(db_pool)
    writer.start()
    stop = asyncio.Event()
    stored: list[Message] = []

    async def flushes() -> None:
        n = 0
        while not stop.is_set():
            batch = [_message(n + i, "0.001") for i in range(8)]
            n += 8
            assert await writer.submit(InsertMessage(batch)) is None
            stored.extend(batch)

    load = asyncio.create_task(flushes())
    try:
        async with db_pool.acquire() as conn:
            run = await partitions.run_retention(conn, datetime.now(UTC), days=30)
            made = await partitions.prepare_partitions(conn, TODAY + 10 * DAY)
        assert len(run.dropped) == 5 * 5
        assert len(made) == 5 * (retention.AHEAD_DAYS + 1)
    finally:
        stop.set()
        await load
        await writer.stop()
    count = await db_pool.fetchval(
        "SELECT count(*) FROM messages WHERE id = ANY($1::uuid[])", [m.id for m in stored]
    )
    assert count == len(stored) > 0


async def test_receipts_find_their_part_in_any_day_the_recent_first(db_pool: asyncpg.Pool) -> None:
    """A receipt is looked for in the last days' partitions first, then in
    every day: one for a part sent ten days ago still ends its message, and
    a carrier id reused today ends today's message, not the old one."""
    old_day = TODAY - 10 * DAY
    async with db_pool.acquire() as conn:
        for table in TABLES:
            await partitions.create_partition(conn, table, old_day)
        old, waiting = _uuid7(_noon(old_day)), _uuid7(_noon(old_day))
        for message_id, status in ((old, "delivered"), (waiting, "queued")):
            await conn.execute(
                "INSERT INTO messages (id, account_id, ingress, sender, recipient, body,"
                " encoding, data_coding, parts, price, status, created_at)"
                " VALUES ($1, 'acc', 'http', '12345', '+1', 'b', 'gsm7', 0, 1, 0, $2, $3)",
                message_id,
                status,
                _noon(old_day),
            )
    writer = GroupCommit(db_pool)
    writer.start()
    today = _message(1, "0")
    now = datetime.now(UTC)
    try:
        assert await writer.submit(InsertMessage([today])) is None
        await writer.submit(PartSent(old, 0, "sim", "reused", _noon(old_day)))
        await writer.submit(PartSent(waiting, 0, "sim", "late", _noon(old_day)))
        await writer.submit(PartSent(today.id, 0, "sim", "reused", now))
        reused, late = await asyncio.gather(
            writer.submit(CarrierReceipt("sim", "reused", Status.UNDELIVERED, None, now)),
            writer.submit(CarrierReceipt("sim", "late", Status.DELIVERED, None, now)),
        )
    finally:
        await writer.stop()
    assert reused.message_id == today.id and reused.status == Status.UNDELIVERED
    assert late.message_id == waiting and late.status == Status.DELIVERED
    statuses = await db_pool.fetch(
        "SELECT id, status FROM messages WHERE id = ANY($1::uuid[])", [old, today.id, waiting]
    )
    assert {r["id"]: r["status"] for r in statuses} == {
        old: "delivered",
        today.id: "undelivered",
        waiting: "delivered",
    }


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", ()):
        found.extend(_nodes(child))
    return found


async def test_the_writers_generic_receipts_plan_probes_each_receipt_by_its_carrier_id(
    db_pool: asyncpg.Pool,
) -> None:
    """The writer plans each statement once (WRITER_SETTINGS), at its first
    flush, while today's partitions are nearly empty. The receipts statement
    must still reach carrier_submits by its key (carrier, carrier id) once
    per receipt, not read the day's range and filter it against every
    receipt: that plan took 56 ms a flush of 32 after a minute of load."""
    async with db_pool.acquire() as conn:
        await conn.execute(writes.WRITER_SETTINGS)
        await conn.execute(f"PREPARE receipts AS {writes._RECEIPTS}")
        low, high = (
            retention.uuid_floor(_noon(TODAY) - DAY),
            retention.uuid_floor(_noon(TODAY) + DAY),
        )
        args = "ARRAY['sim'], ARRAY['c0'], ARRAY['delivered'], ARRAY[NULL], ARRAY[now()]"
        explain = f"EXPLAIN (FORMAT JSON) EXECUTE receipts({args}, '{low}', '{high}')"
        await conn.fetchval(explain)  # planned now, on empty partitions
        # A day's worth of parts arrives after the plan was made.
        await conn.execute(
            "INSERT INTO carrier_submits (carrier, carrier_message_id, message_id, part,"
            " submitted_at)"
            " SELECT 'sim', 'c' || n, $1::uuid, n::int2, now() FROM generate_series(1, 5000) n",
            _uuid7(_noon(TODAY)),
        )
        await conn.execute("ANALYZE carrier_submits")
        plan = json.loads(await conn.fetchval(explain))[0]["Plan"]
        await conn.execute("DEALLOCATE receipts")
    scans = [n for n in _nodes(plan) if str(n.get("Relation Name", "")).startswith(
        "carrier_submits_p"
    )]  # fmt: skip
    assert scans, plan
    for scan in scans:
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan
        assert scan["Index Name"].endswith("_pkey"), scan
        assert "carrier_message_id" in scan.get("Index Cond", ""), scan
    # Each part's message is probed by its id, for its count of parts and
    # to end it: never read by the day's range.
    messages = [n for n in _nodes(plan) if str(n.get("Relation Name", "")).startswith(
        "messages_p"
    )]  # fmt: skip
    assert messages, plan
    for scan in messages:
        assert scan["Node Type"] == "Index Scan", scan
        assert scan["Index Name"].endswith("_pkey"), scan
        assert scan.get("Index Cond", "").startswith("(id = "), scan
