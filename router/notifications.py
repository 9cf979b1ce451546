"""Everything that leaves the router about a message: DLR webhooks and SMPP
receipts to partner ESMEs.

Each notification is an outbox row first, written in the same transaction
as the final status that caused it; then a dispatcher attempts it, with
exponential backoff and jitter (first retry after about 1 s, doubling up to
10 minutes, for `[webhooks] retry_hours`), until it succeeds. A restart
reloads every row not yet done, so nothing is lost, and receivers dedupe on
id + status (CONTRACT §3).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol

import asyncpg
import structlog

from router import metrics
from router.messages import utcnow
from router.slots import Slots
from router.store import (
    GroupCommit,
    Notification,
    NotificationPlanner,
    OutboxDone,
    OutboxRetry,
    StoreError,
)

log = structlog.get_logger("notifications")

WEBHOOK = "webhook"
SMPP_RECEIPT = "smpp_receipt"
MO = "mo"  # an inbound message for an account: its inbound_url, else its bind

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 600.0


class NotAvailable(Exception):
    """The target cannot take it now (ESME not bound): wait, no backoff."""


class DeliveryFailed(Exception):
    """This attempt failed; try again later."""


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


# The DLR webhook JSON (CONTRACT §3).
_WEBHOOK_BODY = _json_object(
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
# An ESME's receipt: what `router.payloads.SmppReceipt` decodes. `text` is the first 20
# characters of the message (SMPP 3.4 Appendix B).
_SMPP_RECEIPT = _json_object(
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
# Rows come in the order of the ids given, a message's webhook first.
_PLAN_OUTBOX = (
    "INSERT INTO outbox (kind, account_id, message_id, target, payload, next_attempt_at, expires_at)"
    " SELECT kind, account_id, message_id, target, convert_to(payload, 'UTF8'), $2,"
    "   done_at + $3 * interval '1 hour'"
    " FROM ("
    f"  SELECT '{WEBHOOK}' AS kind, m.account_id, m.id AS message_id, m.callback_url AS target,"
    f"   {_WEBHOOK_BODY} AS payload, m.done_at, e.n, 0 AS sub"
    "   FROM unnest($1::uuid[]) WITH ORDINALITY AS e(id, n) JOIN messages m ON m.id = e.id"
    "   WHERE m.callback_url <> ''"
    "  UNION ALL"
    f"  SELECT '{SMPP_RECEIPT}', m.account_id, m.id, NULL, {_SMPP_RECEIPT}, m.done_at, e.n, 1"
    "   FROM unnest($1::uuid[]) WITH ORDINALITY AS e(id, n) JOIN messages m ON m.id = e.id"
    f"   WHERE m.ingress = 'smpp' AND {_WANTS_RECEIPT}"
    " ) AS planned ORDER BY n, sub"
    " RETURNING id, kind, account_id, message_id, target, payload, next_attempt_at, expires_at"
)


def plan_notifications(retry_hours: float) -> NotificationPlanner:
    """Inserts the outbox rows of messages that just ended (inside the
    commit that ended them); the Notifications, in insertion order."""

    async def plan(conn: asyncpg.Connection, message_ids: list[uuid.UUID]) -> list[Notification]:
        rows = await conn.fetch(_PLAN_OUTBOX, message_ids, utcnow(), retry_hours)
        # One statement takes its ids from one sequence in the order it
        # inserts, and the insert follows the ORDER BY.
        rows.sort(key=_first)
        return [Notification(r[0], r[1], r[2], r[3], r[4], r[5], 0, r[6], r[7]) for r in rows]

    return plan


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


class Dispatcher:
    """Attempts due notifications with bounded concurrency; reschedules failures."""

    def __init__(
        self,
        *,
        writer: GroupCommit,
        channels: dict[str, Channel],
        concurrency: int = 64,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.writer = writer
        self.channels = channels
        self._clock = clock
        self._rng = rng or random.Random()
        self._due: list[tuple[float, int, Notification]] = []
        # Heap tiebreak: entries never compare their Notification.
        self._order = itertools.count()
        # Receipts for ESMEs that are not bound, per account, in order.
        self._waiting: dict[str, list[Notification]] = {}
        self._slots = Slots(concurrency)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False

    def add(self, notifications: Sequence[Notification]) -> None:
        now = utcnow()
        mono = self._clock()
        for n in notifications:
            delay = max(0.0, (n.next_attempt_at - now).total_seconds())
            heapq.heappush(self._due, (mono + delay, next(self._order), n))
        self._wake.set()

    def account_ready(self, account_id: str) -> None:
        """An ESME of this account bound: its waiting receipts are due now."""
        waiting = self._waiting.pop(account_id, [])
        mono = self._clock()
        for n in waiting:
            heapq.heappush(self._due, (mono, next(self._order), n))
        if waiting:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._due) + sum(len(w) for w in self._waiting.values()) + len(self._inflight)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="notifications")

    async def stop(self, timeout: float) -> None:
        self._stopping = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._task is not None:
            # The loop may be waiting for a slot that hung deliveries hold:
            # `timeout` bounds the whole stop, so it is cancelled past it.
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

    async def _run(self) -> None:
        while not self._stopping:
            now = self._clock()
            while self._due and self._due[0][0] <= now and not self._stopping:
                # A slot first, then the row: a row popped while waiting for
                # a slot would be in no queue (missing from `pending`, lost
                # from memory if stop() cancels the wait). Only this loop
                # pops, so the head is still due once the slot is ours.
                await self._slots.acquire()
                if self._stopping:
                    self._slots.release()
                    break
                _, _, n = heapq.heappop(self._due)
                task = self._loop.create_task(self._attempt(n))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            self._wake.clear()
            timeout = 1.0 if not self._due else min(1.0, max(0.0, self._due[0][0] - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _attempt(self, n: Notification) -> None:
        try:
            channel = self.channels.get(n.kind)
            if channel is None:
                raise DeliveryFailed(f"no channel for {n.kind}")
            await channel.deliver(n)
        except NotAvailable:
            self._waiting.setdefault(n.account_id, []).append(n)
            return
        except DeliveryFailed as exc:
            self._failed(n, str(exc))
            return
        except Exception as bug:  # a bug in a channel must not lose the row
            log.exception("notification channel error", message_id=str(n.message_id))
            self._failed(n, repr(bug))
            return
        finally:
            self._slots.release()
        metrics.callbacks("ok").inc()
        self._record(OutboxDone(n.id, utcnow()))

    def _record(self, op: OutboxDone | OutboxRetry) -> None:
        """Write an attempt's outcome; if the write fails the row stays
        pending in the table and is attempted again after a restart."""

        def written(_: object, error: StoreError | None) -> None:
            if error is not None:
                log.error("could not record a notification attempt", outbox_id=op.outbox_id)

        self.writer.submit_then(op, written)

    def _failed(self, n: Notification, error: str) -> None:
        now = utcnow()
        n.attempts += 1
        if now >= n.expires_at:
            metrics.callbacks("expired").inc()
            log.warning("notification given up", message_id=str(n.message_id), kind=n.kind)
            self._record(
                OutboxDone(n.id, now, f"gave up after {n.attempts} attempts: {error}"[:500])
            )
            return
        metrics.callbacks("retry").inc()
        delay = backoff(n.attempts - 1, self._rng)
        n.next_attempt_at = now + timedelta(seconds=delay)
        log.info(
            "notification failed, will retry",
            message_id=str(n.message_id),
            kind=n.kind,
            attempts=n.attempts,
            retry_in=round(delay, 2),
            error=error,
        )
        self._record(OutboxRetry(n.id, n.next_attempt_at, error[:500]))
        heapq.heappush(self._due, (self._clock() + delay, next(self._order), n))
        self._wake.set()
