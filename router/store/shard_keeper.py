"""The instance's leases, kept (CONTRACT §9).

Every second or so one round: the heartbeat, the renewal of the shards
held, the claim of a fair share of free or expired ones (their queued
work loaded from the database), the hand-back of a surplus when another
instance came up, and the outbox rows no live instance holds. A LISTEN
connection hears of shards handed back (claim now, not at the next round)
and of messages another instance stored for a shard held here.

The decisions are `router/shards.py`'s; this is their I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import asyncpg
import structlog

from smsrouter.router import metrics
from smsrouter.router.log_limits import LimitedLog
from smsrouter.router.messages import Message
from smsrouter.router.shards import Ownership, plan_leases, shard_of
from smsrouter.router.store import leases
from smsrouter.router.store.directory_watch import CONNECTION_LOST, RETRY_SECONDS
from smsrouter.router.store.operations import Notification

log = structlog.get_logger("shards")

# Seconds between rounds (at most; a shorter lease renews more often).
ROUND_SECONDS = 1.0
# Seconds between looks at every pending message of the shards held, when
# other instances are live: a message whose notice was lost (its sender's
# instance died between commit and NOTIFY) is still sent.
RESYNC_SECONDS = 30.0
# Seconds a hand-back waits for the shard's parts at carriers to be recorded.
HAND_BACK_WAIT = 10.0
# Outbox rows claimed per round.
OUTBOX_CLAIM = 5000


class ShardWork(Protocol):
    """The engine's side (router/engine.py:DeliveryEngine)."""

    ownership: Ownership

    def take(self, messages: Sequence[Message]) -> int: ...

    def lose(self, shards: set[int]) -> list[uuid.UUID]: ...

    def in_flight(self) -> list[asyncio.Task[None]]: ...

    def wake(self) -> None: ...

    def loading(self) -> contextlib.AbstractContextManager[None]: ...


class OutboxWork(Protocol):
    """The dispatcher's and the partner SMSC's side."""

    def add(self, notifications: Sequence[Notification]) -> None: ...

    def hand_off_waiting(self) -> list[int]: ...

    def receiving_accounts(self) -> list[str]: ...


# Pending messages by id, or every one when None (`daemon.pending_of`).
PendingLoader = Callable[[list[uuid.UUID] | None], Awaitable[list[Message]]]


