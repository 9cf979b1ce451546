"""PostgreSQL, the system of record: group-committed writes and the reads.

Nothing is acknowledged before it is committed, and committing one message
at a time caps a router at a few thousand messages per second (one fsync
each). So every write goes through one `GroupCommit` writer: callers hand
it an operation and await its future (or give a callback, told inside the
writer); the writer takes everything that is waiting the moment its
previous commit lands, runs it in ONE transaction (COPY / unnest batches)
and resolves all the futures together. Measured on
the reference machine: ~39k rows/s at p99 4.4 ms, where a fixed flush timer
gave a third of that (FACTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec
import structlog

from smsrouter.router import metrics
from smsrouter.router.log_limits import LimitedLog
from smsrouter.router.messages import FINAL_STATUSES, STATUS_OF, Message, Status

log = structlog.get_logger("store")


# ---------------------------------------------------------------- operations


@dataclass(slots=True)
class InsertMessage:
    """New messages; one operation is one transaction, so a batch request's
    recipients are stored all together or not at all."""

    messages: Sequence[Message]

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        messages: Sequence[Message],
    ) -> None:
        self.messages = messages


@dataclass(slots=True)
class PartSent:
    """A carrier accepted one part (submit_sm_resp with ESME_ROK)."""

    message_id: uuid.UUID
    part: int
    carrier: str
    carrier_message_id: str
    at: datetime

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        message_id: uuid.UUID,
        part: int,
        carrier: str,
        carrier_message_id: str,
        at: datetime,
    ) -> None:
        self.message_id = message_id
        self.part = part
        self.carrier = carrier
        self.carrier_message_id = carrier_message_id
        self.at = at


@dataclass(slots=True)
class MessageEnded:
    """A message ends without a receipt: rejected, failed or expired here."""

    message_id: uuid.UUID
    status: Status
    error_code: str
    at: datetime
    carrier: str | None = None


@dataclass(slots=True)
class CarrierReceipt:
    """A carrier's delivery receipt for one submitted part."""

    carrier: str
    carrier_message_id: str
    status: Status
    error_code: str | None
    at: datetime

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        carrier: str,
        carrier_message_id: str,
        status: Status,
        error_code: str | None,
        at: datetime,
    ) -> None:
        self.carrier = carrier
        self.carrier_message_id = carrier_message_id
        self.status = status
        self.error_code = error_code
        self.at = at


@dataclass(slots=True)
class MessageEvent:
    """A step of a message's history beyond the standard ones (a failover)."""

    message_id: uuid.UUID
    at: datetime
    status: str
    detail: str


@dataclass(slots=True)
class NewNotification:
    """An outbox row that no message status produced (an inbound MO)."""

    notification_kind: str
    account_id: str
    target: str | None
    payload: bytes
    expires_at: datetime
    message_id: uuid.UUID | None = None


@dataclass(slots=True)
class OutboxDone:
    """A notification is finished: delivered, or given up with `error`."""

    outbox_id: int
    at: datetime
    error: str | None = None

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        outbox_id: int,
        at: datetime,
        error: str | None = None,
    ) -> None:
        self.outbox_id = outbox_id
        self.at = at
        self.error = error


@dataclass(slots=True)
class OutboxRetry:
    outbox_id: int
    next_attempt_at: datetime
    error: str


Operation = (
    InsertMessage
    | PartSent
    | MessageEnded
    | CarrierReceipt
    | MessageEvent
    | NewNotification
    | OutboxDone
    | OutboxRetry
)


@dataclass(slots=True)
class Notification:
    """A row of the outbox: something that must leave the router."""

    id: int
    kind: str  # 'webhook' | 'smpp_receipt'
    account_id: str
    message_id: uuid.UUID | None
    target: str | None
    payload: bytes
    attempts: int
    next_attempt_at: datetime
    expires_at: datetime

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        id: int,
        kind: str,
        account_id: str,
        message_id: uuid.UUID | None,
        target: str | None,
        payload: bytes,
        attempts: int,
        next_attempt_at: datetime,
        expires_at: datetime,
    ) -> None:
        self.id = id
        self.kind = kind
        self.account_id = account_id
        self.message_id = message_id
        self.target = target
        self.payload = payload
        self.attempts = attempts
        self.next_attempt_at = next_attempt_at
        self.expires_at = expires_at


