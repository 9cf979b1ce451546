"""A `SELECT 1` through the pool every second, for `/healthz` and `/readyz`.

The health endpoints must stay cheap and honest (CONTRACT §11): they read
what this probe last found (router.liveness.DatabaseLiveness) instead of
querying per request. The probe goes through the daemon's own pool, so it
sees what the daemon's work sees, embedded server or external. A probe
that gets no answer within ``timeout`` counts as a failure: a hung database
is as useless as a gone one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import structlog

from smsrouter.router.liveness import DatabaseLiveness

log = structlog.get_logger("database")

PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 2.0


class DatabaseProbe:
    """Owns the probing task; ``start()`` once the pool exists, ``stop()``
    (cancel and await) before the pool is closed."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        liveness: DatabaseLiveness,
        *,
        interval: float = PROBE_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self._pool = pool
        self._liveness = liveness
        self._interval = interval
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self._told_dead = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="database-probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self._interval)

    async def probe(self) -> bool:
        """One contact with the database; records and returns its outcome."""
        began = time.monotonic()
        error = await self._select_one()
        liveness = self._liveness
        if error is None:
            lasted = liveness.succeeded()
            if lasted is not None:
                log.info("database reachable again", unreachable_seconds=round(lasted, 1))
            self._told_dead = False
            return True
        if liveness.failed(error, began=began):
            log.warning("database unreachable", error=error)
        if not liveness.alive() and not self._told_dead:
            # Once per outage: from now on /healthz asks to be restarted.
            self._told_dead = True
            log.error(
                "database unreachable beyond liveness_seconds; /healthz answers 503",
                unreachable_seconds=round(liveness.unreachable_for(), 1),
                liveness_seconds=liveness.liveness_seconds,
                error=error,
            )
        return False

    async def _select_one(self) -> str | None:
        """None when the database answered, else what went wrong."""
        conn = None
        answered = False
        error = None
        try:
            async with asyncio.timeout(self._timeout):
                conn = await self._pool.acquire()
                await conn.fetchval("SELECT 1")
                answered = True
        except Exception as exc:
            # Any failure, whatever asyncpg calls it, means no working contact.
            error = _describe(exc)
        finally:
            # Also when the probe is stopped half way: a connection kept out
            # of the pool would make the pool's close() wait for ever.
            if conn is not None:
                error = await self._give_back(conn, failed=not answered) or error
        return error

    async def _give_back(self, conn: Any, *, failed: bool) -> str | None:
        """Return the probe's connection to the pool; what went wrong, if anything."""
        try:
            if failed:
                # A connection that failed or hung is in an unknown state;
                # released as it is, the pool would reset it, which may hang
                # as well. Closed, it is replaced at the next acquire.
                conn.terminate()
            await self._pool.release(conn, timeout=self._timeout)
        except asyncpg.InterfaceError:
            # The server closed it and the pool has already taken it back.
            return None
        except Exception as exc:  # the reset failed; the pool closed it
            return _describe(exc)
        return None


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
