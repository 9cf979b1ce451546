"""Idempotency-Keys in the store (CONTRACT §3), on a real PostgreSQL: a key
is taken in the commit that stores its request's messages, by one request
only, whether the other came in the same flush or a later one; after 24 h
it is free again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from smsrouter.router.messages import Message, new_message_id
from smsrouter.router.store.group_commit import GroupCommit
from smsrouter.router.store.operations import KEY_TAKEN, IdempotentAnswer, InsertMessage
from smsrouter.router.store.queries import forget_idempotency_keys, idempotent_answer


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


async def test_a_key_past_its_24_hours_is_free_again_and_swept(db_pool: asyncpg.Pool) -> None:
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        assert await writer.submit(InsertMessage([_message(1)], _answer("old", b"1"))) is None
        assert await writer.submit(InsertMessage([_message(2)], _answer("new", b"2"))) is None
        await db_pool.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'"
        )
        assert await idempotent_answer(db_pool, "acc", "old") is None
        again = [_message(3)]
        assert await writer.submit(InsertMessage(again, _answer("old", b"3"))) is None
        assert await _stored(db_pool, again) == 1
        assert await idempotent_answer(db_pool, "acc", "old") == (b"h" * 32, 202, b"3")

        await db_pool.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'new'"
        )
        assert await forget_idempotency_keys(db_pool) == 1
        assert await db_pool.fetchval("SELECT array_agg(key) FROM idempotency_keys") == ["old"]
    finally:
        await writer.stop()