@dataclass(slots=True)
class Finished:
    """A message that ended in this commit, and how."""

    message_id: uuid.UUID
    status: Status

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        message_id: uuid.UUID,
        status: Status,
    ) -> None:
        self.message_id = message_id
        self.status = status


# Given the connection of a commit and the ids of the messages it ended,
# insert their outbox rows in that transaction and return them. Set by the
# notification side at start-up.
NotificationPlanner = Callable[
    [asyncpg.Connection, list[uuid.UUID]], Awaitable[list["Notification"]]
]


# ---------------------------------------------------------------- batch SQL

# The stored Message fields, in the order _insert_messages gives them.
_MESSAGE_COLUMNS: tuple[str, ...] = (
    "id",
    "account_id",
    "ingress",
    "sender",
    "recipient",
    "body",
    "encoding",
    "data_coding",
    "udh",
    "parts",
    "price",
    "client_ref",
    "callback_url",
    "registered_delivery",
    "status",
    "created_at",
    "valid_until",
    "send_at",
)


# A binary COPY of the batch: one round trip, its own transaction when
# alone in a flush (under load every round trip waits for a turn of the
# busy event loop, so the count of round trips sets the commit latency).
# Measured against one INSERT ... SELECT FROM unnest() of an array per
# column: half the router's CPU per row (asyncpg checks every array element
# against collections.abc; a COPY row goes straight through each column's
# codec) and cheaper for the database too.
async def _insert_messages(conn: asyncpg.Connection, ops: list[InsertMessage]) -> list[Any]:
    await conn.copy_records_to_table(
        "messages",
        columns=_MESSAGE_COLUMNS,
        records=[
            (
                m.id,
                m.account_id,
                m.ingress,
                m.sender,
                m.recipient,
                m.body,
                m.encoding,
                m.data_coding,
                m.udh,
                m.parts,
                m.price,
                m.client_ref,
                m.callback_url,
                m.registered_delivery,
                str(m.status),
                m.created_at,
                m.valid_until,
                m.send_at,
            )
            for op in ops
            for m in op.messages
        ],
    )
    return [None] * len(ops)


# A sent part is one row of carrier_submits, which its receipt will match;
# the message row is left alone until the message ends. An UPDATE of it per
# sent part cost more of the database than storing the message did, and
# what it recorded (sent, when, where, how many parts) is read off these
# rows instead (`get_message`, `pending_messages`).
_PARTS_SENT = (
    "INSERT INTO carrier_submits (carrier, carrier_message_id, message_id, part, submitted_at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::int2[], $5::timestamptz[])"
    " ON CONFLICT (carrier, carrier_message_id, part) DO UPDATE"
    " SET message_id = EXCLUDED.message_id,"
    "     submitted_at = EXCLUDED.submitted_at, status = 'sent', done_at = NULL"
)


async def _parts_sent(conn: asyncpg.Connection, ops: list[PartSent]) -> list[Any]:
    # ON CONFLICT may not touch one row twice in a statement: a carrier id
    # repeated within the batch (a resend after a lost link) keeps its last.
    latest = {(o.carrier, o.carrier_message_id, o.part): o for o in ops}
    submits = latest.values()
    await conn.execute(
        _PARTS_SENT,
        [o.carrier for o in submits],
        [o.carrier_message_id for o in submits],
        [o.message_id for o in submits],
        [o.part for o in submits],
        [o.at for o in submits],
    )
    return [None] * len(ops)


# What a statement that ends messages returns of each: the Finished.
_FINISHED_OF_M = "m.id, m.status"


def _finished(rows: Sequence[asyncpg.Record]) -> list[Finished]:
    return [Finished(r["id"], STATUS_OF[r["status"]]) for r in rows]


_MESSAGES_ENDED = (
    "UPDATE messages m SET status = u.status, error_code = u.error_code, done_at = u.at,"
    " carrier = coalesce(u.carrier, m.carrier)"
    " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])"
    "   AS u(id, status, error_code, at, carrier)"
    " WHERE m.id = u.id AND m.status NOT IN ('delivered','undelivered','expired','rejected','failed')"
    f" RETURNING {_FINISHED_OF_M}"
)


