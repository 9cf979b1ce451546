"""The writer: every change the router stores, group-committed.

Nothing is acknowledged before it is committed, and committing one message
at a time caps a router at a few thousand messages per second (one fsync
each). So every write goes through one `GroupCommit` writer: callers hand
it an operation and await its future (or give a callback, told inside the
writer); the writer takes everything that is waiting the moment its
previous commit lands, runs it in ONE transaction (COPY / unnest batches,
`writes`) and resolves all the futures together. Measured on the reference
machine: ~39k rows/s at p99 4.4 ms, where a fixed flush timer gave a third
of that (FACTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from smsrouter.router import metrics
from smsrouter.router.log_limits import LimitedLog
from smsrouter.router.store.listeners import CommitListener, CommitListeners
from smsrouter.router.store.operations import InsertMessage, Notification, Operation
from smsrouter.router.store.writes import WRITER_SETTINGS, apply, insert_messages, store_carefully

log = structlog.get_logger("store")


class GroupCommit:
    """Batches every waiting operation into one transaction.

    With `connections` > 1 (the ingest writer) up to that many flushes are
    in flight at once, each on its own connection. A flush that waits for
    its commit no longer holds back what arrived meanwhile: a window of
    submit_sm acknowledged together would otherwise come back together and
    wait together for the next commit, with the router idle during each
    commit and the database idle between them. Flushes still settle in the
    order they were taken, so messages enter their sender queues in the
    order they came (never reordered, CONTRACT §2). Operations whose order
    matters across flushes (a sent part, then its receipt) keep one
    connection.

    Each connection has a worker task. A worker that finishes a flush takes
    what arrived meanwhile at once; an idle one is woken by the first
    operation that finds no worker awake and runs the flush in the task it
    woke in (a task started per flush would cost the acknowledgement one
    more turn of the loop).

    A flush beside one in flight starts only once `parallel_batch`
    operations wait: a flush costs the database a transaction and a
    statement trigger (migration 0005: the charge, its ledger row) and the
    router its round trips, whatever it carries, so a trickle that the
    flush in flight will take when it lands is cheaper taken then. Without
    that bound, fifty HTTP clients of one message each made three flushes
    of a dozen at a time, where one of forty cost a fifth less per message
    (bench/RESULTS.md, issue 17); a backlog that does reach it (an ESME's
    window of submit_sm) still commits in parallel.

    With `min_interval`, a flush starts no sooner than that many seconds
    after the previous one started, so that what trickles in meanwhile
    shares its transaction: each transaction costs the database a WAL
    flush and the router several round trips, whatever it carries.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = 2000,
        listener: CommitListener | None = None,
        name: str = "status",
        connections: int = 1,
        parallel_batch: int = 1,
        min_interval: float = 0.0,
        retry: bool = False,
    ) -> None:
        self.name = name
        self._pool = pool
        self._idle: list[asyncpg.Connection] = []
        self._connections = connections
        self._parallel_batch = parallel_batch
        self._flushing = 0  # flushes in flight
        self._max_batch = max_batch
        self._min_interval = min_interval
        self._flushed_at = -math.inf  # loop time the latest flush started
        self._waiting: list[tuple[Operation, Waiter]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._idle_workers: list[asyncio.Future[None]] = []
        self._waking = False  # an idle worker was woken and has not run yet
        # Resolved once the latest flush has settled its futures.
        self._settled: asyncio.Future[None] | None = None
        self._closing = False
        # Told of each flush: it plans the outbox rows of the messages a
        # commit ends, in its transaction, and hears what it created and
        # when the flush settled.
        self._listener: CommitListener = CommitListeners() if listener is None else listener
        # With `retry`, a flush the database refused is not failed back to
        # its callers: it goes back to the head of the queue and is tried
        # again until it commits (CONTRACT §11: what the router sent, and the
        # receipts and final statuses that follow, are held until the
        # database takes them). Only a bug in the batch (a constraint or
        # data error, which no retry mends) still fails.
        self._retry = retry
        self._retry_delay = RETRY_FIRST_SECONDS
        self._give_up_at = math.inf  # loop time past which stop() fails what is left
        # False from a failed commit until the next one that lands; told to
        # `on_health` (the engine stops releasing parts meanwhile).
        self.healthy = True
        self.on_health: list[Callable[[bool], None]] = []
        self._failure_log = LimitedLog(log)

    def start(self) -> None:
        # Kept: asyncio.get_running_loop() costs a getpid() call on 3.11,
        # and submit() runs several times per message.
        self._loop = asyncio.get_running_loop()
        self._workers = [
            self._loop.create_task(self._work(), name=f"group-commit-{self.name}-{n}")
            for n in range(self._connections)
        ]

    async def _connection(self) -> asyncpg.Connection:
        """One of the writer's own connections, held between flushes: handing
        it back to the pool after every flush costs a reset round trip."""
        while self._idle:
            conn = self._idle.pop()
            try:
                closed = conn.is_closed()
            except asyncpg.InterfaceError:
                # The pool took it back when the server ended its session
                # (pg_terminate_backend, a restart): it is not ours to use.
                continue
            if not closed:
                return conn
        conn = await self._pool.acquire()
        await conn.execute(WRITER_SETTINGS)
        return conn

    async def _release(self, conn: asyncpg.Connection, *, broken: bool = False) -> None:
        """Keep the connection for the next flush; after a failed one it may
        be broken, so it goes back to the pool and a fresh one is taken."""
        if not broken and not self._closing:
            self._idle.append(conn)
            return
        with contextlib.suppress(Exception):
            await self._pool.release(conn, timeout=5)

    async def stop(self, give_up_after: float = 10.0) -> None:
        """Flush what is waiting, then stop. A retrying writer keeps trying
        for `give_up_after` seconds, then fails what is left (logged)."""
        self._closing = True
        self._give_up_at = self._loop.time() + give_up_after
        idle, self._idle_workers = self._idle_workers, []
        for waiter in idle:
            waiter.set_result(None)
        if self._workers:
            await asyncio.gather(*self._workers)
        idle_conns, self._idle = self._idle, []
        for conn in idle_conns:
            await self._release(conn, broken=True)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the writer runs in (kept: see `start`)."""
        return self._loop

    @property
    def waiting(self) -> int:
        """Operations queued and not yet taken by a flush."""
        return len(self._waiting)

    def _set_health(self, healthy: bool) -> None:
        if healthy == self.healthy:
            return
        self.healthy = healthy
        if healthy:
            self._retry_delay = RETRY_FIRST_SECONDS
            log.info("database writes resumed", writer=self.name)
        for listener in self.on_health:
            try:
                listener(healthy)
            except Exception:
                log.exception("writer health listener failed")

    def _wake(self) -> None:
        if (
            not self._waking
            and self._idle_workers
            and (not self._flushing or len(self._waiting) >= self._parallel_batch)
        ):
            self._waking = True
            self._idle_workers.pop().set_result(None)

    def submit(self, op: Operation) -> asyncio.Future[Any]:
        """Queue one operation; the future resolves once it is committed."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._waiting.append((op, fut))
        self._wake()
        return fut

    def submit_then(self, op: Operation, settled: Settled) -> None:
        """Queue one operation; `settled(result, error)` is called inside the
        writer the moment its commit settles. No future: a future's callbacks
        wait for the next turn of the loop, and under load a turn takes
        milliseconds, which a closed-loop client (an ESME at its window)
        pays in throughput."""
        self._waiting.append((op, settled))
        self._wake()

    async def run(self, op: Operation) -> Any:
        return await self.submit(op)

    async def _work(self) -> None:
        while True:
            # Idle while nothing waits, or while what waits is left to the
            # flush in flight (`parallel_batch`).
            if not self._waiting or (
                self._flushing and len(self._waiting) < self._parallel_batch and not self._closing
            ):
                if self._closing:
                    break
                woken = self._loop.create_future()
                self._idle_workers.append(woken)
                await woken
                self._waking = False
                continue
            wait = self._flushed_at + self._min_interval - self._loop.time()
            if wait > 0 and not self._closing and len(self._waiting) < self._max_batch:
                await asyncio.sleep(wait)
                if not self._waiting:  # another worker took it meanwhile
                    continue
            self._flushed_at = self._loop.time()
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            previous, self._settled = self._settled, self._loop.create_future()
            self._flushing += 1
            try:
                flushed = await self._flush(batch, previous, self._settled)
            finally:
                self._flushing -= 1
            if not flushed:
                # Back to the head of the queue, in order, and a pause that
                # doubles while the database stays away.
                self._waiting[:0] = batch
                delay, self._retry_delay = (
                    self._retry_delay,
                    min(RETRY_MAX_SECONDS, self._retry_delay * 2),
                )
                await asyncio.sleep(delay)

    async def _flush(
        self,
        batch: list[tuple[Operation, Waiter]],
        previous: asyncio.Future[None] | None,
        settled: asyncio.Future[None] | None = None,
    ) -> bool:
        """Commit one batch, then settle its futures once the flush taken
        before it has settled (`previous`), and mark `settled`. False when
        the batch is to be retried: nothing was settled."""
        try:
            outcome = await self._commit(batch)
            if previous is not None:
                await asyncio.shield(previous)
            if isinstance(outcome, StoreError):
                self._set_health(False)
                if self._retry and outcome.retryable and self._loop.time() < self._give_up_at:
                    return False
                if self._retry:
                    log.error(
                        "gave up writing operations",
                        writer=self.name, operations=len(batch), error=str(outcome),
                    )  # fmt: skip
                self._failed(batch, outcome)
            else:
                self._set_health(True)
                self._settle(batch, *outcome)
            try:
                self._listener.settled()
            except Exception:
                log.exception("commit listener failed")
        finally:
            if settled is not None:
                settled.set_result(None)
        return True

    async def _commit(
        self, batch: list[tuple[Operation, Waiter]]
    ) -> tuple[list[Any], list[Notification]] | StoreError:
        # Grouped by operation class: each class has one handler.
        by_class: dict[type, list[int]] = {}
        for i, (op, _) in enumerate(batch):
            by_class.setdefault(type(op), []).append(i)
        results: list[Any] = [None] * len(batch)
        created: list[Notification] = []
        started = time.perf_counter()
        conn: asyncpg.Connection | None = None
        failure: Exception | None = None
        try:
            conn = await self._connection()
            if by_class.keys() == {InsertMessage}:
                # One statement is its own transaction: no BEGIN/COMMIT trips.
                # Its charge and its keys are its own too (the insert's
                # trigger, migration 0005).
                inserts: list[InsertMessage] = [op for op, _ in batch]  # type: ignore[misc]
                results = await insert_messages(conn, inserts)
            else:
                async with conn.transaction():
                    await apply(conn, batch, by_class, results, self._listener, created)
        except Exception as exc:
            failure = exc  # handled below: no await in an except clause
        if failure is not None and conn is not None and store_carefully(failure):
            # A balance could not pay for all of the flush, or a key it
            # carried was taken, and it stored nothing: again, paying
            # message by message (CONTRACT §6), taking keys one by one (§3).
            failure, results, created = None, [None] * len(batch), []
            try:
                async with conn.transaction():
                    await apply(
                        conn, batch, by_class, results, self._listener, created, careful=True
                    )
            except Exception as exc:
                failure = exc
        if failure is not None:
            # No answer from the server: the connection went while the
            # batch was in flight, perhaps after its commit landed. asyncpg
            # raises a lost connection as a PostgresError of class 08
            # (ConnectionDoesNotExistError), which the server never sent.
            in_doubt = not isinstance(failure, asyncpg.PostgresError) or isinstance(
                failure, asyncpg.PostgresConnectionError
            )
            if created:
                # What it planned may have committed after all (no answer).
                self._listener.commit_failed(created, in_doubt)
            # Once per interval: a database that is away fails every flush.
            self._failure_log.error(
                "group commit failed",
                key=self.name, writer=self.name, error=repr(failure), operations=len(batch),
            )  # fmt: skip
            if conn is not None:
                await self._release(conn, broken=True)
            return StoreError(
                str(failure),
                retryable=_retryable(failure),
                in_doubt=in_doubt,
            )
        assert conn is not None
        await self._release(conn)
        metrics.commit_latency(self.name).observe(time.perf_counter() - started)
        metrics.commit_batch(self.name).observe(len(batch))
        return results, created

    def _settle(
        self,
        batch: list[tuple[Operation, Waiter]],
        results: list[Any],
        created: list[Notification],
    ) -> None:
        for (_, waiter), r in zip(batch, results, strict=True):
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    waiter.set_result(r)
            else:
                _tell(waiter, r, None)
        if created:
            self._listener.notifications_created(created)

    @staticmethod
    def _failed(batch: list[tuple[Operation, Waiter]], error: StoreError) -> None:
        for _, waiter in batch:
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    waiter.set_exception(error)
            else:
                _tell(waiter, None, error)


def _tell(settled: Settled, result: Any, error: StoreError | None) -> None:
    try:
        settled(result, error)
    except Exception:  # one caller's fault must not leave the rest of the batch unsettled
        log.exception("commit callback failed")


class StoreError(Exception):
    """The database refused or lost a write; the operation did not happen
    (or, for a lost connection, its outcome is unknown: `retryable`)."""

    def __init__(self, detail: str, *, retryable: bool = True, in_doubt: bool = False) -> None:
        super().__init__(detail)
        # False for errors that the same batch would meet again (a bug in
        # it): constraint violations, bad data, bad SQL.
        self.retryable = retryable
        # The connection was lost with the batch in flight: it may have
        # committed all the same (its COMMIT landed, the answer did not).
        self.in_doubt = in_doubt


# Errors no retry of the same statements mends (SQLSTATE classes 22 data
# exception, 23 integrity constraint violation, 42 syntax error or access
# rule violation). Everything else (a lost or refused connection, a
# read-only or full database, a server shutting down) passes.
_BUG_CLASSES = ("22", "23", "42")

# Retries of a refused flush: first after this, doubling up to the max.
RETRY_FIRST_SECONDS = 0.05
RETRY_MAX_SECONDS = 2.0


def _retryable(error: BaseException) -> bool:
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in _BUG_CLASSES:
        # 42501 (insufficient privilege) is an operator's grant away.
        return sqlstate == "42501"
    return True


# Told an operation's outcome inside the writer: (its result, None) once
# committed, (None, the StoreError) if the commit failed. It must not block.
Settled = Callable[[Any, StoreError | None], None]
# Who waits for an operation: a future, or a callback told at once.
Waiter = asyncio.Future[Any] | Settled
