"""Idempotency-Keys in the store (CONTRACT §3), on a real PostgreSQL: a key
is taken in the commit that stores its request's messages, by one request
only, whether the other came in the same flush or a later one, or on the
day before; after 24 h it is free again."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg

from smsrouter.router.messages import Message, new_message_id
from smsrouter.router.retention import IDEMPOTENCY_KEYS, day_start
from smsrouter.router.store import partitions
from smsrouter.router.store.group_commit import GroupCommit
from smsrouter.router.store.operations import KEY_TAKEN, IdempotentAnswer, InsertMessage
from smsrouter.router.store.queries import AcceptedMessage, idempotent_answer


def _message(n: int) -> Message:
    return Message(
        id=new_message_id(), account_id="acc", ingress="http", sender="+14155550101",
        recipient=f"+1415555{n:04d}", body=f"text {n}", encoding="gsm7", data_coding=0,
        parts=1, price=Decimal("0.0062"), created_at=datetime.now(UTC),
    )  # fmt: skip


def _answer(key: str, body: bytes, account: str = "acc") -> IdempotentAnswer:
    return IdempotentAnswer(account, key, b"h" * 32, 202, body)


async def _stored(pool: asyncpg.Pool, messages: list[Message]) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE id = ANY($1::uuid[])", [m.id for m in messages]
    )
    return count


async def test_one_request_takes_a_key_in_one_flush_or_across_flushes(
    db_pool: asyncpg.Pool,
) -> None:
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        first, second, plain = [_message(1), _message(2)], [_message(3)], [_message(4)]
        # Queued together: one flush, three operations, the same key twice.
        results = await asyncio.gather(
            writer.submit(InsertMessage(first, _answer("k1", b"first"))),
            writer.submit(InsertMessage(second, _answer("k1", b"second"))),
            writer.submit(InsertMessage(plain)),
        )
        assert results == [None, KEY_TAKEN, None]
        assert await _stored(db_pool, first) == 2
        assert await _stored(db_pool, second) == 0
        assert await _stored(db_pool, plain) == 1
        assert await idempotent_answer(db_pool, "acc", "k1") == (b"h" * 32, 202, b"first")

        # A later flush: the key is still taken; another account's is not.
        later, other = [_message(5)], [_message(6)]
        assert await writer.submit(InsertMessage(later, _answer("k1", b"later"))) == KEY_TAKEN
        assert await writer.submit(InsertMessage(other, _answer("k1", b"o", "other"))) is None
        assert await _stored(db_pool, later) == 0
        assert await _stored(db_pool, other) == 1
    finally:
        await writer.stop()


async def test_a_key_past_its_24_hours_is_free_again(db_pool: asyncpg.Pool) -> None:
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        assert await writer.submit(InsertMessage([_message(1)], _answer("old", b"1"))) is None
        await db_pool.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'"
        )
        assert await idempotent_answer(db_pool, "acc", "old") is None
        again = [_message(3)]
        assert await writer.submit(InsertMessage(again, _answer("old", b"3"))) is None
        assert await _stored(db_pool, again) == 1
        assert await idempotent_answer(db_pool, "acc", "old") == (b"h" * 32, 202, b"3")
    finally:
        await writer.stop()


async def _keys(pool: asyncpg.Pool) -> list[tuple[str, date]]:
    rows = await pool.fetch("SELECT key, day FROM idempotency_keys ORDER BY key, day")
    return [(r["key"], r["day"]) for r in rows]


async def _taken_yesterday(pool: asyncpg.Pool, key: str, at: datetime, *, carried: bool) -> None:
    """Make the key's rows those of a key taken at `at` on the day before
    today: its row in yesterday's partition and, when `carried` (taken in
    that day's last hour, migration 0019), one in today's."""
    async with pool.acquire() as conn:
        await partitions.create_partition(conn, IDEMPOTENCY_KEYS, _today() - timedelta(days=1))
    await pool.execute("DELETE FROM idempotency_keys WHERE key = $1 AND day > $2", key, _today())
    await pool.execute(
        "UPDATE idempotency_keys SET day = day - 1, created_at = $2 WHERE key = $1", key, at
    )
    if carried:
        await pool.execute(
            "INSERT INTO idempotency_keys"
            " (account_id, key, day, request_hash, status, body, message_id, created_at)"
            " SELECT account_id, key, day + 1, request_hash, status, body, message_id, created_at"
            " FROM idempotency_keys WHERE key = $1",
            key,
        )


def _today() -> date:
    return datetime.now(UTC).date()


async def _carried(pool: asyncpg.Pool, key: str) -> bool:
    """Whether the key's row of today was taken in the day's last hour, so
    that it is carried into tomorrow's partition too (migration 0019)."""
    carried: bool = await pool.fetchval(
        "SELECT idempotency_key_carried(created_at) FROM idempotency_keys"
        " WHERE key = $1 AND day = $2",
        key,
        _today(),
    )
    return carried