async def _messages_ended(conn: asyncpg.Connection, ops: list[MessageEnded]) -> list[Any]:
    rows = await conn.fetch(
        _MESSAGES_ENDED,
        [o.message_id for o in ops],
        [str(o.status) for o in ops],
        [o.error_code for o in ops],
        [o.at for o in ops],
        [o.carrier for o in ops],
    )
    finished = {f.message_id: f for f in _finished(rows)}
    return [finished.get(o.message_id) for o in ops]


def final_of_parts(statuses: Sequence[str]) -> Status:
    """One final status for a multi-part message from its parts' receipts.

    The message is delivered only if every part was; otherwise it takes the
    status of its first part that was not delivered (that part is what the
    recipient is missing).
    """
    for s in statuses:
        if s != Status.DELIVERED:
            return STATUS_OF[s]
    return Status.DELIVERED


# Match receipts to submitted parts and, in the same statement, end the
# single-part messages they complete (nearly all traffic): one round trip.
# A receipt for a part of a longer message only marks its part here.
_RECEIPTS = (
    "WITH r AS ("
    " UPDATE carrier_submits cs SET status = r.status, error_code = r.error_code, done_at = r.at"
    # i: the receipt's place in the batch, from 1 (no array of it to send).
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])"
    "   WITH ORDINALITY AS r(carrier, cmid, status, error_code, at, i)"
    " WHERE cs.carrier = r.carrier AND cs.carrier_message_id = r.cmid"
    " RETURNING cs.message_id, r.i, r.status, r.error_code, r.at, cs.carrier, cs.submitted_at),"
    " ended AS ("
    " UPDATE messages m SET status = r.status, error_code = r.error_code, done_at = r.at,"
    " carrier = r.carrier, sent_at = r.submitted_at, parts_sent = 1 FROM r"
    " WHERE m.id = r.message_id AND m.parts = 1"
    "   AND m.status NOT IN ('delivered','undelivered','expired','rejected','failed')"
    f" RETURNING {_FINISHED_OF_M})"
    " SELECT r.i, r.message_id, ended.* FROM r LEFT JOIN ended ON ended.id = r.message_id"
)


async def _receipts(conn: asyncpg.Connection, ops: list[CarrierReceipt]) -> list[Any]:
    """Match receipts to submitted parts; end messages whose parts all ended.

    Returns, per op, the Finished summary when its message ended, True when
    it matched a part of a message still waiting for other parts, or False
    when nothing matched (the receipt beat its submit_sm_resp, or belongs
    to no message of ours) so that the caller can hold it and try again.
    """
    if len({(o.carrier, o.carrier_message_id) for o in ops}) < len(ops):
        # One statement may not update a row twice: the same receipt twice
        # in a batch (a carrier resending it) goes one at a time.
        results: list[Any] = []
        for o in ops:
            results.extend(await _receipts(conn, [o]))
        return results
    rows = await conn.fetch(
        _RECEIPTS,
        [o.carrier for o in ops],
        [o.carrier_message_id for o in ops],
        [str(o.status) for o in ops],
        [o.error_code for o in ops],
        [o.at for o in ops],
    )
    results = [False] * len(ops)
    open_: dict[uuid.UUID, list[int]] = {}
    ended: dict[uuid.UUID, Finished] = {}
    for r in rows:
        if r["id"] is not None:
            finished = ended.get(r["id"])
            if finished is None:
                finished = ended[r["id"]] = _finished((r,))[0]
            results[r["i"] - 1] = finished
        else:
            results[r["i"] - 1] = True
            open_.setdefault(r["message_id"], []).append(r["i"] - 1)
    if open_:
        for f in await _end_complete_messages(conn, list(open_)):
            for i in open_[f.message_id]:
                results[i] = f
    return results


