"""The group-commit writers when the database fails under them (CONTRACT §11):
a connection killed by the server loses nothing and doubles nothing; a
retrying writer holds what it could not write until the database is back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlsplit

import asyncpg
import pytest

from smsrouter.router.messages import Message, Status, new_message_id
from smsrouter.router.notifications import WEBHOOK, OutboxPlanner
from smsrouter.router.store import (
    CommitListeners,
    GroupCommit,
    InsertMessage,
    MessageEnded,
    PartSent,
    StoreError,
    pending_notifications,
    stored_message_ids,
)
from smsrouter.router.store.notices import expand_batches
from tests.integration.test_webhooks import Created
from tests.own_pg import OwnPostgres
from tests.pg_proxy import PgProxy
from tests.tools import open_accounts

WAIT = 60.0


def _message(n: int) -> Message:
    return Message(
        id=new_message_id(),
        account_id="acc",
        ingress="http",
        sender="+14155550101",
        recipient=f"+1415555{n:04d}",
        body=f"text {n}",
        encoding="gsm7",
        data_coding=0,
        parts=1,
        price=Decimal("0.0062"),
        created_at=datetime.now(UTC),
    )


async def _terminate_writers(pool: asyncpg.Pool, dsn: str) -> int:
    """pg_terminate_backend of every other session of this database, as an
    operator (or a failover) would."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


async def _until_unhealthy(writer: GroupCommit) -> None:
    outage = asyncio.Event()
    writer.on_health.append(lambda healthy: outage.set() if not healthy else None)
    if writer.healthy:
        await outage.wait()


