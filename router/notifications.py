"""Everything that leaves the router about a message: DLR webhooks and SMPP
receipts to partner ESMEs.

Each notification is an outbox row first, written in the same transaction
as the final status that caused it; then a dispatcher attempts it, with
exponential backoff and jitter (first retry after about 1 s, doubling up to
10 minutes, for `[webhooks] retry_hours`), until it succeeds. A restart
reloads every row not yet done, so nothing is lost, and receivers dedupe on
id + status (CONTRACT §3).

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
from smsrouter.router.store.operations import Notification, OutboxDone, OutboxRetry

log = structlog.get_logger("notifications")

WEBHOOK = "webhook"
SMPP_RECEIPT = "smpp_receipt"
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
        self, op: OutboxDone | OutboxRetry, settled: Callable[[Any, StoreError | None], None]
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


# A JSON string (or null) of a column, and a UTC time as RFC 3339 with a Z.
def _json(expr: str) -> str:
    return f"coalesce(to_json({expr})::text, 'null')"


def _utc(expr: str) -> str:
    return f"""to_json(to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))"""


def _json_object(fields: Sequence[tuple[str, str]]) -> str:
    """SQL that builds compact JSON text with its keys in this order, like
    the JSON the router writes itself."""
    template = "{" + ",".join(f'"{key}":%s' for key, _ in fields) + "}"
    return f"format('{template}', {', '.join(value for _, value in fields)})"


def status_webhook_body() -> str:
    """The DLR webhook's body (CONTRACT §3), as SQL over the ended message's
    row `m`: the one place its fields are named, in the order it has them."""
    return _json_object(
        (
            ("id", "to_json(m.id::text)"),
            ("client_ref", _json("m.client_ref")),
            ("from", _json("m.sender")),
            ("to", _json("m.recipient")),
            ("status", _json("m.status")),
            ("error_code", _json("m.error_code")),
            ("carrier", _json("m.carrier")),
            ("parts", "m.parts"),
            ("done_at", _utc("m.done_at")),
        )
    )


def smpp_receipt_body() -> str:
    """An ESME's receipt, as SQL over the ended message's row `m`: what
    `router.payloads.SmppReceipt` decodes. `text` is the first 20 characters
    of the message (SMPP 3.4 Appendix B)."""
    return _json_object(
        (
            ("id", "to_json(m.id::text)"),
            ("sender", _json("m.sender")),
            ("recipient", _json("m.recipient")),
            ("status", _json("m.status")),
            ("error_code", _json("m.error_code")),
            ("submit_date", _utc("m.created_at")),
            ("done_date", _utc("m.done_at")),
            ("text", _json("left(m.body, 20)")),
        )
    )


# Registered delivery (SMPP 3.4 §5.2.17) bits 0-1: 1 = a receipt whatever
# the outcome, 2 = a receipt only when the message was not delivered.
_WANTS_RECEIPT = (
    "(m.registered_delivery & 3 = 1 OR (m.registered_delivery & 3 = 2 AND m.status <> 'delivered'))"
)

# The outbox rows of messages that just ended, built by the database from
# their final rows in the transaction that ended them: the router, the
# busiest process, then neither decodes the messages nor encodes payloads.
# Each message is read once for both kinds of row; a row's payload is built
# only when the row is wanted. Rows come in the order of the ids given, a
# message's webhook first.
_PLAN_OUTBOX = (
    "INSERT INTO outbox (kind, account_id, message_id, target, payload, next_attempt_at, expires_at)"
    " SELECT kind, account_id, message_id, target, convert_to(payload, 'UTF8'), $2,"
    "   done_at + $3 * interval '1 hour'"
    " FROM ("
    "  SELECT v.kind, m.account_id, m.id AS message_id, v.target,"
    f"   CASE v.sub WHEN 0 THEN {status_webhook_body()} ELSE {smpp_receipt_body()} END"
    "    AS payload, m.done_at, e.n, v.sub"
    "  FROM unnest($1::uuid[]) WITH ORDINALITY AS e(id, n) JOIN messages m ON m.id = e.id"
    f"  CROSS JOIN LATERAL (VALUES ('{WEBHOOK}', m.callback_url, 0), ('{SMPP_RECEIPT}', NULL, 1))"
    "   AS v(kind, target, sub)"
    "  WHERE (v.sub = 0 AND m.callback_url <> '')"
    f"   OR (v.sub = 1 AND m.ingress = 'smpp' AND {_WANTS_RECEIPT})"
    " ) AS planned ORDER BY n, sub"
    " RETURNING id, kind, account_id, message_id, target, payload, next_attempt_at, expires_at"
)


class OutboxPlanner:
    """The status writer's listener (store.listeners.CommitListener) that
    writes what must leave the router about the messages a flush ended:
    their outbox rows, in the transaction that ended them, so that a final
    status never commits without them. Given to the writer when it is made;
    the dispatcher, which sends the rows, joins it later."""

    def __init__(self, retry_hours: float) -> None:
        self.retry_hours = retry_hours

    async def plan_notifications(
        self, conn: asyncpg.Connection, ended: list[uuid.UUID]
    ) -> list[Notification]:
        """Inserts the outbox rows of these messages; the Notifications, in
        insertion order."""
        rows = await conn.fetch(_PLAN_OUTBOX, ended, utcnow(), self.retry_hours)
        # One statement takes its ids from one sequence in the order it
        # inserts, and the insert follows the ORDER BY.
        rows.sort(key=_first)
        return [Notification(r[0], r[1], r[2], r[3], r[4], r[5], 0, r[6], r[7]) for r in rows]

    def notifications_created(self, created: list[Notification]) -> None:
        pass  # the dispatcher's to send

    def settled(self) -> None:
        pass


def _first(row: asyncpg.Record) -> Any:
    return row[0]


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

    # -- a listener of the status writer (store.listeners.CommitListener)

    async def plan_notifications(
        self, conn: asyncpg.Connection, ended: list[uuid.UUID]
    ) -> list[Notification]:
        return []  # the OutboxPlanner's, which the writer has from the start

    def notifications_created(self, created: list[Notification]) -> None:
        """Rows a commit created: sent from now on."""
        self.add(created)

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
        for waiting in self._waiting.values():
            for n in waiting:
                self._release(n.id)
                ids.append(n.id)
        self._waiting.clear()
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
        self.writer.submit_then(op, functools.partial(self._written, op))

    def _written(self, op: OutboxDone | OutboxRetry, _: object, error: StoreError | None) -> None:
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
        self._record(OutboxDone(n.id, utcnow(), f"refused: {error}"[:500]))

    def _give_up(self, n: Notification, now: datetime, error: str) -> None:
        metrics.callbacks("expired").inc()
        self._log.warning(
            "notification given up",
            key=(n.account_id, n.kind),
            account=n.account_id,
            message_id=str(n.message_id),
            kind=n.kind,
        )
        self._record(OutboxDone(n.id, now, f"gave up after {n.attempts} attempts: {error}"[:500]))

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
        self._record(OutboxRetry(n.id, n.next_attempt_at, error[:500]))
        heapq.heappush(self._due, (self._clock() + delay, next(self._order), n))
        self._wake.set()
