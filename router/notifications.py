"""Everything that leaves the router about a message: DLR webhooks and SMPP
receipts to partner ESMEs.

Each notification is kept in the same transaction as the final status that
caused it: by its flush's notification batch (one row per flush, migration
0018), or by an outbox row of its own (an MO, a notification whose first
try did not deliver it). Then a dispatcher attempts it, with exponential
backoff and jitter (first retry after about 1 s, doubling up to 10
minutes, for `[webhooks] retry_hours`), until it succeeds. A restart turns
what batches still hold into outbox rows and reloads every row not yet
done, so nothing is lost, and receivers dedupe on id + status (CONTRACT
§3); a notification keeps its outbox id, the webhook-id of every try,
from its first.

Accounts are isolated (CONTRACT §11): each account's due rows wait in a
queue of their own, accounts with due rows take turns for the shared slots,
no account holds more than its share of them, and an account whose
receiver keeps failing or timing out is backed off as a whole, so a dead
receiver costs one slot now and then instead of every slot all the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg
import structlog

from smsrouter.router import metrics
from smsrouter.router.log_limits import LimitedLog, RepeatLimiter
from smsrouter.router.messages import utcnow
from smsrouter.router.store.group_commit import StoreError
from smsrouter.router.store.notices import INSERT_BATCH, SMPP_RECEIPT, WEBHOOK
from smsrouter.router.store.operations import (
    BatchSettled,
    Finished,
    Notification,
    OutboxDone,
    OutboxKept,
    OutboxRetry,
)

log = structlog.get_logger("notifications")

# The kinds of a message's notifications, WEBHOOK and SMPP_RECEIPT, are
# store.notices'.
MO = "mo"  # an inbound message for an account: its inbound_url, else its bind

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 600.0

# An account's share of the dispatcher's slots (`[webhooks] concurrency`,
# 64 by default): a quarter, 16. It may always hold its share; beyond it
# only a healthy account borrows idle slots, and only while more than a
# share of them stays free. So one busy account alone still gets three
# quarters of the slots (a callback in flight lasts a few turns of a busy
# event loop, and throughput is slots over that time), while whatever one
# account's receiver does, a share of the slots stays free for the others:
# a receiver that accepts and never answers holds at most 48 slots for one
# timeout, and then one (see the backoff below).
ACCOUNT_SHARE = 4
# Failed attempts in a row (errors and timeouts, from any of the account's
# rows) before the account is backed off: one or two failures are a
# receiver's deploy or a lost connection, not a dead receiver.
ACCOUNT_FAILURES_BEFORE_BACKOFF = 3
# An account backed off waits this long, doubling at each backoff up to the
# cap, then tries one row at a time until one succeeds. The cap bounds how
# late a receiver that comes back gets its queue: a minute, plus a timeout.
ACCOUNT_FIRST_BACKOFF_SECONDS = 1.0
ACCOUNT_MAX_BACKOFF_SECONDS = 60.0


class NotAvailable(Exception):
    """The target cannot take it now (ESME not bound): wait, no backoff."""


class DeliveryFailed(Exception):
    """This attempt failed; try again later, and not before `retry_after`
    seconds when the receiver said so (a 429 or 503 with Retry-After)."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class DeliveryRefused(DeliveryFailed):
    """The target is refused for good (a malformed URL, a private address
    with deny_private_networks): no retry can succeed, so the row is given
    up at once (CONTRACT §11 "Callback addresses")."""


class OutcomeWriter(Protocol):
    """Where attempts' outcomes are written (store.group_commit.GroupCommit)."""

    def submit_then(
        self,
        op: OutboxDone | OutboxRetry | OutboxKept | BatchSettled,
        settled: Callable[[Any, StoreError | None], None],
    ) -> None: ...


class Channel(Protocol):
    async def deliver(self, notification: Notification) -> None:
        """Raise DeliveryFailed or NotAvailable unless it was delivered."""
        ...


class ByTarget:
    """MO rows go by HTTP when the account has an inbound_url (the row's
    target), else over SMPP to one of its receiving binds."""

    def __init__(self, http: Channel, smpp: Channel) -> None:
        self.http = http
        self.smpp = smpp

    async def deliver(self, notification: Notification) -> None:
        channel = self.http if notification.target else self.smpp
        await channel.deliver(notification)


