"""PostgreSQL's ceiling bench (bench/pg_ceiling.py) drives the router's own
writes: a few rounds of one writer take messages through their whole life
in the database, as scenario 1 does."""

from __future__ import annotations

import os
from decimal import Decimal

import asyncpg

from bench.pg_ceiling import (
    CREDIT,
    INSTANCE,
    PRICE,
    Counters,
    Traffic,
    Writer,
    connect_writer,
    postmaster_of,
    prepare,
)
from bench.procs import process_tree
from tests.pg import ENV_URL


async def test_rounds_take_messages_stored_sent_ended_and_notified(database_url: str) -> None:
    control = await asyncpg.connect(database_url)
    conn = await connect_writer(database_url, "on")
    try:
        shard, epoch = await prepare(control, accounts=1)
        counters = Counters()
        writer = Writer(conn, Traffic(0, "bench"), 4, shard, epoch, counters)
        for _ in range(3):
            await writer.round()
        # Round 1's batch is through (its notifications done in round 3),
        # round 2's ended with its notification batch waiting, round 3's is
        # sent.
        assert (counters.completed, counters.flushes) == (4, 6)
        statuses = dict(
            await control.fetch("SELECT status, count(*) FROM messages GROUP BY status")
        )
        assert statuses == {"delivered": 8, "queued": 4}
        # A single-part message's outcome is written on its row alone.
        submits = await control.fetch("SELECT status, count(*) FROM carrier_submits GROUP BY 1")
        assert dict(submits) == {"sent": 12}
        # One batch row for round 2's four webhooks, round 1's settled.
        assert await control.fetchval("SELECT count(*) FROM outbox") == 0
        batches = await control.fetch("SELECT owner, kinds FROM notification_batches")
        assert [(r["owner"], r["kinds"]) for r in batches] == [(INSTANCE, ["webhook"] * 4)]
        # Each key is kept in its day's partition and the next (migration 0012).
        keys = "SELECT count(DISTINCT (account_id, key)) FROM idempotency_keys"
        assert await control.fetchval(keys) == 12
        # Each insert debited the account once, with its ledger row.
        assert await control.fetchval("SELECT count(*) FROM ledger WHERE kind = 'reserve'") == 3
        credit = await control.fetchval("SELECT credit FROM accounts WHERE id = 'bench'")
        assert credit == Decimal(CREDIT) - 12 * PRICE
    finally:
        await conn.close()
        await control.close()


async def test_postgresql_cpu_is_read_from_the_servers_own_processes(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        postmaster = await postmaster_of(conn)
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        if os.environ.get(ENV_URL):
            return  # a server of the environment's: perhaps on another machine
        assert postmaster is not None
        assert backend in process_tree([postmaster])
    finally:
        await conn.close()
