"""The SQL of instances and shard leases (CONTRACT §9, migration 0011).

Every time is the database's: instances on several hosts agree on nothing
else. A lease expires `lease_seconds` after its owner last renewed it;
its epoch rises at every takeover and fences the old owner's writes
(`writes._parts_sent`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from smsrouter.router.store.notices import expand_batches
from smsrouter.router.store.operations import Notification

# NOTIFY channels: shards handed back (others claim them at once rather
# than at their next renewal), and messages stored by one instance for a
# shard another owns (the payload names them).
SHARDS_CHANNEL = "smsrouter_shards"
WAKE_CHANNEL = "smsrouter_wake"

# A NOTIFY payload must stay under 8,000 bytes: message ids as 32 hex
# digits, comma-separated.
IDS_PER_NOTICE = 200


class InstanceTaken(Exception):
    """Another live instance holds this instance id."""


@dataclass(frozen=True, slots=True)
class Claimed:
    shard: int
    epoch: int
    # Seconds ago (by the database's clock) from when the shard's previous
    # owner sent nothing; None when it never had one.
    quiet_for: float | None


@dataclass(frozen=True, slots=True)
class Renewal:
    lost: list[int]  # shards held here whose lease was taken over meanwhile
    live_instances: int
    claimable: list[int]  # free or expired shards, lowest first
    # Instances whose heartbeat stopped: their outbox rows were set free.
    reaped: list[str]
    # Whether this incarnation's instance row is still its own.
    registered: bool


async def register(
    conn: asyncpg.Connection, instance_id: str, incarnation: uuid.UUID, lease_seconds: float
) -> bool:
    """Take the instance row for this run; False while another live run
    (one whose heartbeat is younger than a lease) holds the id."""
    row = await conn.fetchrow(
        "INSERT INTO instances (id, incarnation) VALUES ($1, $2)"
        " ON CONFLICT (id) DO UPDATE SET incarnation = EXCLUDED.incarnation,"
        "   started_at = now(), seen_at = now()"
        " WHERE instances.seen_at < now() - make_interval(secs => $3)"
        "    OR instances.incarnation = EXCLUDED.incarnation"
        " RETURNING id",
        instance_id,
        incarnation,
        lease_seconds,
    )
    return row is not None


def _array_literal(numbers: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers: '{1,2,3}'."""
    return "{" + ",".join(map(str, numbers)) + "}"


async def renew(
    conn: asyncpg.Connection,
    instance_id: str,
    incarnation: uuid.UUID,
    held: dict[int, int],
    lease_seconds: float,
) -> Renewal:
    """One round: the heartbeat, the leases held (by shard and epoch: one
    taken over meanwhile is not renewed), the live count, what may be
    claimed, and the outbox rows of instances that stopped beating."""
    async with conn.transaction():
        registered = (
            await conn.fetchval(
                "UPDATE instances SET seen_at = now() WHERE id = $1 AND incarnation = $2"
                " RETURNING true",
                instance_id,
                incarnation,
            )
            is not None
        )
        # Every held lease goes each round (1,024 when alone): as array
        # literals, one text parameter each, which PostgreSQL parses in C;
        # asyncpg checks and encodes an int array element by element. Only
        # the leases not renewed come back, nearly always none.
        lost = await conn.fetchval(
            "WITH h AS (SELECT * FROM unnest($2::text::int2[], $3::text::int8[]) AS h(shard, epoch)),"
            " renewed AS (UPDATE shard_leases l SET expires_at = now() + make_interval(secs => $4)"
            "   FROM h WHERE l.shard = h.shard AND l.epoch = h.epoch AND l.owner = $1"
            "   RETURNING l.shard)"
            " SELECT coalesce(array_agg(h.shard ORDER BY h.shard), '{}') FROM h"
            " WHERE h.shard NOT IN (SELECT shard FROM renewed)",
            instance_id,
            _array_literal(held),
            _array_literal(held.values()),
            lease_seconds,
        )
        live = await conn.fetchval(
            "SELECT count(*) FROM instances WHERE seen_at >= now() - make_interval(secs => $1)",
            lease_seconds,
        )
        claimable = await conn.fetch(
            "SELECT shard FROM shard_leases WHERE owner IS NULL OR expires_at < now()"
            " ORDER BY shard"
        )
        # Twice the lease: a heartbeat late by one renewal is not death.
        reaped = await conn.fetch(
            "DELETE FROM instances WHERE seen_at < now() - make_interval(secs => $1 * 2)"
            " RETURNING id",
            lease_seconds,
        )
        if reaped:
            gone = [r["id"] for r in reaped]
            await conn.execute(
                "UPDATE outbox SET owner = NULL WHERE done_at IS NULL AND owner = ANY($1::text[])",
                gone,
            )
            # What their notification batches held, as rows no one holds.
            await expand_batches(conn, None, owners=gone)
    return Renewal(
        lost=list(lost),
        live_instances=int(live),
        claimable=[r["shard"] for r in claimable],
        reaped=[r["id"] for r in reaped],
        registered=registered,
    )


