"""A lease round against PostgreSQL (CONTRACT §9): what `leases.renew`
renews and what it reports lost."""

from __future__ import annotations

import uuid

import asyncpg

from smsrouter.router.messages import new_message_id
from smsrouter.router.notifications import WEBHOOK
from smsrouter.router.store import leases
from smsrouter.router.store.notices import INSERT_BATCH

LEASE = 5.0


async def _expires(conn: asyncpg.Connection, shards: list[int]) -> dict[int, float]:
    rows = await conn.fetch(
        "SELECT shard, extract(epoch FROM expires_at - now())::float8 AS left_"
        " FROM shard_leases WHERE shard = ANY($1::int2[])",
        shards,
    )
    return {r["shard"]: r["left_"] for r in rows}


async def test_a_round_renews_the_leases_held_and_reports_those_taken_over(
    db_pool: asyncpg.Pool,
) -> None:
    async with db_pool.acquire() as conn:
        me, other = uuid.uuid4(), uuid.uuid4()
        assert await leases.register(conn, "a", me, LEASE)
        assert await leases.register(conn, "b", other, LEASE)
        held = {c.shard: c.epoch for c in await leases.claim(conn, "a", [1, 2, 3, 700], LEASE)}
        assert sorted(held) == [1, 2, 3, 700]
        # Shard 2 expired and another instance took it (a new epoch); this
        # process believes it holds shard 3 under an epoch it no longer has
        # (its lease was taken and given back meanwhile).
        await conn.execute(
            "UPDATE shard_leases SET expires_at = now() - interval '1 second' WHERE shard = 2"
        )
        assert [c.shard for c in await leases.claim(conn, "b", [2], LEASE)] == [2]
        await conn.execute("UPDATE shard_leases SET epoch = epoch + 1 WHERE shard = 3")
        await conn.execute(
            "UPDATE shard_leases SET expires_at = now() + interval '1 second'"
            " WHERE shard = ANY('{1,3,700}'::int2[])"
        )

        renewal = await leases.renew(conn, "a", me, held, LEASE)

        assert renewal.lost == [2, 3]
        assert renewal.registered
        assert renewal.live_instances == 2
        left = await _expires(conn, [1, 2, 3, 700])
        # Renewed for a whole lease: those still held as sent.
        assert left[1] > LEASE - 1 and left[700] > LEASE - 1
        # Not renewed: the one another instance holds keeps its own lease,
        # the one of another epoch is left to run out.
        assert left[3] < LEASE - 1
        owner_of_2 = await conn.fetchval("SELECT owner FROM shard_leases WHERE shard = 2")
        assert owner_of_2 == "b"


async def test_a_round_holding_nothing_loses_nothing(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        me = uuid.uuid4()
        assert await leases.register(conn, "a", me, LEASE)
        renewal = await leases.renew(conn, "a", me, {}, LEASE)
        assert renewal.lost == []
        assert renewal.registered
        assert 0 in renewal.claimable


async def _ended_with_callback(conn: asyncpg.Connection, owner: str) -> tuple[int, int]:
    """A message ended with a callback owed, and the batch `owner`'s status
    flush kept it in (migration 0018): (batch, outbox id)."""
    message_id = new_message_id()
    await conn.execute(
        "INSERT INTO messages (id, account_id, ingress, sender, recipient, body, encoding,"
        "   data_coding, parts, price, status, callback_url, created_at, done_at)"
        " VALUES ($1, 'acc', 'http', '+14155550101', '+14155550123', 'hi', 'gsm7', 0, 1, 0,"
        "   'delivered', 'http://127.0.0.1:9/dlr', now(), now())",
        message_id,
    )
    row = await conn.fetchrow(INSERT_BATCH, [message_id], [WEBHOOK], 72.0)
    await conn.execute("UPDATE notification_batches SET owner = $1 WHERE id = $2", owner, row[0])
    return row[0], row[1][0]


async def _unowned_outbox(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT id FROM outbox WHERE owner IS NULL ORDER BY id")
    return [r["id"] for r in rows]


async def test_a_stopping_instance_leaves_its_batches_as_rows_for_any_to_claim(
    db_pool: asyncpg.Pool,
) -> None:
    async with db_pool.acquire() as conn:
        me = uuid.uuid4()
        assert await leases.register(conn, "a", me, LEASE)
        _, mine = await _ended_with_callback(conn, "a")
        _, others = await _ended_with_callback(conn, "b")
        await leases.leave(conn, "a", me)
        assert await _unowned_outbox(conn) == [mine]
        assert await conn.fetchval("SELECT owner FROM notification_batches") == "b"
        (claimed,) = await leases.claim_outbox(conn, "b", [], 10)
        assert (claimed.id, claimed.kind, claimed.target) == (
            mine,
            WEBHOOK,
            "http://127.0.0.1:9/dlr",
        )
        assert others != mine


async def test_a_round_that_reaps_an_instance_leaves_its_batches_as_rows(
    db_pool: asyncpg.Pool,
) -> None:
    async with db_pool.acquire() as conn:
        me, dead = uuid.uuid4(), uuid.uuid4()
        assert await leases.register(conn, "a", me, LEASE)
        assert await leases.register(conn, "b", dead, LEASE)
        _, its = await _ended_with_callback(conn, "b")
        _, mine = await _ended_with_callback(conn, "a")
        renewal = await leases.renew(conn, "a", me, {}, LEASE)
        assert renewal.reaped == [] and await _unowned_outbox(conn) == []
        # b stops beating for two leases.
        await conn.execute(
            "UPDATE instances SET seen_at = now() - interval '1 minute' WHERE id = 'b'"
        )
        renewal = await leases.renew(conn, "a", me, {}, LEASE)
        assert renewal.reaped == ["b"]
        assert await _unowned_outbox(conn) == [its]
        # This instance's own batch is its own still.
        assert await conn.fetchval("SELECT owner FROM notification_batches") == "a"
        assert mine != its