async def _end_complete_messages(
    conn: asyncpg.Connection, message_ids: list[uuid.UUID]
) -> list[Finished]:
    """End the messages of several parts whose every part has its receipt."""
    parts = await conn.fetch(
        "SELECT m.id, m.parts, array_agg(cs.status ORDER BY cs.part) AS statuses,"
        "       array_agg(cs.error_code ORDER BY cs.part) AS errors,"
        "       count(cs.done_at) AS done, max(cs.done_at) AS done_at,"
        "       (array_agg(cs.carrier ORDER BY cs.part))[1] AS carrier,"
        "       min(cs.submitted_at) AS sent_at, count(DISTINCT cs.part) AS parts_sent"
        " FROM messages m JOIN carrier_submits cs ON cs.message_id = m.id"
        " WHERE m.id = ANY($1::uuid[])"
        "   AND m.status NOT IN ('delivered','undelivered','expired','rejected','failed')"
        " GROUP BY m.id, m.parts",
        message_ids,
    )
    ending = []
    for p in parts:
        if p["done"] < p["parts"]:
            continue
        status = final_of_parts(p["statuses"])
        error = next(
            (e for s, e in zip(p["statuses"], p["errors"], strict=True) if s == status), None
        )
        ending.append(
            (p["id"], str(status), error, p["done_at"], p["carrier"], p["sent_at"], p["parts_sent"])
        )
    if not ending:
        return []
    ended = await conn.fetch(
        "UPDATE messages m SET status = u.status, error_code = u.error_code, done_at = u.at,"
        " carrier = u.carrier, sent_at = u.sent_at, parts_sent = u.parts_sent"
        " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],"
        "   $6::timestamptz[], $7::int2[])"
        "   AS u(id, status, error_code, at, carrier, sent_at, parts_sent)"
        " WHERE m.id = u.id"
        f" RETURNING {_FINISHED_OF_M}",
        *[list(col) for col in zip(*ending, strict=True)],
    )
    return _finished(ended)


async def _events(conn: asyncpg.Connection, ops: list[MessageEvent]) -> list[Any]:
    await conn.copy_records_to_table(
        "message_events",
        records=[(o.message_id, o.at, o.status, o.detail) for o in ops],
        columns=("message_id", "at", "status", "detail"),
    )
    return [None] * len(ops)


async def _update_outbox(
    conn: asyncpg.Connection, assignments: str, rows: list[tuple[int, datetime, str | None]]
) -> None:
    """One UPDATE of many outbox rows from (id, at, error) each."""
    ids, ats, errors = zip(*rows, strict=True)
    await conn.execute(
        f"UPDATE outbox o SET {assignments}"
        " FROM unnest($1::bigint[], $2::timestamptz[], $3::text[]) AS u(id, at, error)"
        " WHERE o.id = u.id",
        list(ids),
        list(ats),
        list(errors),
    )


async def _outbox_done(conn: asyncpg.Connection, ops: list[OutboxDone]) -> list[Any]:
    """A delivered notification leaves the outbox; one given up stays, done,
    with its attempts and last error for the operator.

    Deleting costs the database a mark on the row; an UPDATE of done_at
    wrote a new copy of the row and its index entries, per notification.
    """
    delivered = [o.outbox_id for o in ops if o.error is None]
    given_up = [o for o in ops if o.error is not None]
    if delivered:
        await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", delivered)
    if given_up:
        await _update_outbox(
            conn,
            "done_at = u.at, attempts = o.attempts + 1, last_error = u.error",
            [(o.outbox_id, o.at, o.error) for o in given_up],
        )
    return [None] * len(ops)


async def _outbox_retry(conn: asyncpg.Connection, ops: list[OutboxRetry]) -> list[Any]:
    await _update_outbox(
        conn,
        "next_attempt_at = u.at, attempts = o.attempts + 1, last_error = u.error",
        [(o.outbox_id, o.next_attempt_at, o.error) for o in ops],
    )
    return [None] * len(ops)


# Order matters inside one transaction: a part must be recorded as sent
# before a receipt for it in the same flush can match.
_HANDLERS: list[tuple[type, Callable[[asyncpg.Connection, list[Any]], Awaitable[list[Any]]]]] = [
    (InsertMessage, _insert_messages),
    (PartSent, _parts_sent),
    (MessageEnded, _messages_ended),
    (CarrierReceipt, _receipts),
    (MessageEvent, _events),
    (OutboxDone, _outbox_done),
    (OutboxRetry, _outbox_retry),
]


