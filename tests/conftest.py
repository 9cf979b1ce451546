"""Fixtures shared by the whole suite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.own_pg import OwnPostgres
from tests.pg import PgServer

# -- PostgreSQL ------------------------------------------------------------------
#
# The server fixture is synchronous on purpose: it runs its async work in a
# loop of its own (tests.pg.Portal), so it lives for the whole session
# whatever event loop each test gets, and sync tests can use it too. The
# server starts only when a test first asks for a database.


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL: .admin_dsn, .dsn_for(name), .create_database()."""
    server = PgServer.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def database_url(pg_server: PgServer) -> Iterator[str]:
    """DSN of a fresh, migrated database of this test's own, dropped afterwards."""
    name = pg_server.create_database()
    try:
        yield pg_server.dsn_for(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on this test's database."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        # close() waits for every connection to be released; a test that
        # leaked one must not hang the suite.
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except TimeoutError:
            pool.terminate()


@pytest.fixture
async def own_pg() -> AsyncIterator[OwnPostgres]:
    """A PostgreSQL server of this test's own (migrated), which the test may
    kill or freeze: .dsn, .pids(), .freeze()/.thaw(), .kill_postmaster(),
    .restart(). Stopped by PID and its files removed afterwards."""
    server = OwnPostgres.in_temporary_dir()
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        server.remove_files()
