"""The database probe against a real server that hangs and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from smsrouter.db_probe import DatabaseProbe
from smsrouter.router.liveness import DatabaseLiveness
from tests.own_pg import OwnPostgres


async def test_a_hung_server_fails_probes_in_time_and_leaks_no_connection(
    own_pg: OwnPostgres,
) -> None:
    # Two connections: a probe that left one behind per failure would
    # leave the pool with nothing to give after the server is back.
    pool = await asyncpg.create_pool(own_pg.dsn, min_size=1, max_size=2)
    liveness = DatabaseLiveness(60)
    probe = DatabaseProbe(pool, liveness, timeout=0.5)
    frozen: list[int] = []
    try:
        assert await probe.probe() is True
        frozen = own_pg.freeze()
        loop = asyncio.get_running_loop()
        for _ in range(4):
            began = loop.time()
            assert await probe.probe() is False
            # Bounded by the probe's timeout, whatever the server does.
            assert loop.time() - began < 2.0
        assert not liveness.reachable
        assert liveness.unreachable_for() >= 1.5
        assert liveness.last_error is not None and "TimeoutError" in liveness.last_error
        own_pg.thaw(frozen)
        frozen = []
        async with asyncio.timeout(10):
            while True:
                if await probe.probe():
                    break
                await asyncio.sleep(0.1)
        assert liveness.reachable and liveness.unreachable_for() == 0.0
        async with asyncio.timeout(5):
            assert await asyncio.gather(pool.fetchval("SELECT 1"), pool.fetchval("SELECT 2")) == [
                1,
                2,
            ]
    finally:
        own_pg.thaw(frozen)
        pool.terminate()


async def _until(check: Callable[[], bool], within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            if check():
                return
            await asyncio.sleep(0.02)


async def test_the_probe_outlives_connections_the_server_closes(own_pg: OwnPostgres) -> None:
    pool = await asyncpg.create_pool(own_pg.dsn, min_size=2, max_size=2)
    liveness = DatabaseLiveness(60)
    probe = DatabaseProbe(pool, liveness, interval=0.05, timeout=0.5)
    try:
        probe.start()
        await asyncio.sleep(0.2)  # the probe's connections are open
        # The server ends every session, as a restart or an OOM kill does:
        # the probe's next query fails on a connection the pool takes back.
        own_pg.kill_postmaster()
        await _until(lambda: not liveness.reachable, within=5)
        assert liveness.last_error is not None
        await own_pg.restart()
        await _until(lambda: liveness.reachable, within=10)
        # Still probing: the next outage is seen too.
        own_pg.kill_postmaster()
        await _until(lambda: not liveness.reachable, within=5)
        await own_pg.restart()
        await _until(lambda: liveness.reachable, within=10)
        await probe.stop()
        await probe.stop()  # idempotent
    finally:
        await probe.stop()
        pool.terminate()


async def test_a_probe_stopped_while_it_hangs_gives_its_connection_back(
    own_pg: OwnPostgres,
) -> None:
    pool = await asyncpg.create_pool(own_pg.dsn, min_size=1, max_size=2)
    probe = DatabaseProbe(pool, DatabaseLiveness(60), interval=0.05, timeout=30)
    frozen: list[int] = []
    try:
        await pool.fetchval("SELECT 1")  # a connection is open and idle
        frozen = own_pg.freeze()
        probe.start()
        await asyncio.sleep(0.3)  # the probe waits on the hung server
        async with asyncio.timeout(5):
            await probe.stop()  # as the daemon does before closing the pool
        own_pg.thaw(frozen)
        frozen = []
        # Nothing is left checked out: close() does not wait for ever.
        async with asyncio.timeout(10):
            await pool.close()
    finally:
        own_pg.thaw(frozen)
        await probe.stop()
        pool.terminate()