# Every writer statement touches a batch of rows by key. Planned while the
# tables were young, a plan that scans a whole table (hash join, seq scan)
# stays cached in the prepared statement and costs a full scan per flush
# once the table has grown: updates slowed with every message stored.
# Index lookups are the right plan at any size, so the writer's session
# rules out the others. And it keeps that plan from the first execution:
# PostgreSQL otherwise plans each execution anew for a while (custom plans)
# and may never stop, and planning the receipt and outbox statements took
# 0.4-0.6 ms per flush, more than running them, when little traffic makes
# many small flushes. (The connection returns to the pool with RESET ALL.)
_WRITER_SETTINGS = (
    "SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off;"
    " SET plan_cache_mode = force_generic_plan"
)


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
        plan_notifications: NotificationPlanner | None = None,
        name: str = "status",
        connections: int = 1,
        min_interval: float = 0.0,
        retry: bool = False,
    ) -> None:
        self.name = name
        self._pool = pool
        self._idle: list[asyncpg.Connection] = []
        self._connections = connections
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
        self.plan_notifications = plan_notifications
        # Called after each commit with the outbox rows it created.
        self.on_notifications: Callable[[list[Notification]], None] | None = None
        # Called once a flush has told all its waiters, whatever its outcome.
        self.after_settle: list[Callable[[], None]] = []
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
        await conn.execute(_WRITER_SETTINGS)
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
        if not self._waking and self._idle_workers:
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
            if not self._waiting:
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
            if not await self._flush(batch, previous, self._settled):
                # Back to the head of the queue, in order, and a pause that
                # doubles while the database stays away.
                self._waiting[:0] = batch
                delay, self._retry_delay = (
                    self._retry_delay,
                    min(RETRY_MAX_SECONDS, self._retry_delay * 2),
                )
                await asyncio.sleep(delay)

    async def _apply(
        self,
        conn: asyncpg.Connection,
        batch: list[tuple[Operation, Waiter]],
        by_class: dict[type, list[int]],
        results: list[Any],
    ) -> list[Notification]:
        """Every operation of the batch, in handler order, in one transaction;
        fills `results` and returns the outbox rows created."""
        ended: dict[uuid.UUID, None] = {}  # in order, once each
        for cls, handler in _HANDLERS:
            idx = by_class.get(cls)
            if not idx:
                continue
            out = await handler(conn, [batch[i][0] for i in idx])
            for i, r in zip(idx, out, strict=True):
                results[i] = r
                if isinstance(r, Finished):
                    ended[r.message_id] = None
        created: list[Notification] = []
        if ended and self.plan_notifications is not None:
            created = await self.plan_notifications(conn, list(ended))
        new = by_class.get(NewNotification, ())
        if not new:
            return created
        rows: list[tuple[Any, ...]] = []
        for i in new:
            n = batch[i][0]
            assert isinstance(n, NewNotification)
            rows.append(
                (n.notification_kind, n.account_id, n.message_id, n.target, n.payload, n.expires_at)
            )
        inserted = await _insert_outbox(conn, rows)
        for i, row in zip(new, inserted, strict=True):
            results[i] = row
        return created + inserted

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
            for hook in self.after_settle:
                try:
                    hook()
                except Exception:
                    log.exception("after-settle hook failed")
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
                await _insert_messages(conn, [op for op, _ in batch])  # type: ignore[misc]
            else:
                async with conn.transaction():
                    created = await self._apply(conn, batch, by_class, results)
        except Exception as exc:
            failure = exc  # handled below: no await in an except clause
        if failure is not None:
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
                # No answer from the server: the connection went while the
                # batch was in flight, perhaps after its commit landed.
                in_doubt=not isinstance(failure, asyncpg.PostgresError),
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
        if created and self.on_notifications is not None:
            self.on_notifications(created)

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


async def _insert_outbox(
    conn: asyncpg.Connection, rows: list[tuple[Any, ...]]
) -> list[Notification]:
    """Insert outbox rows (kind, account_id, message_id, target, payload,
    expires_at); the Notifications, built from what was planned rather than
    read back, since only the ids are new."""
    now = datetime.now(UTC)
    cols = list(zip(*rows, strict=True))
    ids = await conn.fetch(
        "INSERT INTO outbox (kind, account_id, message_id, target, payload, next_attempt_at, expires_at)"
        " SELECT kind, account_id, message_id, target, payload, $7, expires_at"
        " FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::bytea[], $6::timestamptz[])"
        "   WITH ORDINALITY AS u(kind, account_id, message_id, target, payload, expires_at, n)"
        " ORDER BY n RETURNING id",
        *[list(c) for c in cols],
        now,
    )
    # One statement takes its ids from one sequence in the order it inserts,
    # and the insert follows the ORDER BY: sorted ids pair with the rows.
    return [
        Notification(row_id, kind, account_id, message_id, target, payload, 0, now, expires_at)
        for row_id, (kind, account_id, message_id, target, payload, expires_at) in zip(
            sorted(r[0] for r in ids), rows, strict=True
        )
    ]