class OutboxPlanner:
    """The status writer's listener (store.listeners.CommitListener) that
    keeps what must leave the router about the messages a flush ended: one
    notification batch row (migration 0018) naming each notification with
    the outbox id it keeps, in the transaction that ended them, so that a
    final status never commits without it. The payloads come with the ends
    (store.notices): no message is read again. Given to the writer when it
    is made; the dispatcher, which sends the notifications, joins it later.
    """

    def __init__(self, retry_hours: float) -> None:
        self.retry_hours = retry_hours
        self._retry = timedelta(hours=retry_hours)
        # Batches of flushes that failed without an answer: their commit
        # may have landed, and no one holds their notifications. Turned into
        # outbox rows once the database is back (`take_doubtful`).
        self._doubtful: set[int] = set()

    async def plan_notifications(
        self, conn: asyncpg.Connection, ended: list[Finished]
    ) -> list[Notification]:
        """Writes the batch of these messages' notifications; them, in the
        order they are sent (a message's webhook first)."""
        message_ids: list[uuid.UUID] = []
        kinds: list[str] = []
        owed: list[tuple[Finished, str, str | None, bytes]] = []
        for f in ended:
            if f.webhook is not None:
                message_ids.append(f.message_id)
                kinds.append(WEBHOOK)
                owed.append((f, WEBHOOK, f.callback_url, f.webhook))
            if f.receipt is not None:
                message_ids.append(f.message_id)
                kinds.append(SMPP_RECEIPT)
                owed.append((f, SMPP_RECEIPT, None, f.receipt))
        if not owed:
            return []
        row = await conn.fetchrow(INSERT_BATCH, message_ids, kinds, self.retry_hours)
        batch: int = row[0]
        now = utcnow()
        retry = self._retry
        return [
            Notification(
                outbox_id, kind, f.account_id, f.message_id, target, payload, 0, now,
                (f.done_at or now) + retry, batch,
            )
            for outbox_id, (f, kind, target, payload) in zip(row[1], owed, strict=True)
        ]  # fmt: skip

    def notifications_created(self, created: list[Notification]) -> None:
        pass  # the dispatcher's to send

    def commit_failed(self, created: list[Notification], in_doubt: bool) -> None:
        if in_doubt:
            self._doubtful.update(n.batch for n in created if n.batch)

    def take_doubtful(self) -> list[int]:
        """The batches of flushes whose commit is in doubt, given to the
        caller to turn into outbox rows (`give_back` if it could not)."""
        doubtful = sorted(self._doubtful)
        self._doubtful.clear()
        return doubtful

    def give_back(self, batches: Iterable[int]) -> None:
        self._doubtful.update(batches)

    def settled(self) -> None:
        pass


def backoff(attempts: int, rng: random.Random) -> float:
    """Seconds before the next try: ~1 s doubling with jitter, capped at 10 min.

    "Full jitter" on the upper half (the AWS architecture blog's variant
    that keeps a floor): spreads retries of many callbacks that failed at
    once without making any of them come back too early.
    """
    # The exponent is clamped first: 2**1024 does not fit a float, and a row
    # reaches 1024 attempts after ~7 days of 10-min retries (retry_hours is
    # configurable). 2**30 s is far past the cap already.
    ceiling = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** min(attempts, 30))
    return ceiling / 2 + rng.random() * ceiling / 2


def retry_delay(backoff_delay: float, retry_after: float, until_expiry: float) -> float:
    """Seconds before the next try when the receiver answered Retry-After:
    not before it, but no later than the longest backoff (10 min) nor past
    the row's expiry, where its last try falls (CONTRACT §3)."""
    wanted = max(backoff_delay, min(retry_after, MAX_RETRY_SECONDS))
    return max(0.0, min(wanted, max(backoff_delay, until_expiry)))


class _Account:
    """One account's due rows and how its receiver has been doing."""

    __slots__ = ("failures", "id", "inflight", "level", "ready", "resume_at", "ringed")

    def __init__(self, account_id: str) -> None:
        self.id = account_id
        self.ready: deque[Notification] = deque()  # due, in the order they came due
        self.inflight = 0
        self.failures = 0  # failed attempts in a row
        self.level = 0  # backoffs since the last success
        self.resume_at = 0.0  # monotonic time before which none of its rows starts
        self.ringed = False  # in the dispatcher's ring of accounts to serve


