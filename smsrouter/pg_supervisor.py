"""Restarts the embedded PostgreSQL when it dies (CONTRACT §11).

An OOM killer's SIGKILL or a crash ends the postmaster without a word; the
daemon notices within ``poll_interval`` and starts it again on the same data
dir and, when still free, the same port, so that the pool's DSN stays valid:
its broken connections are closed as they are used or released, and new
ones reach the new server. Should the port have been taken meanwhile, the
pool is pointed at the new one.

Watching costs one waitpid() every half second, nothing per message. A
restart that fails is tried again, with a backoff capped at
``MAX_RETRY_DELAY``, for as long as the daemon runs: giving up would leave
a daemon that can never recover, while `/healthz` already tells an
orchestrator when an outage lasts too long.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import asyncpg
import structlog

from smsrouter.embedded_pg import EmbeddedPostgres

log = structlog.get_logger("embedded_pg")

POLL_INTERVAL = 0.5
# First retry after a failed restart, doubled each time up to the cap.
FIRST_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 10.0


def retry_delay(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failed restart in a row (1, 2, ...)."""
    return min(MAX_RETRY_DELAY, FIRST_RETRY_DELAY * 2 ** max(0, failures - 1))


def _signal_name(status: int) -> str | None:
    """SIGKILL for -9 (subprocess's way of saying "killed by a signal")."""
    if status >= 0:
        return None
    try:
        return signal.Signals(-status).name
    except ValueError:
        return str(-status)


class PostgresSupervisor:
    """Watches the postmaster an EmbeddedPostgres started; restarts it if it dies.

    Owned by the daemon: ``start()`` after the server and the pool are up,
    ``stop()`` (cancel and await) before the pool is closed and the server
    stopped, so that the daemon's own stop never races with a restart.
    """

    def __init__(
        self,
        server: EmbeddedPostgres,
        *,
        pool: asyncpg.Pool | None = None,
        connect_kwargs: dict[str, Any] | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        """``pool`` and the ``connect_kwargs`` it was made with: where to point
        new connections should the server come back on another port."""
        self._server = server
        self._pool = pool
        self._connect_kwargs = connect_kwargs or {}
        self._poll_interval = poll_interval
        self._dsn = server.dsn
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="embedded-pg-supervisor")

    async def stop(self) -> None:
        """Stop watching. A restart under way is cancelled, and the start
        it was making stops whatever it had started (EmbeddedPostgres.start)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            status = self._server.exit_status
            if status is not None:
                await self._restart(status)

    async def _restart(self, status: int) -> None:
        began = time.monotonic()
        log.error(
            "embedded postgresql died",
            exit_status=status,
            signal=_signal_name(status),
            data_dir=str(self._server.data_dir),
        )
        failures = 0
        while True:
            try:
                dsn = await self._server.start()
                break
            except Exception as exc:
                # Whatever went wrong (the port, the disk, a server that
                # will not come up), the next attempt may succeed.
                failures += 1
                delay = retry_delay(failures)
                log.error(
                    "embedded postgresql restart failed",
                    error=str(exc),
                    error_type=type(exc).__name__,
                    failures=failures,
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
        self.restarts += 1
        log.info(
            "embedded postgresql restarted",
            seconds=round(time.monotonic() - began, 3),
            pid=self._server.pid,
            port=self._server.port,
            attempts=failures + 1,
        )
        if dsn != self._dsn:
            self._dsn = dsn
            if self._pool is not None:
                # Another port: new connections go there, and those to the
                # old server (dead anyway) are replaced as they come back.
                self._pool.set_connect_args(dsn, **self._connect_kwargs)
                await self._pool.expire_connections()
                log.warning("embedded postgresql moved to another port", port=self._server.port)