class ShardKeeper:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        instance_id: str,
        lease_seconds: float,
        engine: ShardWork,
        pending: PendingLoader,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self.instance_id = instance_id
        self.incarnation = uuid.uuid4()
        self._lease = lease_seconds
        self._engine = engine
        self.ownership = engine.ownership
        self._pending = pending
        self._clock = clock
        self._round_seconds = min(ROUND_SECONDS, lease_seconds / 4)
        self.outbox: OutboxWork | None = None
        self.live_instances = 1
        self._soon = asyncio.Event()
        self._to_wake: list[uuid.UUID] = []
        self._wake_soon = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._resync_at = 0.0
        self._round_lock = asyncio.Lock()
        self._failures = LimitedLog(log)

    # ------------------------------------------------------------- lifetime

    async def register(self) -> None:
        """Take this instance's row; while another live run holds the id,
        wait up to a lease (a restart after a kill waits out its own old
        heartbeat), then give up (CONTRACT §9: the second exits)."""
        deadline = self._clock() + self._lease + 1.0
        while True:
            async with self._pool.acquire() as conn:
                if await leases.register(conn, self.instance_id, self.incarnation, self._lease):
                    return
            if self._clock() >= deadline:
                raise leases.InstanceTaken(
                    f"instance id {self.instance_id!r} is held by another live instance"
                )
            await asyncio.sleep(0.5)

    async def start(self) -> None:
        """Register, listen, take a first share, then keep at it."""
        await self.register()
        metrics.SHARDS_OWNED.set_function(lambda: len(self.ownership.epochs))
        loop = asyncio.get_running_loop()
        listening = loop.create_future()
        self._tasks.append(loop.create_task(self._listen_forever(listening), name="shard-listen"))
        # Listening before the first claim: a notice for a shard claimed
        # now is heard (CONTRACT §9 "commit, then the owner is woken").
        await asyncio.wait([listening], timeout=5.0)
        await self._round()
        self._tasks.append(loop.create_task(self._rounds(), name="shard-leases"))
        self._tasks.append(loop.create_task(self._notices(), name="shard-wake"))

    async def stop(self) -> None:
        """After the engine drained: every shard handed back at once, so
        that the others take them without waiting for expiry."""
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        held = dict(self.ownership.epochs)
        try:
            await self._flush_wakes()
            if held:
                async with self._pool.acquire() as conn:
                    await leases.release(conn, self.instance_id, held)
            log.info("shards handed back", shards=len(held))
        except CONNECTION_LOST as exc:
            log.warning("shards not handed back; they expire", error=repr(exc))
        for shard in held:
            self.ownership.lost(shard)

    async def leave(self) -> None:
        """After the dispatcher stopped: this instance's row goes and its
        undelivered outbox rows are set free for the others."""
        try:
            async with self._pool.acquire() as conn:
                await leases.leave(conn, self.instance_id, self.incarnation)
        except CONNECTION_LOST as exc:
            log.warning("instance row not removed; it expires", error=repr(exc))

    def renew_soon(self) -> None:
        self._soon.set()

    def hand_off(self, ids: list[uuid.UUID]) -> None:
        """Messages stored here for shards held elsewhere: their owner is
        told (NOTIFY, batched)."""
        self._to_wake.extend(ids)
        self._wake_soon.set()

    # ------------------------------------------------------------- rounds

    async def _rounds(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._soon.wait(), self._round_seconds)
            self._soon.clear()
            try:
                await self._round()
            except CONNECTION_LOST as exc:
                self._failures.warning("lease round failed", error=repr(exc))

    async def _round(self) -> None:
        async with self._round_lock:
            await self._renew_and_claim()
            if self.outbox is not None:
                await self._outbox_round(self.outbox)

    async def _renew_and_claim(self) -> None:
        own = self.ownership
        started = self._clock()
        async with self._pool.acquire() as conn:
            held = dict(own.epochs)
            renewal = await leases.renew(
                conn, self.instance_id, self.incarnation, held, self._lease
            )
        if not renewal.registered:
            # Paused past twice a lease, the others took this run for dead.
            log.error("instance row lost; registering again", instance=self.instance_id)
            async with self._pool.acquire() as conn:
                await leases.register(conn, self.instance_id, self.incarnation, self._lease)
        # Those still held as they were sent: one lost or claimed again
        # meanwhile is not this round's to judge.
        lost = {s for s in renewal.lost if own.epochs.get(s) == held[s]}
        if lost:
            self._lose(lost, "taken over")
        own.confirmed(started, self._lease)
        self._engine.wake()
        self.live_instances = renewal.live_instances
        if renewal.reaped:
            log.warning("instances stopped beating; their work is taken", instances=renewal.reaped)
        plan = plan_leases(own.epochs, renewal.claimable, renewal.live_instances)
        if plan.claim:
            await self._claim(list(plan.claim))
        elif plan.release:
            await self._hand_back(set(plan.release))
        own.forget_quiet(self._clock() - 3600.0)
        if renewal.live_instances > 1 and self._clock() >= self._resync_at:
            self._resync_at = self._clock() + RESYNC_SECONDS
            await self._load(None)

    async def _claim(self, shards: list[int]) -> None:
        async with self._pool.acquire() as conn:
            claimed = await leases.claim(conn, self.instance_id, shards, self._lease)
        if not claimed:
            return
        now = self._clock()
        for c in claimed:
            quiet = -float("inf") if c.quiet_for is None else now - c.quiet_for
            self.ownership.gained(c.shard, c.epoch, quiet)
        log.info("shards claimed", count=len(claimed), held=len(self.ownership.epochs))
        await self._load(None)

    async def _hand_back(self, shards: set[int]) -> None:
        """A surplus for a new instance: stop releasing these shards, let
        their parts at carriers be recorded, then free their leases."""
        own = self.ownership
        own.leaving |= shards
        self._engine.lose(shards)
        inflight = self._engine.in_flight()
        if inflight:
            await asyncio.wait(inflight, timeout=HAND_BACK_WAIT)
        held = {s: own.epochs[s] for s in shards if s in own.epochs}
        async with self._pool.acquire() as conn:
            await leases.release(conn, self.instance_id, held)
        for shard in shards:
            own.lost(shard)
        log.info("shards handed back", count=len(held), held=len(own.epochs))

    def _lose(self, shards: set[int], why: str) -> None:
        for shard in shards:
            self.ownership.lost(shard)
        dropped = self._engine.lose(shards)
        log.warning("shards lost", why=why, count=len(shards), messages=len(dropped))
        # Stored here after the new owner loaded its work, perhaps: told.
        self.hand_off(dropped)

    async def _load(self, ids: list[uuid.UUID] | None) -> None:
        """Queue the pending messages (these, or all) of the shards held."""
        with self._engine.loading():
            messages = await self._pending(ids)
            owns = self.ownership.owns
            mine = [m for m in messages if owns(shard_of(m.sender))]
            taken = self._engine.take(mine)
        if taken and ids is None:
            log.info("queued messages taken", count=taken)

    # ------------------------------------------------------------- outbox

    async def _outbox_round(self, outbox: OutboxWork) -> None:
        """Rows waiting for a receiving bind held elsewhere go free; rows no
        live instance holds are claimed (SMPP ones only by an instance with
        a receiving bind of their account)."""
        if self.live_instances > 1:
            waiting = outbox.hand_off_waiting()
            if waiting:
                async with self._pool.acquire() as conn:
                    await leases.free_outbox(conn, self.instance_id, waiting)
        async with self._pool.acquire() as conn:
            claimed = await leases.claim_outbox(
                conn, self.instance_id, outbox.receiving_accounts(), OUTBOX_CLAIM
            )
        if claimed:
            outbox.add(claimed)
            log.info("outbox rows taken", count=len(claimed))

    # ------------------------------------------------------------- notices

    async def _notices(self) -> None:
        """Send the wake notices handed off, batched."""
        while True:
            await self._wake_soon.wait()
            self._wake_soon.clear()
            try:
                await self._flush_wakes()
            except CONNECTION_LOST as exc:
                self._failures.warning("wake notice not sent; retrying", error=repr(exc))
                await asyncio.sleep(RETRY_SECONDS)
                self._wake_soon.set()

    async def _flush_wakes(self) -> None:
        if not self._to_wake:
            return
        ids, self._to_wake = self._to_wake, []
        try:
            async with self._pool.acquire() as conn:
                await conn.execute(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                    leases.WAKE_CHANNEL,
                    leases.wake_notices(ids),
                )
        except BaseException:
            self._to_wake[:0] = ids
            raise

    async def _listen_forever(self, listening: asyncio.Future[None]) -> None:
        reconnecting = False
        while True:
            try:
                await self._listen(listening, reconnecting)
            except CONNECTION_LOST as exc:
                self._failures.warning("shard notices lost their connection", error=repr(exc))
            reconnecting = True
            await asyncio.sleep(RETRY_SECONDS)

    async def _listen(self, listening: asyncio.Future[None], reconnecting: bool) -> None:
        woken: list[uuid.UUID] = []
        heard = asyncio.Event()
        lost = asyncio.Event()

        def on_shards(*_: Any) -> None:
            self._soon.set()

        def on_wake(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            woken.extend(leases.ids_of_notice(payload))
            heard.set()

        def terminated(_: Any) -> None:
            lost.set()
            heard.set()

        async with self._pool.acquire() as conn:
            await conn.add_listener(leases.SHARDS_CHANNEL, on_shards)
            await conn.add_listener(leases.WAKE_CHANNEL, on_wake)
            conn.add_termination_listener(terminated)
            if not listening.done():
                listening.set_result(None)
            try:
                if reconnecting:
                    await self._load(None)  # what was told while no one listened
                while not lost.is_set():
                    await heard.wait()
                    heard.clear()
                    if woken:
                        ids, woken[:] = list(woken), []
                        await self._load(ids)
            finally:
                conn.remove_termination_listener(terminated)
                if not conn.is_closed():
                    with contextlib.suppress(*CONNECTION_LOST):
                        await conn.remove_listener(leases.SHARDS_CHANNEL, on_shards)
                        await conn.remove_listener(leases.WAKE_CHANNEL, on_wake)