class Dispatcher:
    """Attempts due notifications with bounded concurrency, fairly across
    accounts; reschedules failures.

    Rows not yet due wait in one heap by due time; a row that comes due
    joins its account's queue. Accounts with queued rows take turns in a
    ring, one row per turn, while a slot is free. An account holds up to its
    share of the slots (`account_concurrency`, by default a quarter of
    them), more only while more than a share stays free; one at its limit,
    or backing off, leaves the ring until one of its attempts ends or its
    backoff does. So a busy account's backlog waits behind its own rows,
    never in front of another account's.
    """

    def __init__(
        self,
        *,
        writer: OutcomeWriter,
        channels: dict[str, Channel],
        concurrency: int = 64,
        account_concurrency: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if account_concurrency is None:
            account_concurrency = max(1, concurrency // ACCOUNT_SHARE)
        if account_concurrency < 1:
            raise ValueError("account_concurrency must be at least 1")
        self.writer = writer
        self.channels = channels
        self._concurrency = concurrency
        self._account_share = account_concurrency
        self._clock = clock
        self._rng = rng or random.Random()
        # Rows not yet due, by monotonic due time.
        self._due: list[tuple[float, int, Notification]] = []
        # Accounts whose backoff ends then.
        self._resume: list[tuple[float, int, _Account]] = []
        # Heap tiebreak: entries never compare what they carry.
        self._order = itertools.count()
        self._accounts: dict[str, _Account] = {}
        self._ring: deque[_Account] = deque()
        self._ready = 0  # rows in the accounts' queues
        self._busy = 0  # attempts in flight
        # Outbox ids held in any state, until a final outcome is written,
        # with their kind; and how many of each kind are held: the outbox
        # rows not done, counted without a query (smsrouter_outbox_backlog,
        # CONTRACT §5).
        self._held: dict[int, str] = {}
        self._backlog: dict[str, int] = {}
        # Receipts for ESMEs that are not bound, per account, in order.
        self._waiting: dict[str, list[Notification]] = {}
        # Notifications that only their batch keeps (migration 0018), by
        # outbox id; and per batch, how many of its notifications are not
        # yet delivered nor kept in an outbox row of their own.
        self._batched: dict[int, Notification] = {}
        self._batches: dict[int, int] = {}
        # Outbox ids whose OutboxKept is not yet written; and the writes of
        # kept rows and settled batches not yet written, which a stop awaits.
        self._keeping: set[int] = set()
        self._writes = 0
        self._written_all = asyncio.Event()
        self._written_all.set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False
        # One dead receiver fails every row of its account: a line per
        # account and kind per interval, with the count (CONTRACT §11).
        self._log = LimitedLog(log, RepeatLimiter(clock=clock))

    def add(self, notifications: Sequence[Notification]) -> None:
        now = utcnow()
        mono = self._clock()
        for n in notifications:
            self._hold(n)
            if n.batch:
                self._batched[n.id] = n
                self._batches[n.batch] = self._batches.get(n.batch, 0) + 1
            delay = (n.next_attempt_at - now).total_seconds()
            if delay <= 0.0:
                self._make_ready(n)
            else:
                heapq.heappush(self._due, (mono + delay, next(self._order), n))
        self._wake.set()

    def _hold(self, n: Notification) -> None:
        if n.id not in self._held:
            self._held[n.id] = n.kind
            self._backlog[n.kind] = self._backlog.get(n.kind, 0) + 1

    def _release(self, outbox_id: int) -> None:
        kind = self._held.pop(outbox_id, None)
        if kind is not None:
            self._backlog[kind] -= 1

    def backlog(self, kind: str) -> int:
        """Outbox rows of this kind held and not yet written done."""
        return self._backlog.get(kind, 0)

    def add_missing(self, notifications: Iterable[Notification]) -> int:
        """Add the rows not held already (due, waiting for a bind, backing
        off, in flight, or done and not yet written): after the database
        comes back, every pending row of the outbox re-read, so that rows
        whose commit's answer was lost still leave. Returns how many."""
        missing = [n for n in notifications if n.id not in self._held]
        self.add(missing)
        return len(missing)

    def batches(self) -> list[int]:
        """The notification batches whose notifications are held here."""
        return list(self._batches)

    # -- a listener of the status writer (store.listeners.CommitListener)

    async def plan_notifications(
        self, conn: asyncpg.Connection, ended: list[Finished]
    ) -> list[Notification]:
        return []  # the OutboxPlanner's, which the writer has from the start

    def notifications_created(self, created: list[Notification]) -> None:
        """Notifications a commit created: sent from now on."""
        self.add(created)

    def commit_failed(self, created: list[Notification], in_doubt: bool) -> None:
        pass  # the OutboxPlanner's

    def settled(self) -> None:
        pass

    def account_ready(self, account_id: str) -> None:
        """An ESME of this account bound: its waiting receipts are due now."""
        waiting = self._waiting.pop(account_id, [])
        for n in waiting:
            self._make_ready(n)
        if waiting:
            self._wake.set()

    def hand_off_waiting(self) -> list[int]:
        """Give up every row that waits for a receiving bind this process
        does not hold (CONTRACT §9: it goes out on whichever instance holds
        one); the caller sets them free in the database. Their ids."""
        ids: list[int] = []
        for account_id, waiting in list(self._waiting.items()):
            # A row being written stays until it is: freeing it now would
            # miss it.
            keeping = [n for n in waiting if n.id in self._keeping]
            for n in waiting:
                if n.id not in self._keeping:
                    self._release(n.id)
                    ids.append(n.id)
            if keeping:
                self._waiting[account_id] = keeping
            else:
                del self._waiting[account_id]
        return ids

    @property
    def pending(self) -> int:
        return (
            len(self._due)
            + self._ready
            + sum(len(w) for w in self._waiting.values())
            + len(self._inflight)
        )

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="notifications")

    async def stop(self, timeout: float) -> None:
        self._stopping = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._inflight:
            remaining = max(0.0, deadline - loop.time())
            _, pending = await asyncio.wait(self._inflight, timeout=remaining)
            for t in pending:
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)
        # What only a batch keeps is written as outbox rows of its own, and
        # the batches settle: the next start (or another instance) sends
        # those rows alone, not the whole batches again.
        for n in list(self._batched.values()):
            self._keep(n, None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._written_all.wait(), max(0.1, deadline - loop.time()))

    # -- the loop

    async def _run(self) -> None:
        while not self._stopping:
            now = self._clock()
            self._promote(now)
            self._dispatch(now)
            # Everything above is synchronous: nothing can have set the
            # event since this turn began looking.
            self._wake.clear()
            timeout = 1.0
            if self._due:
                timeout = min(timeout, self._due[0][0] - now)
            if self._resume:
                timeout = min(timeout, self._resume[0][0] - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, timeout))

    def _account(self, account_id: str) -> _Account:
        account = self._accounts.get(account_id)
        if account is None:
            account = self._accounts[account_id] = _Account(account_id)
        return account

    def _make_ready(self, n: Notification) -> None:
        account = self._account(n.account_id)
        account.ready.append(n)
        self._ready += 1
        self._ring_up(account)

    def _ring_up(self, account: _Account) -> None:
        """Give an account a turn if it may have become servable; the ring
        drops it on its turn if it cannot be served after all."""
        if not account.ringed and account.ready:
            account.ringed = True
            self._ring.append(account)

    def _promote(self, now: float) -> None:
        due = self._due
        while due and due[0][0] <= now:
            self._make_ready(heapq.heappop(due)[2])
        resume = self._resume
        while resume and resume[0][0] <= now:
            self._ring_up(heapq.heappop(resume)[2])

    def _may_start(self, account: _Account, now: float) -> bool:
        """Whether the account may start another attempt now (the caller
        has a free slot)."""
        if account.resume_at > now:
            return False
        if account.failures >= ACCOUNT_FAILURES_BEFORE_BACKOFF:
            # Backed off, it tries one row at a time until one succeeds.
            return account.inflight < 1
        if account.inflight < self._account_share:
            return True
        # Beyond its share: a healthy account borrows idle slots, leaving
        # more than a share of them free for the other accounts.
        return account.failures == 0 and self._concurrency - self._busy > self._account_share

    def _dispatch(self, now: float) -> None:
        """Start rows while slots are free, one per account per turn."""
        ring = self._ring
        while ring and self._busy < self._concurrency and not self._stopping:
            account = ring.popleft()
            if not self._may_start(account, now):
                account.ringed = False  # back in when an attempt ends or backoff does
                continue
            n = self._next_row(account)
            if n is None:
                account.ringed = False
                continue
            account.inflight += 1
            self._busy += 1
            task = self._loop.create_task(self._attempt(n, account))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            if account.ready and self._may_start(account, now):
                ring.append(account)
            else:
                account.ringed = False

    def _next_row(self, account: _Account) -> Notification | None:
        """The account's next row; while its receiver keeps failing, rows
        whose time is up are given up without another attempt, so that a
        dead receiver's backlog does not outlive `retry_hours`."""
        ready = account.ready
        failing = account.failures >= ACCOUNT_FAILURES_BEFORE_BACKOFF
        now = utcnow() if failing else None
        while ready:
            n = ready.popleft()
            self._ready -= 1
            if now is None or now < n.expires_at:
                return n
            self._give_up(n, now, "its receiver kept failing")
        return None

    # -- an attempt

    async def _attempt(self, n: Notification, account: _Account) -> None:
        try:
            channel = self.channels.get(n.kind)
            if channel is None:
                raise DeliveryFailed(f"no channel for {n.kind}")
            await channel.deliver(n)
        except NotAvailable:
            if n.batch:
                # It may wait long, or go to another instance's bind.
                self._keep(n, None)
            self._waiting.setdefault(n.account_id, []).append(n)
            return
        except DeliveryRefused as refused:
            self._refused(n, str(refused))
            return
        except DeliveryFailed as exc:
            self._account_failed(account, exc.retry_after)
            self._failed(n, str(exc), exc.retry_after)
            return
        except Exception as bug:  # a bug in a channel must not lose the row
            self._log.error(
                "notification channel error",
                key=(n.account_id, n.kind),
                exc_info=True,
                account=n.account_id,
                message_id=str(n.message_id),
            )
            self._account_failed(account)
            self._failed(n, repr(bug))
            return
        finally:
            account.inflight -= 1
            self._busy -= 1
            # The loop is woken only when the freed slot can start a row:
            # one of this account, or of an account waiting in the ring. A
            # wake-up per attempt otherwise costs each message a turn of
            # the dispatcher's loop for nothing.
            if account.ready or self._ring:
                self._ring_up(account)
                self._wake.set()
        account.failures = 0
        account.level = 0
        account.resume_at = 0.0
        metrics.callbacks("ok").inc()
        if n.batch:
            # Nothing to write: its batch goes once all of it is settled.
            del self._batched[n.id]
            self._release(n.id)
            self._settle(n.batch)
        else:
            self._record(OutboxDone(n.id, utcnow()))

    def _account_failed(self, account: _Account, retry_after: float | None = None) -> None:
        """Count a failed attempt (an error or a timeout) against its
        account; past the threshold the account backs off. Failures of
        attempts that were in flight together land within one backoff and
        do not lengthen it. A receiver that asked for a pause (Retry-After)
        gets it for all of the account's rows, up to the account's longest
        backoff."""
        account.failures += 1
        now = self._clock()
        if retry_after is not None and retry_after > 0.0:
            pause = now + min(retry_after, ACCOUNT_MAX_BACKOFF_SECONDS)
            if pause > account.resume_at:
                account.resume_at = pause
                heapq.heappush(self._resume, (pause, next(self._order), account))
                self._wake.set()
        if account.failures < ACCOUNT_FAILURES_BEFORE_BACKOFF or now < account.resume_at:
            return
        delay = min(
            ACCOUNT_MAX_BACKOFF_SECONDS,
            ACCOUNT_FIRST_BACKOFF_SECONDS * 2 ** min(account.level, 30),
        )
        account.level += 1
        account.resume_at = now + delay
        heapq.heappush(self._resume, (account.resume_at, next(self._order), account))
        self._wake.set()  # the loop's next wait ends when this backoff does
        self._log.warning(
            "account callbacks backing off",
            key=account.id,
            account=account.id,
            failures=account.failures,
            seconds=delay,
        )

    def _record(self, op: OutboxDone | OutboxRetry) -> None:
        """Write an attempt's outcome; if the write fails the row stays
        pending in the table and is attempted again after a restart (or
        when `add_missing` reads it back)."""
        # A partial, not a closure (a reference cycle per attempt, compiled).
        self.writer.submit_then(op, functools.partial(self._recorded, op))

    def _keep(self, n: Notification, error: str | None, done_at: datetime | None = None) -> None:
        """Write a notification that only its batch keeps as an outbox row
        of its own, as it stands, under the id it was sent with; from now
        on its outcomes are written to that row."""
        batch, n.batch = n.batch, 0
        del self._batched[n.id]
        self._keeping.add(n.id)
        self._writing()
        self.writer.submit_then(
            OutboxKept(n, error, done_at),
            functools.partial(self._kept, n.id, batch, done_at is not None),
        )

    def _kept(
        self, outbox_id: int, batch: int, done: bool, _: object, error: StoreError | None
    ) -> None:
        self._keeping.discard(outbox_id)
        if done:
            self._release(outbox_id)
        if error is None:
            self._settle(batch)
        else:
            # Its batch stays, and a restart turns it into rows again.
            self._log.error("could not keep a notification", outbox_id=outbox_id)
        self._written()

    def _settle(self, batch: int) -> None:
        """One of the batch's notifications was delivered or kept; the last
        one deletes the batch's row."""
        left = self._batches.pop(batch, 0) - 1
        if left > 0:
            self._batches[batch] = left
        elif left == 0:
            self._writing()
            self.writer.submit_then(BatchSettled(batch), self._batch_settled)

    def _batch_settled(self, _: object, error: StoreError | None) -> None:
        if error is not None:
            self._log.error("could not delete a settled notification batch")
        self._written()

    def _writing(self) -> None:
        self._writes += 1
        self._written_all.clear()

    def _written(self) -> None:
        self._writes -= 1
        if self._writes == 0:
            self._written_all.set()

    def _recorded(self, op: OutboxDone | OutboxRetry, _: object, error: StoreError | None) -> None:
        if isinstance(op, OutboxDone):
            # Held until written, so that add_missing, reading the table
            # meanwhile, does not send a finished row again.
            self._release(op.outbox_id)
        if error is not None:
            self._log.error("could not record a notification attempt", outbox_id=op.outbox_id)

    def _refused(self, n: Notification, error: str) -> None:
        n.attempts += 1
        metrics.callbacks("refused").inc()
        self._log.warning(
            "notification refused, given up",
            key=(n.account_id, n.kind),
            account=n.account_id,
            message_id=str(n.message_id),
            kind=n.kind,
            error=error,
        )
        self._finish(n, utcnow(), f"refused: {error}"[:500])

    def _give_up(self, n: Notification, now: datetime, error: str) -> None:
        metrics.callbacks("expired").inc()
        self._log.warning(
            "notification given up",
            key=(n.account_id, n.kind),
            account=n.account_id,
            message_id=str(n.message_id),
            kind=n.kind,
        )
        self._finish(n, now, f"gave up after {n.attempts} attempts: {error}"[:500])

    def _finish(self, n: Notification, now: datetime, error: str) -> None:
        """A notification given up: its row stays, done, with the error."""
        if n.batch:
            self._keep(n, error, now)
        else:
            self._record(OutboxDone(n.id, now, error))

    def _failed(self, n: Notification, error: str, retry_after: float | None = None) -> None:
        now = utcnow()
        n.attempts += 1
        if now >= n.expires_at:
            self._give_up(n, now, error)
            return
        metrics.callbacks("retry").inc()
        delay = backoff(n.attempts - 1, self._rng)
        if retry_after is not None:
            delay = retry_delay(delay, retry_after, (n.expires_at - now).total_seconds())
        n.next_attempt_at = now + timedelta(seconds=delay)
        self._log.info(
            "notification failed, will retry",
            key=(n.account_id, n.kind),
            account=n.account_id,
            message_id=str(n.message_id),
            kind=n.kind,
            attempts=n.attempts,
            retry_in=round(delay, 2),
            error=error,
        )
        if n.batch:
            self._keep(n, error[:500])
        else:
            self._record(OutboxRetry(n.id, n.next_attempt_at, error[:500]))
        heapq.heappush(self._due, (self._clock() + delay, next(self._order), n))
        self._wake.set()