async def test_a_key_is_carried_into_the_next_day_only_from_its_last_hour(
    db_pool: asyncpg.Pool,
) -> None:
    """The hour is the UTC day's, whatever the session's time zone."""
    async with db_pool.acquire() as conn:
        await conn.execute("SET TIME ZONE 'America/New_York'")
        for at, carried in (
            ("2026-12-06 22:59:59.999999+00", False),
            ("2026-12-06 23:00:00+00", True),
            ("2026-12-06 23:59:59.999999+00", True),
            ("2026-12-07 00:00:00+00", False),
            ("2026-12-07 12:00:00+00", False),
            ("2026-12-06 18:30:00-05", True),  # 23:30 UTC
        ):
            assert await conn.fetchval("SELECT idempotency_key_carried($1::timestamptz)",
                                       datetime.fromisoformat(at)) is carried, at  # fmt: skip


async def test_a_key_is_one_row_in_its_day_carried_only_late(db_pool: asyncpg.Pool) -> None:
    """Partitions by day share no unique index (migrations 0012, 0019): a
    key is written into its day's partition, and into the next one too
    when taken in its day's last hour, by either of the fast (the trigger)
    and careful (a key reused) paths."""
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        today, tomorrow = _today(), _today() + timedelta(days=1)
        assert await writer.submit(InsertMessage([_message(1)], _answer("fast", b"1"))) is None
        expected = [("fast", today)]
        if await _carried(db_pool, "fast"):
            expected.append(("fast", tomorrow))
        assert await _keys(db_pool) == expected
        # The same key twice in one flush sends the writer the careful way.
        results = await asyncio.gather(
            writer.submit(InsertMessage([_message(2)], _answer("careful", b"2"))),
            writer.submit(InsertMessage([_message(3)], _answer("careful", b"3"))),
        )
        assert results == [None, KEY_TAKEN]
        days = [d for k, d in await _keys(db_pool) if k == "careful"]
        assert days == ([today, tomorrow] if await _carried(db_pool, "careful") else [today])
        assert await idempotent_answer(db_pool, "acc", "careful") == (b"h" * 32, 202, b"2")
    finally:
        await writer.stop()


async def test_a_key_taken_before_midnight_refuses_its_repeat_after_it(
    db_pool: asyncpg.Pool,
) -> None:
    """A key taken in yesterday's last hour is carried into today's
    partition, whose unique index refuses its repeat."""
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        assert await writer.submit(InsertMessage([_message(1)], _answer("late", b"1"))) is None
        a_minute_before_midnight = day_start(_today()) - timedelta(minutes=1)
        await _taken_yesterday(db_pool, "late", a_minute_before_midnight, carried=True)
        assert await idempotent_answer(db_pool, "acc", "late") == (b"h" * 32, 202, b"1")
        repeat = [_message(2)]
        assert await writer.submit(InsertMessage(repeat, _answer("late", b"2"))) == KEY_TAKEN
        assert await _stored(db_pool, repeat) == 0
        assert await idempotent_answer(db_pool, "acc", "late") == (b"h" * 32, 202, b"1")
    finally:
        await writer.stop()


