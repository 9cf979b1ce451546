"""Every process's opt-out list (router/opt_outs.py), kept current with the
rows (CONTRACT §6 "Opt-out": later sends to an opted-out subscriber are
refused on every instance; §8: a change takes effect within 1 s).

Each change commits with a NOTIFY on `OPT_OUTS_CHANNEL` (store/writes.py,
store/opt_outs.py). The watcher LISTENs on a connection of its own. A
notice's order is not trusted: two changes of one number committed by two
instances may be heard in either order, so a notice only says "this
(account, number) changed", and the watcher reads the row's current state.
Notices that come within SETTLE_SECONDS are read with one SELECT; a "*"
notice (after a bulk import) reloads that account's list with one query. A
notice sent while the connection was down is lost, so every (re)connection
loads everything anew.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import structlog

from smsrouter.router.log_limits import LimitedLog
from smsrouter.router.opt_outs import OptOutList
from smsrouter.router.store.directory_watch import CONNECTION_LOST, RETRY_SECONDS
from smsrouter.router.store.opt_outs import load_account, load_opt_outs, present
from smsrouter.router.store.writes import OPT_OUTS_CHANNEL

log = structlog.get_logger("opt_outs")

# Notices that come within this many seconds are read together.
SETTLE_SECONDS = 0.005


class Noticed:
    """What the notices heard since the last read name: whole accounts
    ("*") and single (account, number) pairs."""

    __slots__ = ("accounts", "pairs")

    def __init__(self) -> None:
        self.accounts: set[str] = set()
        self.pairs: set[tuple[str, str]] = set()

    def __bool__(self) -> bool:
        return bool(self.accounts or self.pairs)

    def add(self, payload: str) -> None:
        """One notice: "+" / "-" / "*", the account id and the number,
        tab-separated (store/writes.py `opt_out_notice`). The sign is not
        used: the row's state is read instead."""
        kind, _, rest = payload.partition("\t")
        account_id, _, recipient = rest.partition("\t")
        if not account_id:
            log.warning("opt-out notice not understood", payload=payload[:100])
        elif kind == "*":
            self.accounts.add(account_id)
        elif recipient:
            self.pairs.add((account_id, recipient))


class OptOutWatch:
    def __init__(
        self, pool: asyncpg.Pool, opt_outs: OptOutList, *, settle: float = SETTLE_SECONDS
    ) -> None:
        self._pool = pool
        self._opt_outs = opt_outs
        self._settle = settle
        self._noticed = Noticed()
        self._heard = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = LimitedLog(log)
        self.reloads = 0  # whole-list loads, the first included

    async def start(self) -> int:
        """LISTEN, then load every list (a change committed meanwhile is
        heard, not lost), then follow; returns how many numbers were loaded."""
        conn: asyncpg.Connection = await self._pool.acquire()
        failure: BaseException | None = None
        loaded = 0
        try:
            await conn.add_listener(OPT_OUTS_CHANNEL, self._notified)
            loaded = await self._reload_all()
        except BaseException as exc:
            failure = exc  # released below: no await in an except clause
        if failure is not None:
            await self._pool.release(conn)
            raise failure
        self._task = asyncio.get_running_loop().create_task(self._watch(conn), name="opt-out-watch")
        return loaded

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._noticed.add(payload)
        self._heard.set()

    async def _reload_all(self) -> int:
        # What was noticed before the load is in it.
        self._noticed = Noticed()
        loaded = await load_opt_outs(self._pool, self._opt_outs)
        self.reloads += 1
        return loaded

    async def _watch(self, conn: asyncpg.Connection | None) -> None:
        while True:
            try:
                if conn is None:
                    conn = await self._pool.acquire()
                    await conn.add_listener(OPT_OUTS_CHANNEL, self._notified)
                    loaded = await self._reload_all()  # what changed while no one listened
                    log.info("opt-out lists reloaded after a lost connection", numbers=loaded)
                await self._follow(conn)
            except CONNECTION_LOST as exc:
                self._failures.warning("opt-out watch lost its connection", error=repr(exc))
            finally:
                if conn is not None:
                    await self._let_go(conn)
                    conn = None
            await asyncio.sleep(RETRY_SECONDS)

    async def _let_go(self, conn: asyncpg.Connection) -> None:
        """Back to the pool, unless the pool took it back already (the
        server ended the session): then every call on it raises."""
        with contextlib.suppress(*CONNECTION_LOST):
            if not conn.is_closed():
                await conn.remove_listener(OPT_OUTS_CHANNEL, self._notified)
        with contextlib.suppress(*CONNECTION_LOST):
            await self._pool.release(conn)

    async def _follow(self, conn: asyncpg.Connection) -> None:
        """Read what the notices name until the connection is lost."""
        lost = asyncio.Event()

        def terminated(_: Any) -> None:
            lost.set()
            self._heard.set()

        conn.add_termination_listener(terminated)
        try:
            while True:
                await self._heard.wait()
                if lost.is_set() or conn.is_closed():
                    raise asyncpg.InterfaceError("the LISTEN connection was closed")
                await asyncio.sleep(self._settle)
                self._heard.clear()
                noticed, self._noticed = self._noticed, Noticed()
                if noticed:
                    await self._read(conn, noticed)
        finally:
            with contextlib.suppress(*CONNECTION_LOST):
                conn.remove_termination_listener(terminated)

    async def _read(self, conn: asyncpg.Connection, noticed: Noticed) -> None:
        """The current state of what was noticed, into the list. A notice
        heard during the read is read again next time, so the last read of
        a number always follows its last change."""
        opt_outs = self._opt_outs
        for account_id in noticed.accounts:
            opt_outs.replace_keys(account_id, await load_account(conn, account_id))
        pairs = [p for p in noticed.pairs if p[0] not in noticed.accounts]
        listed = await present(conn, pairs)
        for pair in pairs:
            if pair in listed:
                opt_outs.add(*pair)
            else:
                opt_outs.remove(*pair)
