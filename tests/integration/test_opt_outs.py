"""The opt-out rows against a real PostgreSQL (CONTRACT §6 "Opt-out"):
the whole-list load, the bulk import with its audit row and NOTIFY, the
lists, the writer's change rules, and the watcher that keeps a process's
list current from NOTIFY sent by other connections, whatever the order of
the notices, and after its connection was lost."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from smsrouter.router.opt_outs import OptOutList
from smsrouter.router.store import directory
from smsrouter.router.store import opt_outs as rows
from smsrouter.router.store.group_commit import GroupCommit
from smsrouter.router.store.operations import OptOutChange
from smsrouter.router.store.opt_out_watch import OptOutWatch
from smsrouter.router.store.writes import OPT_OUTS_CHANNEL, opt_out_notice

A = "acc"  # tests/integration/conftest.py: an account row of every test
B = "acme"
N1, N2, N3 = "+14155550101", "+14155550102", "+447700900123"


async def _insert(conn: asyncpg.Connection, account: str, number: str, source: str) -> None:
    await conn.execute(
        "INSERT INTO opt_outs (account_id, recipient, source) VALUES ($1, $2, $3)",
        account,
        number,
        source,
    )


async def _eventually(check: Callable[[], bool], what: str) -> None:
    """Until `check` holds; a generous bound, so that a slow machine does not
    fail a test that is about correctness, not speed."""
    deadline = time.monotonic() + 10.0
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


@pytest.fixture
async def conn(db_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with db_pool.acquire() as c:
        yield c


async def test_the_whole_list_loads_per_account_as_number_keys(
    db_pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await _insert(conn, A, N1, "subscriber")
    await _insert(conn, A, N3, "import")
    await _insert(conn, B, N2, "account")
    opt_outs = OptOutList()
    opt_outs.add("gone", N1)  # replaced by the load
    assert await rows.load_opt_outs(db_pool, opt_outs) == 3
    assert opt_outs.opted_out(A, N1[1:]) and opt_outs.opted_out(A, N3[1:])
    assert not opt_outs.opted_out(A, N2[1:])
    assert opt_outs.opted_out(B, N2[1:])
    assert not opt_outs.opted_out("gone", N1[1:])
    assert sorted(await rows.load_account(conn, A)) == [int(N1[1:]), int(N3[1:])]
    assert await rows.load_account(conn, "nobody") == []


async def test_an_import_adds_what_is_not_listed_with_one_audit_row_and_one_notice(
    conn: asyncpg.Connection, database_url: str
) -> None:
    await _insert(conn, A, N1, "subscriber")
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(OPT_OUTS_CHANNEL, lambda *a: heard.put_nowait(a[3]))
        added = await rows.import_opt_outs(conn, "ops", A, [N1, N2, N3, N2], received=5)
        assert added == 2  # N1 was listed, N2 came twice
        assert await asyncio.wait_for(heard.get(), 5) == f"*\t{A}\t"
        assert heard.empty()
    finally:
        await listener.close()
    listed = await rows.list_opt_outs(conn, A, limit=10, after=None)
    # A subscriber's entry keeps its source; the new ones are the import's.
    assert [(e["number"], e["source"]) for e in listed] == [
        (N1, "subscriber"),
        (N2, "import"),
        (N3, "import"),
    ]
    audit = await conn.fetchrow("SELECT actor, action, target, before, after FROM audit_log")
    assert (audit["actor"], audit["action"], audit["target"]) == ("ops", "opt_outs.import", A)
    assert audit["before"] is None
    assert json.loads(audit["after"]) == {"received": 5, "added": 2}
    with pytest.raises(directory.NotFound):
        await rows.import_opt_outs(conn, "ops", "nobody", [N1], received=1)
    assert await conn.fetchval("SELECT count(*) FROM opt_outs WHERE account_id = 'nobody'") == 0


async def test_lists_page_in_number_order(conn: asyncpg.Connection) -> None:
    await rows.import_opt_outs(conn, "ops", A, [N3, N2, N1], received=3)
    await _insert(conn, B, N1, "account")
    first = await rows.list_opt_outs(conn, A, limit=2, after=None)
    assert [e["number"] for e in first] == [N1, N2]
    rest = await rows.list_opt_outs(conn, A, limit=2, after=first[-1]["number"])
    assert [e["number"] for e in rest] == [N3]
    every = await rows.list_all_opt_outs(conn, limit=3, after=None)
    assert [(e["account"], e["number"]) for e in every] == [(A, N1), (A, N2), (A, N3)]
    after = await rows.list_all_opt_outs(conn, limit=3, after=(A, N3))
    assert [(e["account"], e["number"]) for e in after] == [(B, N1)]
    entry = await rows.get_opt_out(conn, A, N2)
    assert entry is not None and entry["source"] == "import"
    assert await rows.get_opt_out(conn, B, N2) is None


async def test_the_writer_lifts_only_what_the_source_may(db_pool: asyncpg.Pool) -> None:
    """An account's DELETE lifts its own entry, never a subscriber's STOP;
    a subscriber's START lifts any (CONTRACT §6)."""
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        assert await writer.run(OptOutChange(A, N1, True, "subscriber")) is True
        assert await writer.run(OptOutChange(A, N1, True, "account")) is False  # listed already
        assert await writer.run(OptOutChange(A, N1, False, "account")) is False
        assert await writer.run(OptOutChange(A, N2, True, "account")) is True
        assert await writer.run(OptOutChange(A, N2, False, "account")) is True
        assert await writer.run(OptOutChange(A, N1, False, "subscriber")) is True
    finally:
        await writer.stop()
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM opt_outs") == 0