async def test_terminated_backends_lose_and_double_nothing(database_url: str) -> None:
    """Three pg_terminate_backend rounds during a stream of sent parts: every
    part is recorded exactly once, and the writer ends healthy."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    ingest = GroupCommit(pool, name="ingest")
    writer = GroupCommit(pool, retry=True)
    ingest.start()
    writer.start()
    health: list[bool] = []
    writer.on_health.append(health.append)
    try:
        messages = [_message(i) for i in range(600)]
        await ingest.run(InsertMessage(messages))
        recorded: list[asyncio.Future[object]] = []
        async with asyncio.timeout(WAIT):
            for i, m in enumerate(messages):
                recorded.append(writer.submit(PartSent(m.id, 0, "sim", f"c{i}", datetime.now(UTC))))
                if i % 150 == 149:
                    killed = await _terminate_writers(pool, database_url)
                    assert killed >= 1
                await asyncio.sleep(0.002)
            outcomes = await asyncio.gather(*recorded, return_exceptions=True)
        assert not [o for o in outcomes if isinstance(o, BaseException)]
        rows = await pool.fetch("SELECT message_id, count(*) AS n FROM carrier_submits GROUP BY 1")
        assert len(rows) == len(messages)
        assert {r["n"] for r in rows} == {1}
        assert writer.healthy
        assert health == [] or health[-1] is True
    finally:
        await ingest.stop()
        await writer.stop()
        await pool.close()


async def test_retrying_writer_holds_operations_through_an_outage(own_pg: OwnPostgres) -> None:
    """The server killed and restarted: a retrying writer reports the outage,
    keeps the operations, and commits them once the server is back; an
    intake writer fails its callers at once."""
    pool = await asyncpg.create_pool(own_pg.dsn, min_size=1, max_size=4)
    await open_accounts(pool, "acc")
    ingest = GroupCommit(pool, name="ingest")
    writer = GroupCommit(pool, retry=True)
    ingest.start()
    writer.start()
    health: list[bool] = []
    writer.on_health.append(health.append)
    try:
        messages = [_message(i) for i in range(50)]
        await ingest.run(InsertMessage(messages))
        own_pg.kill_postmaster()
        held = [
            writer.submit(PartSent(m.id, 0, "sim", f"c{i}", datetime.now(UTC)))
            for i, m in enumerate(messages)
        ]
        refused = ingest.submit(InsertMessage([_message(99)]))
        async with asyncio.timeout(WAIT):
            try:
                await refused
                raise AssertionError("an insert was acknowledged with the database down")
            except StoreError:
                pass
            await _until_unhealthy(writer)
        await asyncio.sleep(1.0)
        assert not any(f.done() for f in held), "held operations must wait, not fail"
        await own_pg.restart()
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*held)
        assert health == [False, True]
        assert await pool.fetchval("SELECT count(*) FROM carrier_submits") == len(messages)
    finally:
        await ingest.stop()
        await writer.stop(give_up_after=1.0)
        await pool.close()


async def test_stop_gives_up_after_its_deadline(own_pg: OwnPostgres) -> None:
    """A database that never returns cannot hold shutdown for ever."""
    pool = await asyncpg.create_pool(own_pg.dsn, min_size=1, max_size=2)
    await open_accounts(pool, "acc")
    writer = GroupCommit(pool, retry=True)
    writer.start()
    try:
        own_pg.kill_postmaster()
        op = writer.submit(PartSent(new_message_id(), 0, "sim", "c", datetime.now(UTC)))
        async with asyncio.timeout(WAIT):
            await _until_unhealthy(writer)
            await writer.stop(give_up_after=0.5)
        assert isinstance(op.exception(), StoreError)
    finally:
        pool.terminate()


@dataclass
class Proxied:
    """A database reached directly and through a PgProxy."""

    proxy: PgProxy
    direct: asyncpg.Pool
    proxied: asyncpg.Pool


@pytest.fixture
async def through_proxy(database_url: str) -> AsyncIterator[Proxied]:
    url = urlsplit(database_url)
    proxy = PgProxy(url.hostname or "127.0.0.1", url.port or 5432)
    await proxy.start()
    direct = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    proxied = await asyncpg.create_pool(
        database_url.replace(f":{url.port}/", f":{proxy.port}/"), min_size=1, max_size=2
    )
    await open_accounts(direct, "acc")
    try:
        yield Proxied(proxy, direct, proxied)
    finally:
        await proxied.close()
        await direct.close()
        await proxy.stop()


async def test_a_commit_whose_answer_is_lost_hands_over_its_notification_batch(
    through_proxy: Proxied,
) -> None:
    """The status flush that ends a message lands, and its answer is lost
    on the way back (a proxy drops it). The retried flush finds the message
    ended and plans nothing: the notification lives only in the batch the
    lost commit wrote. The planner hands that batch over as in doubt, and
    turned into outbox rows (what the daemon does once the database is
    back) it gives the webhook under the id it was planned with."""
    proxy, direct, proxied = through_proxy.proxy, through_proxy.direct, through_proxy.proxied
    planner = OutboxPlanner(72)
    heard = Created()
    writer = GroupCommit(proxied, retry=True, listener=CommitListeners(planner, heard))
    writer.start()
    try:
        m = _message(1)
        m.callback_url = "http://127.0.0.1:9/dlr"
        await writer.run(InsertMessage([m]))
        proxy.lose_next_commit_answer()
        async with asyncio.timeout(WAIT):
            ended = await writer.run(
                MessageEnded(m.id, Status.REJECTED, "no_route", datetime.now(UTC))
            )
        assert proxy.dropped == 1
        # Ended by the commit whose answer was lost: the retry ended nothing.
        assert ended is None and heard == []
        assert await direct.fetchval("SELECT status FROM messages WHERE id = $1", m.id) == (
            "rejected"
        )
        (batch,) = planner.take_doubtful()
        async with direct.acquire() as conn:
            assert await expand_batches(conn, None, ids=[batch]) == 1
        (row,) = await pending_notifications(direct)
        assert (row.kind, row.message_id, row.target) == (WEBHOOK, m.id, m.callback_url)
        assert json.loads(row.payload)["status"] == "rejected"
        planned = await direct.fetchval("SELECT last_value FROM outbox_id_seq")
        assert row.id & ((1 << 47) - 1) == planned  # the id it was planned with
    finally:
        await writer.stop(give_up_after=1.0)


async def test_an_insert_whose_answer_is_lost_is_in_doubt(through_proxy: Proxied) -> None:
    """The COPY that stores a flush (its own transaction) lands and its
    answer is lost: asyncpg raises a PostgresError of class 08 that the
    server never sent. The writer reports the flush in doubt, so that the
    intake looks the messages up once the database answers again (they
    are stored) instead of telling their callers they were not."""
    proxy, direct = through_proxy.proxy, through_proxy.direct
    ingest = GroupCommit(through_proxy.proxied, name="ingest")
    ingest.start()
    try:
        m = _message(2)
        proxy.lose_next_copy_answer()
        async with asyncio.timeout(WAIT):
            try:
                await ingest.run(InsertMessage([m]))
                raise AssertionError("the lost answer was not noticed")
            except StoreError as exc:
                error = exc
        assert proxy.dropped == 1
        assert error.in_doubt, str(error)
        assert await stored_message_ids(direct, [m.id]) == {m.id}
    finally:
        await ingest.stop()
