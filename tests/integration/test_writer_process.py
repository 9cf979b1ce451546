"""The writer process against a real PostgreSQL: operations committed in a
child process, outcomes and outbox rows back, its death and its drain."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime

import asyncpg
import pytest

from router import metrics, writer_wire
from router.messages import Status
from router.notifications import WEBHOOK
from router.store import (
    CarrierReceipt,
    Finished,
    InsertMessage,
    Notification,
    PartSent,
    StoreError,
)
from router.writer_process import WriterProcess
from tests.integration.test_store import _message


def _hello(dsn: str, **kw: object) -> writer_wire.Hello:
    fields: dict[str, object] = {
        "dsn": dsn,
        "max_batch": 2000,
        "ingest_connections": 2,
        "status_flush_interval": 0.0,
        "retry_hours": 72.0,
    }
    fields.update(kw)
    return writer_wire.Hello(**fields)  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _exited(pid: int) -> bool:
    for _ in range(200):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.fixture
async def writers(database_url: str):  # type: ignore[no-untyped-def]
    process = WriterProcess(_hello(database_url), restart_delay=0.05)
    await process.start()
    try:
        yield process
    finally:
        pid = process.pid
        await process.stop()
        assert pid is not None and await _exited(pid)


async def test_a_message_and_its_receipt_through_the_writer_process(
    writers: WriterProcess, db_pool: asyncpg.Pool
) -> None:
    created: list[Notification] = []
    writers.status.on_notifications = created.extend
    m = _message(1, callback_url="http://127.0.0.1:1/dlr", client_ref="ref")
    assert await writers.ingest.run(InsertMessage.of([m])) is None
    now = datetime.now(UTC)
    assert await writers.status.run(PartSent(m.id, 0, "sim", "abc", now)) is None
    early = await writers.status.run(CarrierReceipt("sim", "zzz", Status.DELIVERED, "", now))
    assert early is False
    finished = await writers.status.run(CarrierReceipt("sim", "abc", Status.DELIVERED, "", now))
    assert finished == Finished(m.id, Status.DELIVERED)
    row = await db_pool.fetchrow("SELECT status, carrier, body FROM messages WHERE id=$1", m.id)
    assert (row["status"], row["carrier"], row["body"]) == ("delivered", "sim", "text 1")
    # The outbox row the commit created reached the router's dispatcher side.
    assert [n.kind for n in created] == [WEBHOOK]
    assert created[0].message_id == m.id and b'"client_ref":"ref"' in created[0].payload
    assert writers.pid != os.getpid()


async def test_many_operations_share_commits_and_report_them(
    writers: WriterProcess, db_pool: asyncpg.Pool
) -> None:
    batches = metrics.commit_batch("ingest")
    before, before_sum = sum(batches.counts), batches.sum
    messages = [_message(i) for i in range(300)]
    await asyncio.gather(*(writers.ingest.run(InsertMessage.of([m])) for m in messages))
    assert await db_pool.fetchval("SELECT count(*) FROM messages") == 300
    commits = sum(batches.counts) - before
    # One frame per loop turn: far fewer commits than operations, and the
    # router's histogram counts every one of them.
    assert 1 <= commits < 50
    assert batches.sum - before_sum == 300


async def test_a_failed_write_fails_its_operation_only(
    writers: WriterProcess, db_pool: asyncpg.Pool
) -> None:
    m = _message(2)
    await writers.ingest.run(InsertMessage.of([m]))
    with pytest.raises(StoreError, match="duplicate key"):
        await writers.ingest.run(InsertMessage.of([m]))
    other = _message(3)
    await writers.ingest.run(InsertMessage.of([other]))
    assert await db_pool.fetchval("SELECT count(*) FROM messages") == 2


async def test_stop_commits_everything_handed_over(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    process = WriterProcess(_hello(database_url))
    await process.start()
    pid = process.pid
    futures = [process.ingest.submit(InsertMessage.of([_message(i)])) for i in range(200)]
    await process.stop()
    assert all(f.done() and f.exception() is None for f in futures)
    assert await db_pool.fetchval("SELECT count(*) FROM messages") == 200
    assert pid is not None and await _exited(pid)
    late = process.ingest.submit(InsertMessage.of([_message(999)]))
    with pytest.raises(StoreError):
        await late


async def test_a_dead_writer_process_fails_what_it_held_and_is_replaced(
    writers: WriterProcess, db_pool: asyncpg.Pool
) -> None:
    first = writers.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert await _exited(first)
    # Handed over before or after the death was noticed: either it failed
    # (the old process held it) or the new process committed it.
    outcome = await asyncio.gather(
        writers.ingest.run(InsertMessage.of([_message(5)])), return_exceptions=True
    )
    for _ in range(200):
        if writers.pid != first:
            break
        await asyncio.sleep(0.05)
    assert writers.pid not in (None, first)
    await writers.ingest.run(InsertMessage.of([_message(6)]))
    stored = await db_pool.fetchval("SELECT count(*) FROM messages")
    assert stored == (1 if isinstance(outcome[0], StoreError) else 2)


async def test_the_writer_process_ignores_signals_meant_for_the_router(
    writers: WriterProcess, db_pool: asyncpg.Pool
) -> None:
    # A Ctrl-C or a service manager's SIGTERM reaches the whole group; the
    # writer process must outlive the router's drain.
    assert writers.pid is not None
    os.kill(writers.pid, signal.SIGINT)
    os.kill(writers.pid, signal.SIGTERM)
    await asyncio.sleep(0.2)
    assert _alive(writers.pid)
    await writers.ingest.run(InsertMessage.of([_message(7)]))
    assert await db_pool.fetchval("SELECT count(*) FROM messages") == 1


async def test_a_database_it_cannot_reach_fails_the_start(unused_tcp_port: int) -> None:
    process = WriterProcess(_hello(f"postgresql://nobody:secret@127.0.0.1:{unused_tcp_port}/none"))
    with pytest.raises(StoreError, match="writer process could not start: cannot connect"):
        await process.start()
    assert process.pid is None


async def test_the_writer_process_ends_when_the_router_disappears(
    writers: WriterProcess, db_pool: asyncpg.Pool
) -> None:
    # The router's end of the socket closing without a word (its SIGKILL)
    # is the writer process's signal to commit what it has and exit.
    pid = writers.pid
    assert pid is not None
    fut = writers.ingest.submit(InsertMessage.of([_message(8)]))
    await asyncio.sleep(0)  # the frame goes out at the end of this loop turn
    await asyncio.sleep(0)
    writers._stopping = True  # no restart: the router is gone
    assert writers._link is not None
    writers._link.transport.abort()
    assert await _exited(pid)
    with pytest.raises(StoreError):
        await fut
    # What it was handed was committed before it went.
    assert await db_pool.fetchval("SELECT count(*) FROM messages") == 1