# ---------------------------------------------------------------- reads


async def get_message(pool: asyncpg.Pool, message_id: uuid.UUID, account_id: str) -> dict | None:
    """The message as GET /v1/messages/{id} shows it, with its events.

    Until a message ends, whether (and when, and where) it was sent is read
    off its carrier_submits rows; the final status writes it into the row.
    """
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT * FROM messages WHERE id = $1 AND account_id = $2", message_id, account_id
        )
        if row is None:
            return None
        extra = await conn.fetch(
            "SELECT at, status, detail FROM message_events WHERE message_id = $1 ORDER BY at",
            message_id,
        )
        message = dict(row)
        if message["sent_at"] is None:
            sent = await conn.fetchrow(
                "SELECT min(submitted_at) AS at, count(DISTINCT part) AS parts,"
                " (array_agg(carrier ORDER BY submitted_at))[1] AS carrier"
                " FROM carrier_submits WHERE message_id = $1",
                message_id,
            )
            if sent is not None and sent["at"] is not None:
                message["sent_at"] = sent["at"]
                message["parts_sent"] = sent["parts"]
                message["carrier"] = message["carrier"] or sent["carrier"]
                if message["status"] in (Status.ACCEPTED, Status.QUEUED):
                    message["status"] = str(Status.SENT)
    events = [{"at": message["created_at"], "status": "accepted", "detail": None}]
    events.append({"at": message["created_at"], "status": "queued", "detail": None})
    events.extend({"at": e["at"], "status": e["status"], "detail": e["detail"]} for e in extra)
    if message["sent_at"] is not None:
        events.append({"at": message["sent_at"], "status": "sent", "detail": message["carrier"]})
    if message["done_at"] is not None and message["status"] in FINAL_STATUSES:
        events.append(
            {"at": message["done_at"], "status": message["status"], "detail": message["error_code"]}
        )
    events.sort(key=lambda e: e["at"])
    return {**message, "events": events}


async def pending_messages(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Everything accepted but not yet fully handed to a carrier, oldest
    first, with `parts_sent` counted from its carrier_submits rows."""
    columns = ", ".join(f"m.{c}" for c in _MESSAGE_COLUMNS)
    async with pool.acquire() as conn:
        return await conn.fetch(
            f"SELECT {columns}, greatest(m.parts_sent, s.parts) AS parts_sent"
            " FROM messages m, LATERAL (SELECT count(DISTINCT cs.part)::int2 AS parts"
            "   FROM carrier_submits cs WHERE cs.message_id = m.id) s"
            " WHERE m.status IN ('accepted', 'queued', 'sent')"
            "   AND greatest(m.parts_sent, s.parts) < m.parts"
            " ORDER BY m.created_at, m.id"
        )


async def stored_message_ids(pool: asyncpg.Pool, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these messages the database holds (after a commit in doubt)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT id FROM messages WHERE id = ANY($1::uuid[])", list(ids))
    return {r["id"] for r in rows}


async def pending_notifications(pool: asyncpg.Pool) -> list[Notification]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, kind, account_id, message_id, target, payload, attempts,"
            " next_attempt_at, expires_at FROM outbox WHERE done_at IS NULL ORDER BY id"
        )
    return [Notification(**dict(r)) for r in rows]


async def ensure_accounts(pool: asyncpg.Pool, accounts: Sequence[tuple[str, Decimal, str]]) -> None:
    """Create the balance rows of configured accounts (credit from config once)."""
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO accounts (id, credit, currency) VALUES ($1, $2, $3)"
            " ON CONFLICT (id) DO NOTHING",
            accounts,
        )


async def balance(pool: asyncpg.Pool, account_id: str) -> tuple[Decimal, str] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT credit, currency FROM accounts WHERE id = $1", account_id)
    return None if row is None else (row["credit"], row["currency"])


async def add_event(
    pool: asyncpg.Pool, message_id: uuid.UUID, at: datetime, status: str, detail: str
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO message_events (message_id, at, status, detail) VALUES ($1, $2, $3, $4)",
            message_id,
            at,
            status,
            detail,
        )


_json = msgspec.json.Encoder(decimal_format="string")


def json_bytes(obj: Any) -> bytes:
    return _json.encode(obj)
