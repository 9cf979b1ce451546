"""Every process's copy of the account directory, kept current.

A change through the operator API or a config reload commits with
`NOTIFY smsrouter_directory` (`store.directory`); each router process
LISTENs on a connection of its own and loads a new snapshot when told, so
that the change takes effect within a second on every instance (CONTRACT
§8) without a query per message. A notification sent while the connection
was down is lost, so every (re)connection loads a snapshot too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from smsrouter.router.log_limits import LimitedLog
from smsrouter.router.store.directory import NOTIFY_CHANNEL, load

log = structlog.get_logger("directory")

# Notifications that come within this many seconds load one snapshot: an
# import of many numbers is one reload, not one per row.
SETTLE_SECONDS = 0.05
RETRY_SECONDS = 1.0

# What a lost or refused LISTEN connection raises: the watchers reconnect.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.PostgresError,
    TimeoutError,
)


class DirectoryWatch:
    # What to LISTEN on and what to load when told (a subclass follows
    # other rows the same way: store/sender_watch.py).
    channel = NOTIFY_CHANNEL

    async def _load(self, conn: asyncpg.Connection) -> Any:
        return await load(conn)

    def __init__(self, pool: asyncpg.Pool, on_change: Callable[[Any], None]) -> None:
        self._pool = pool
        self._on_change = on_change
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failures = LimitedLog(log)

    async def reload(self) -> Any:
        """Load a snapshot now and hand it on (serialised: the latest load
        is the one applied last)."""
        async with self._lock:
            async with self._pool.acquire() as conn:
                directory = await self._load(conn)
            self._on_change(directory)
            return directory

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._watch(), name=f"watch-{self.channel}"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            try:
                await self._listen()
            except CONNECTION_LOST as exc:
                self._failures.warning(
                    "notification watch lost its connection", channel=self.channel, error=repr(exc)
                )
            await asyncio.sleep(RETRY_SECONDS)

    async def _listen(self) -> None:
        changed = asyncio.Event()
        lost = asyncio.Event()

        def notified(*_: Any) -> None:
            changed.set()

        def terminated(_: Any) -> None:
            lost.set()

        async with self._pool.acquire() as conn:
            await conn.add_listener(self.channel, notified)
            conn.add_termination_listener(terminated)
            try:
                # What changed while no one listened: after a lost
                # connection, and at start between the caller's first load
                # and this LISTEN (a change committed then would wait for
                # the next one otherwise).
                await self.reload()
                while not lost.is_set():
                    waiters = [
                        asyncio.ensure_future(changed.wait()),
                        asyncio.ensure_future(lost.wait()),
                    ]
                    try:
                        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for w in waiters:
                            w.cancel()
                    if lost.is_set():
                        break
                    await asyncio.sleep(SETTLE_SECONDS)
                    changed.clear()
                    await self.reload()
            finally:
                conn.remove_termination_listener(terminated)
                if not conn.is_closed():
                    with contextlib.suppress(*CONNECTION_LOST):
                        await conn.remove_listener(self.channel, notified)
