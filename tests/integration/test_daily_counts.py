"""Daily thresholds counted by the database (CONTRACT §6 "Daily
thresholds", §9; migration 0014), on a real PostgreSQL: writers standing
for several instances store exactly daily_limit messages of an account a
day between them; the insert that reaches daily_alarm raises the alarm
once (an outbox row for the alert_url no instance holds yet, and NOTIFY
smsrouter_alarm); an account that gets a threshold mid-day is counted from
what it stored that day; the router's keyword replies are not counted."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from smsrouter.router.messages import KEYWORD_INGRESS, Message, new_message_id
from smsrouter.router.store.alarm_watch import NOTIFY_CHANNEL, alarmed_days
from smsrouter.router.store.group_commit import GroupCommit
from smsrouter.router.store.operations import InsertMessage, Unpaid
from tests.tools import open_accounts

_numbers = itertools.count()


def _message(account: str, price: str = "0.01", ingress: str = "http") -> Message:
    n = next(_numbers) % 10_000
    return Message(
        id=new_message_id(), account_id=account, ingress=ingress, sender="+14155550101",
        recipient=f"+1415666{n:04d}", body=f"text {n}", encoding="gsm7", data_coding=0,
        parts=1, price=Decimal(price), created_at=datetime.now(UTC),
    )  # fmt: skip


async def _thresholds(pool: asyncpg.Pool, account: str, limit: int, alarm: int, url: str) -> None:
    await pool.execute(
        "UPDATE accounts SET daily_limit = $2, daily_alarm = $3, alert_url = $4 WHERE id = $1",
        account,
        limit,
        alarm,
        url,
    )


async def _stored(pool: asyncpg.Pool, account: str) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM messages WHERE account_id = $1", account)
    return count


async def test_writers_of_several_instances_store_exactly_the_limit_and_alarm_once(
    db_pool: asyncpg.Pool,
) -> None:
    await open_accounts(db_pool, "day")
    await _thresholds(db_pool, "day", 25, 10, "http://127.0.0.1:9/alert")
    heard: list[str] = []

    def hear(*args: object) -> None:
        heard.append(str(args[3]))

    listening = await db_pool.acquire()
    await listening.add_listener(NOTIFY_CHANNEL, hear)
    # Three writers of two connections each, as three instances would have:
    # none of them knows what the others stored.
    writers = [GroupCommit(db_pool, connections=2, name=f"w{i}") for i in range(3)]
    for w in writers:
        w.start()
    try:
        messages = [_message("day") for _ in range(60)]
        batch = [_message("day") for _ in range(5)]  # a request of five recipients
        results = await asyncio.gather(
            *(writers[i % 3].submit(InsertMessage([m])) for i, m in enumerate(messages)),
            writers[0].submit(InsertMessage(batch)),
        )
    finally:
        for w in writers:
            await w.stop()
    stored = [r for r in results if r is None]
    refused = [r for r in results if isinstance(r, Unpaid)]
    assert len(stored) + len(refused) == len(results)
    # Every refusal names the limit, not the credit.
    assert all(r.limited == r.message_ids for r in refused)
    assert await _stored(db_pool, "day") == 25
    row = await db_pool.fetchrow("SELECT day_count, counted_day FROM accounts WHERE id = 'day'")
    assert row["day_count"] == 25 and row["counted_day"] == datetime.now(UTC).date()
    alerts = await db_pool.fetch(
        "SELECT kind, target, payload, owner FROM outbox WHERE account_id = 'day'"
    )
    assert len(alerts) == 1
    (alert,) = alerts
    assert (alert["kind"], alert["target"], alert["owner"]) == (
        "webhook", "http://127.0.0.1:9/alert", None
    )  # fmt: skip
    body = json.loads(alert["payload"])
    assert body["account"] == "day" and body["kind"] == "daily_alarm"
    assert body["day"] == datetime.now(UTC).date().isoformat()
    assert 10 <= body["count"] <= 25
    for _ in range(50):
        if heard:
            break
        await asyncio.sleep(0.02)
    await listening.remove_listener(NOTIFY_CHANNEL, hear)
    await db_pool.release(listening)
    assert len(heard) == 1
    async with db_pool.acquire() as conn:
        days = await alarmed_days(conn)
    assert [(d.account_id, d.count) for d in days] == [("day", 25)]


async def test_a_raised_limit_takes_effect_at_once(db_pool: asyncpg.Pool) -> None:
    await open_accounts(db_pool, "raise")
    await _thresholds(db_pool, "raise", 2, 0, "")
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        first = [await writer.submit(InsertMessage([_message("raise")])) for _ in range(3)]
        await _thresholds(db_pool, "raise", 3, 0, "")
        later = [await writer.submit(InsertMessage([_message("raise")])) for _ in range(2)]
    finally:
        await writer.stop()
    assert [r is None for r in first] == [True, True, False]
    assert [r is None for r in later] == [True, False]
    assert await _stored(db_pool, "raise") == 3


async def test_a_threshold_set_mid_day_counts_what_was_stored_that_day(
    db_pool: asyncpg.Pool,
) -> None:
    """And the router's replies to STOP/HELP neither count nor are refused."""
    await open_accounts(db_pool, "mid")
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        for _ in range(4):
            assert await writer.submit(InsertMessage([_message("mid")])) is None
        assert (
            await writer.submit(InsertMessage([_message("mid", ingress=KEYWORD_INGRESS)])) is None
        )
        await _thresholds(db_pool, "mid", 5, 0, "")
        assert await db_pool.fetchval("SELECT day_count FROM accounts WHERE id = 'mid'") == 4
        assert await writer.submit(InsertMessage([_message("mid")])) is None
        over = await writer.submit(InsertMessage([_message("mid"), _message("mid")]))
        reply = await writer.submit(InsertMessage([_message("mid", ingress=KEYWORD_INGRESS)]))
    finally:
        await writer.stop()
    assert isinstance(over, Unpaid) and len(over.limited) == 2
    assert reply is None
    assert await _stored(db_pool, "mid") == 7  # 5 counted, 2 keyword replies