async def claim(
    conn: asyncpg.Connection, instance_id: str, shards: list[int], lease_seconds: float
) -> list[Claimed]:
    """Take these shards if they are still free or expired (another
    instance may have been quicker), each with a new epoch."""
    rows = await conn.fetch(
        "UPDATE shard_leases l SET owner = $1, epoch = l.epoch + 1,"
        "   expires_at = now() + make_interval(secs => $3),"
        # An expired lease's owner went quiet when its lease ran out; a
        # handed-back one when it handed it back.
        "   quiet_since = CASE WHEN l.owner IS NULL THEN l.quiet_since ELSE l.expires_at END"
        " FROM (SELECT shard FROM shard_leases WHERE shard = ANY($2::int2[])"
        "         AND (owner IS NULL OR expires_at < now())"
        "       ORDER BY shard FOR UPDATE SKIP LOCKED) AS free"
        " WHERE l.shard = free.shard"
        " RETURNING l.shard, l.epoch,"
        "   CASE WHEN l.quiet_since = '-infinity' THEN NULL"
        "        ELSE extract(epoch FROM now() - l.quiet_since)::float8 END AS quiet_for",
        instance_id,
        shards,
        lease_seconds,
    )
    return [Claimed(r["shard"], r["epoch"], r["quiet_for"]) for r in rows]


async def release(conn: asyncpg.Connection, instance_id: str, held: dict[int, int]) -> None:
    """Hand these shards back at once (a stop, or a surplus), and tell the
    others."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE shard_leases l SET owner = NULL, expires_at = '-infinity', quiet_since = now()"
            " FROM unnest($2::int2[], $3::int8[]) AS h(shard, epoch)"
            " WHERE l.shard = h.shard AND l.epoch = h.epoch AND l.owner = $1",
            instance_id,
            list(held),
            list(held.values()),
        )
        await conn.execute("SELECT pg_notify($1, $2)", SHARDS_CHANNEL, instance_id)


async def leave(conn: asyncpg.Connection, instance_id: str, incarnation: uuid.UUID) -> None:
    """A stopping instance: its row goes and its undelivered outbox rows are
    set free, with what its notification batches still hold, so that the
    others see it gone at once."""
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM instances WHERE id = $1 AND incarnation = $2", instance_id, incarnation
        )
        await conn.execute(
            "UPDATE outbox SET owner = NULL WHERE done_at IS NULL AND owner = $1", instance_id
        )
        await expand_batches(conn, None, owners=[instance_id])
        await conn.execute("SELECT pg_notify($1, $2)", SHARDS_CHANNEL, instance_id)


def wake_notices(ids: list[uuid.UUID]) -> list[str]:
    """NOTIFY payloads naming these messages, each under the size limit."""
    return [
        ",".join(i.hex for i in ids[at : at + IDS_PER_NOTICE])
        for at in range(0, len(ids), IDS_PER_NOTICE)
    ]


def ids_of_notice(payload: str) -> list[uuid.UUID]:
    """The messages a wake notice names; none for a malformed payload."""
    try:
        return [uuid.UUID(hex=h) for h in payload.split(",") if h]
    except ValueError:
        return []


_NOTIFICATION_COLUMNS = (
    "o.id, o.kind, o.account_id, o.message_id, o.target, o.payload, o.attempts,"
    " o.next_attempt_at, o.expires_at"
)


async def claim_outbox(
    conn: asyncpg.Connection, instance_id: str, receiving_accounts: list[str], limit: int
) -> list[Notification]:
    """Take outbox rows no instance holds: any webhook or MO forward by
    HTTP; a receipt or MO for an SMPP bind only for an account with a
    receiving bind here. Locked rows are another instance's claim."""
    rows = await conn.fetch(
        "UPDATE outbox o SET owner = $1"
        " FROM (SELECT id FROM outbox WHERE done_at IS NULL AND owner IS NULL"
        "         AND (kind = 'webhook' OR (kind = 'mo' AND target IS NOT NULL)"
        "              OR account_id = ANY($2::text[]))"
        "       ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) AS free"
        f" WHERE o.id = free.id RETURNING {_NOTIFICATION_COLUMNS}",
        instance_id,
        receiving_accounts,
        limit,
    )
    return [Notification(**dict(r)) for r in rows]


async def free_outbox(conn: asyncpg.Connection, instance_id: str, ids: list[int]) -> None:
    """Rows this instance cannot deliver (no receiving bind of their account
    here) go to whichever instance has one."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE outbox SET owner = NULL WHERE id = ANY($2::int8[]) AND owner = $1"
            " AND done_at IS NULL",
            instance_id,
            ids,
        )
        await conn.execute("SELECT pg_notify($1, $2)", SHARDS_CHANNEL, instance_id)