async def test_a_key_only_in_yesterdays_partition_refuses_its_repeat(
    db_pool: asyncpg.Pool,
) -> None:
    """A key of yesterday's partition less than 24 h old, not carried, is
    found by the look into yesterday (migration 0019): by the trigger, which
    raises what yesterday's unique index would, and by the careful path."""
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        assert await writer.submit(InsertMessage([_message(1)], _answer("y", b"1"))) is None
        twenty_three_hours_ago = datetime.now(UTC) - timedelta(hours=23)
        await _taken_yesterday(db_pool, "y", twenty_three_hours_ago, carried=False)
        assert await _keys(db_pool) == [("y", _today() - timedelta(days=1))]
        assert await idempotent_answer(db_pool, "acc", "y") == (b"h" * 32, 202, b"1")
        # Alone in its flush: the trigger refuses it.
        repeat = [_message(2)]
        assert await writer.submit(InsertMessage(repeat, _answer("y", b"2"))) == KEY_TAKEN
        # Twice in one flush: the careful path refuses both.
        twice = [_message(3)], [_message(4)]
        results = await asyncio.gather(
            writer.submit(InsertMessage(twice[0], _answer("y", b"3"))),
            writer.submit(InsertMessage(twice[1], _answer("y", b"4"))),
        )
        assert results == [KEY_TAKEN, KEY_TAKEN]
        assert await _stored(db_pool, [*repeat, *twice[0], *twice[1]]) == 0
        assert await _keys(db_pool) == [("y", _today() - timedelta(days=1))]
        assert await idempotent_answer(db_pool, "acc", "y") == (b"h" * 32, 202, b"1")
    finally:
        await writer.stop()


async def test_a_key_of_yesterday_past_its_24_hours_is_free_again(
    db_pool: asyncpg.Pool,
) -> None:
    """Whether or not it was carried into today's partition."""
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        today = _today()
        for n, (key, carried) in enumerate((("early", False), ("early-carried", True))):
            first = InsertMessage([_message(10 * n + 1)], _answer(key, b"1"))
            assert await writer.submit(first) is None
            twenty_five_hours_ago = datetime.now(UTC) - timedelta(hours=25)
            await _taken_yesterday(db_pool, key, twenty_five_hours_ago, carried=carried)
            assert await idempotent_answer(db_pool, "acc", key) is None
            again = [_message(10 * n + 2)]
            assert await writer.submit(InsertMessage(again, _answer(key, b"2"))) is None
            assert await _stored(db_pool, again) == 1
            assert await idempotent_answer(db_pool, "acc", key) == (b"h" * 32, 202, b"2")
            days = [today - timedelta(days=1), today]
            if await _carried(db_pool, key):
                days.append(today + timedelta(days=1))
            assert [d for k, d in await _keys(db_pool) if k == key] == days
    finally:
        await writer.stop()


async def test_an_answer_made_again_from_its_message_is_not_stored(
    db_pool: asyncpg.Pool,
) -> None:
    """A 202 marked `from_message` is not written with its message: the
    look-up gives the message's fields to make it again from, by the fast
    path; the careful path keeps the body with the key."""
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        fast = _message(1)
        answer = IdempotentAnswer("acc", "made", b"h" * 32, 202, b"202", from_message=True)
        assert await writer.submit(InsertMessage([fast], answer)) is None
        assert await db_pool.fetchval(
            "SELECT answer_body IS NULL FROM messages WHERE id = $1", fast.id
        )
        assert await idempotent_answer(db_pool, "acc", "made") == (
            b"h" * 32,
            202,
            AcceptedMessage(fast.id, fast.recipient, 1, "gsm7", Decimal("0.0062")),
        )
        # The careful way (the same key twice in a flush) stores the body.
        results = await asyncio.gather(
            writer.submit(InsertMessage([_message(2)], _answer_made("kept", b"2"))),
            writer.submit(InsertMessage([_message(3)], _answer_made("kept", b"3"))),
        )
        assert results == [None, KEY_TAKEN]
        assert await idempotent_answer(db_pool, "acc", "kept") == (b"h" * 32, 202, b"2")
    finally:
        await writer.stop()


def _answer_made(key: str, body: bytes) -> IdempotentAnswer:
    return IdempotentAnswer("acc", key, b"h" * 32, 202, body, from_message=True)