def test_a_committed_change_applies_to_the_process_list() -> None:
    opt_outs = OptOutList()
    rows.apply_committed(opt_outs, OptOutChange(A, N1, True, "account"), changed=False)
    assert opt_outs.opted_out(A, N1[1:])  # listed already: it is, whoever listed it
    rows.apply_committed(opt_outs, OptOutChange(A, N1, False, "account"), changed=False)
    assert opt_outs.opted_out(A, N1[1:])  # not deleted: a subscriber's STOP stays
    rows.apply_committed(opt_outs, OptOutChange(A, N1, False, "subscriber"), changed=True)
    assert not opt_outs.opted_out(A, N1[1:])


@pytest.fixture
async def watched(db_pool: asyncpg.Pool) -> AsyncIterator[tuple[OptOutWatch, OptOutList]]:
    opt_outs = OptOutList()
    watch = OptOutWatch(db_pool, opt_outs)
    await watch.start()
    try:
        yield watch, opt_outs
    finally:
        await watch.stop()


async def test_the_watcher_follows_changes_committed_by_another_connection(
    watched: tuple[OptOutWatch, OptOutList], database_url: str
) -> None:
    _, opt_outs = watched
    other = await asyncpg.connect(database_url)  # as another instance would
    try:
        async with other.transaction():
            await _insert(other, A, N1, "subscriber")
            await other.execute(
                "SELECT pg_notify($1, $2)", OPT_OUTS_CHANNEL, opt_out_notice(A, N1, True)
            )
        await _eventually(lambda: opt_outs.opted_out(A, N1[1:]), "the STOP heard")
        async with other.transaction():
            await other.execute("DELETE FROM opt_outs WHERE recipient = $1", N1)
            await other.execute(
                "SELECT pg_notify($1, $2)", OPT_OUTS_CHANNEL, opt_out_notice(A, N1, False)
            )
        await _eventually(lambda: not opt_outs.opted_out(A, N1[1:]), "the START heard")
        # An import elsewhere: one "*" notice reloads the account's list.
        await rows.import_opt_outs(other, "ops", B, [N2, N3], received=2)
        await _eventually(
            lambda: opt_outs.opted_out(B, N2[1:]) and opt_outs.opted_out(B, N3[1:]),
            "the import heard",
        )
    finally:
        await other.close()


async def test_the_watcher_reads_the_rows_and_not_the_order_of_notices(
    watched: tuple[OptOutWatch, OptOutList], database_url: str
) -> None:
    """Notices of two instances' changes may arrive in any order: a stale
    "+" after the row's deletion, or a stale "-" after its insertion, must
    leave the list as the rows are."""
    _, opt_outs = watched
    other = await asyncpg.connect(database_url)
    try:
        await _insert(other, A, N1, "subscriber")  # listed, its "+" notice late
        await _insert(other, A, N2, "subscriber")
        await other.execute("DELETE FROM opt_outs WHERE recipient = $1", N2)  # N2 lifted again
        async with other.transaction():
            await other.execute(
                "SELECT pg_notify($1, $2)", OPT_OUTS_CHANNEL, opt_out_notice(A, N1, False)
            )
            await other.execute(
                "SELECT pg_notify($1, $2)", OPT_OUTS_CHANNEL, opt_out_notice(A, N2, True)
            )
            # A marker heard after both, to know they were read.
            await _insert(other, A, N3, "account")
            await other.execute(
                "SELECT pg_notify($1, $2)", OPT_OUTS_CHANNEL, opt_out_notice(A, N3, True)
            )
        await _eventually(lambda: opt_outs.opted_out(A, N3[1:]), "the marker heard")
        assert opt_outs.opted_out(A, N1[1:])  # a "-" notice, but the row is there
        assert not opt_outs.opted_out(A, N2[1:])  # a "+" notice, but the row is gone
    finally:
        await other.close()


async def test_the_watcher_reloads_everything_after_losing_its_connection(
    watched: tuple[OptOutWatch, OptOutList], database_url: str
) -> None:
    watch, opt_outs = watched
    assert watch.reloads == 1
    other = await asyncpg.connect(database_url)
    try:
        # Every other session of the database is cut, the watcher's among them.
        await other.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        # A change whose notice nobody hears.
        await _insert(other, A, N1, "subscriber")
        await _eventually(lambda: watch.reloads >= 2, "reconnected")
        await _eventually(lambda: opt_outs.opted_out(A, N1[1:]), "the change missed is loaded")
        # And it follows notices again on the new connection.
        async with other.transaction():
            await _insert(other, A, N2, "subscriber")
            await other.execute(
                "SELECT pg_notify($1, $2)", OPT_OUTS_CHANNEL, opt_out_notice(A, N2, True)
            )
        await _eventually(lambda: opt_outs.opted_out(A, N2[1:]), "a notice after the reconnection")
    finally:
        await other.close()