async def test_credit_and_limit_refuse_each_their_own_in_one_flush(db_pool: asyncpg.Pool) -> None:
    """A batch meets both, in the order its messages came: the second costs
    more than the balance holds, the fifth finds the day full."""
    await open_accounts(db_pool, "both", credit="0.03")
    await _thresholds(db_pool, "both", 3, 0, "")
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        batch = [_message("both", price) for price in ("0.01", "0.05", "0.01", "0.01", "0.01")]
        result = await writer.submit(InsertMessage(batch))
    finally:
        await writer.stop()
    assert isinstance(result, Unpaid)
    assert result.message_ids == {batch[1].id, batch[4].id}
    assert result.limited == {batch[4].id}
    assert await _stored(db_pool, "both") == 3
    assert await db_pool.fetchval("SELECT credit FROM accounts WHERE id = 'both'") == 0


async def _max_tps(pool: asyncpg.Pool, account: str, max_tps: float) -> None:
    await pool.execute("UPDATE accounts SET max_tps = $2 WHERE id = $1", account, max_tps)


async def test_writers_of_several_instances_keep_the_account_within_its_max_tps(
    db_pool: asyncpg.Pool,
) -> None:
    """Migration 0014: 60 messages at once over three writers, max_tps 10:
    the bucket (1 s) and its margin (0.25 s) let 12 through (and what
    drains while the flushes last), the others are refused for the rate, and
    a second later the bucket takes more."""
    await open_accounts(db_pool, "fast")
    await _max_tps(db_pool, "fast", 10.0)
    writers = [GroupCommit(db_pool, connections=2, name=f"w{i}") for i in range(3)]
    for w in writers:
        w.start()
    try:
        messages = [_message("fast") for _ in range(60)]
        started = time.monotonic()
        results = await asyncio.gather(
            *(writers[i % 3].submit(InsertMessage([m])) for i, m in enumerate(messages))
        )
        elapsed = time.monotonic() - started
        refused = [r for r in results if isinstance(r, Unpaid)]
        assert all(r.throttled == r.message_ids and not r.limited for r in refused)
        # 12 at once (1.25 s of the plan), and what drains, at 10 a second,
        # while the flushes last.
        assert 12 <= await _stored(db_pool, "fast") <= int(10 * (1.25 + elapsed))
        await asyncio.sleep(1.1)  # 11 intervals drained
        later = [await writers[0].submit(InsertMessage([_message("fast")])) for _ in range(12)]
        reply = await writers[1].submit(InsertMessage([_message("fast", ingress=KEYWORD_INGRESS)]))
    finally:
        for w in writers:
            await w.stop()
    assert 10 <= sum(1 for r in later if r is None) <= 12
    assert reply is None  # a keyword reply is never counted nor refused
    due = await db_pool.fetchval("SELECT rate_due - now() FROM accounts WHERE id = 'fast'")
    assert due.total_seconds() <= 1.25 + 0.05


async def test_a_steady_sender_within_its_plan_is_never_refused(db_pool: asyncpg.Pool) -> None:
    """Admitted by a process at max_tps, committed a little late: the
    margin keeps the database from refusing what the bucket let through."""
    await open_accounts(db_pool, "steady")
    await _max_tps(db_pool, "steady", 50.0)
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        results = []
        for _ in range(3):  # a burst of one second's worth, then 50 a second
            results += await asyncio.gather(
                *(writer.submit(InsertMessage([_message("steady")])) for _ in range(50))
            )
            await asyncio.sleep(1.0)
    finally:
        await writer.stop()
    assert results == [None] * 150
