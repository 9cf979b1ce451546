"""A lease round against PostgreSQL (CONTRACT §9): what `leases.renew`
renews and what it reports lost."""

from __future__ import annotations

import uuid

import asyncpg

from smsrouter.router.store import leases

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
