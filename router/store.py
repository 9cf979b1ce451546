"""PostgreSQL, the system of record: group-committed writes and the reads.

Nothing is acknowledged before it is committed, and committing one message
at a time caps a router at a few thousand messages per second (one fsync
each). So every write goes through one `GroupCommit` writer: callers hand
it an operation and await its future; the writer takes everything that is
waiting the moment its previous commit lands, runs it in ONE transaction
(COPY / unnest batches) and resolves all the futures together. Measured on
the reference machine: ~39k rows/s at p99 4.4 ms, where a fixed flush timer
gave a third of that (FACTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

import asyncpg
import msgspec
import structlog

from router import metrics
from router.messages import FINAL_STATUSES, Message, Status

log = structlog.get_logger("store")


# ---------------------------------------------------------------- operations


@dataclass(slots=True)
class InsertMessage:
    """New messages; one operation is one transaction, so a batch request's
    recipients are stored all together or not at all."""

    kind: ClassVar[str] = "insert"
    messages: Sequence[Message]


@dataclass(slots=True)
class PartSent:
    """A carrier accepted one part (submit_sm_resp with ESME_ROK)."""

    kind: ClassVar[str] = "sent"
    message_id: uuid.UUID
    part: int
    carrier: str
    carrier_message_id: str
    at: datetime


@dataclass(slots=True)
class MessageEnded:
    """A message ends without a receipt: rejected, failed or expired here."""

    kind: ClassVar[str] = "ended"
    message_id: uuid.UUID
    status: Status
    error_code: str
    at: datetime
    carrier: str | None = None


@dataclass(slots=True)
class CarrierReceipt:
    """A carrier's delivery receipt for one submitted part."""

    kind: ClassVar[str] = "receipt"
    carrier: str
    carrier_message_id: str
    status: Status
    error_code: str | None
    at: datetime


@dataclass(slots=True)
class MessageEvent:
    """A step of a message's history beyond the standard ones (a failover)."""

    kind: ClassVar[str] = "event"
    message_id: uuid.UUID
    at: datetime
    status: str
    detail: str


@dataclass(slots=True)
class NewNotification:
    """An outbox row that no message status produced (an inbound MO)."""

    kind: ClassVar[str] = "notify"
    notification_kind: str
    account_id: str
    target: str | None
    payload: bytes
    expires_at: datetime
    message_id: uuid.UUID | None = None


@dataclass(slots=True)
class OutboxDone:
    """A notification is finished: delivered, or given up with `error`."""

    kind: ClassVar[str] = "outbox_done"
    outbox_id: int
    at: datetime
    error: str | None = None


@dataclass(slots=True)
class OutboxRetry:
    kind: ClassVar[str] = "outbox_retry"
    outbox_id: int
    next_attempt_at: datetime
    error: str


Operation = (
    InsertMessage
    | PartSent
    | MessageEnded
    | CarrierReceipt
    | MessageEvent
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


@dataclass(slots=True)
class Finished:
    """What a final status produced: the message's summary for notifications."""

    message_id: uuid.UUID
    account_id: str
    ingress: str
    sender: str
    recipient: str
    status: Status
    error_code: str | None
    carrier: str | None
    parts: int
    client_ref: str | None
    callback_url: str | None
    registered_delivery: int
    body: str
    created_at: datetime
    done_at: datetime


# Given the finished messages of one flush, return the outbox rows to insert
# in the same transaction: (kind, account_id, message_id, target, payload,
# expires_at). Set by the notification side at start-up.
NotificationPlanner = Callable[[Sequence[Finished]], list[tuple[Any, ...]]]


# ---------------------------------------------------------------- batch SQL

# Column and array type of each stored Message field, in one place.
_MESSAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "uuid"),
    ("account_id", "text"),
    ("ingress", "text"),
    ("sender", "text"),
    ("recipient", "text"),
    ("body", "text"),
    ("encoding", "text"),
    ("data_coding", "int2"),
    ("udh", "bytea"),
    ("parts", "int2"),
    ("price", "numeric"),
    ("client_ref", "text"),
    ("callback_url", "text"),
    ("registered_delivery", "int2"),
    ("status", "text"),
    ("created_at", "timestamptz"),
    ("valid_until", "timestamptz"),
    ("send_at", "timestamptz"),
)
# One statement for any number of rows: a flush of inserts is a single round
# trip (and its own transaction), where COPY inside BEGIN/COMMIT takes four.
# Under load every round trip waits for a turn of the busy event loop, so
# the count of round trips, not the database, sets the commit latency.
_INSERT_MESSAGES = (
    f"INSERT INTO messages ({', '.join(c for c, _ in _MESSAGE_COLUMNS)})"
    " SELECT * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(_MESSAGE_COLUMNS, 1))
    + ")"
)


async def _insert_messages(conn: asyncpg.Connection, ops: list[InsertMessage]) -> list[Any]:
    messages = [m for op in ops for m in op.messages]
    await conn.execute(
        _INSERT_MESSAGES,
        [m.id for m in messages],
        [m.account_id for m in messages],
        [m.ingress for m in messages],
        [m.sender for m in messages],
        [m.recipient for m in messages],
        [m.body for m in messages],
        [m.encoding for m in messages],
        [m.data_coding for m in messages],
        [m.udh for m in messages],
        [m.parts for m in messages],
        [m.price for m in messages],
        [m.client_ref for m in messages],
        [m.callback_url for m in messages],
        [m.registered_delivery for m in messages],
        [str(m.status) for m in messages],
        [m.created_at for m in messages],
        [m.valid_until for m in messages],
        [m.send_at for m in messages],
    )
    return [None] * len(ops)


async def _parts_sent(conn: asyncpg.Connection, ops: list[PartSent]) -> list[Any]:
    await conn.executemany(
        "INSERT INTO carrier_submits (carrier, carrier_message_id, message_id, part, submitted_at)"
        " VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (carrier, carrier_message_id, part) DO UPDATE"
        " SET message_id = EXCLUDED.message_id,"
        "     submitted_at = EXCLUDED.submitted_at, status = 'sent', done_at = NULL",
        [(o.carrier, o.carrier_message_id, o.message_id, o.part, o.at) for o in ops],
    )
    # Several parts of one message may be in one batch: count them per message.
    counts: dict[uuid.UUID, tuple[int, str, datetime]] = {}
    for o in ops:
        n, _, first = counts.get(o.message_id, (0, o.carrier, o.at))
        counts[o.message_id] = (n + 1, o.carrier, min(first, o.at))
    await conn.execute(
        "UPDATE messages m SET parts_sent = m.parts_sent + u.n, carrier = u.carrier,"
        " sent_at = coalesce(m.sent_at, u.at),"
        " status = CASE WHEN m.status IN ('accepted', 'queued') THEN 'sent' ELSE m.status END"
        " FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[]) AS u(id, n, carrier, at)"
        " WHERE m.id = u.id",
        list(counts),
        [c[0] for c in counts.values()],
        [c[1] for c in counts.values()],
        [c[2] for c in counts.values()],
    )
    return [None] * len(ops)


_FINISHED_COLUMNS = (
    "id, account_id, ingress, sender, recipient, status, error_code, carrier, parts,"
    " client_ref, callback_url, registered_delivery, body, created_at, done_at"
)


def _finished(rows: Sequence[asyncpg.Record]) -> list[Finished]:
    return [
        Finished(
            message_id=r["id"],
            account_id=r["account_id"],
            ingress=r["ingress"],
            sender=r["sender"],
            recipient=r["recipient"],
            status=Status(r["status"]),
            error_code=r["error_code"],
            carrier=r["carrier"],
            parts=r["parts"],
            client_ref=r["client_ref"],
            callback_url=r["callback_url"],
            registered_delivery=r["registered_delivery"],
            body=r["body"],
            created_at=r["created_at"],
            done_at=r["done_at"],
        )
        for r in rows
    ]


async def _messages_ended(conn: asyncpg.Connection, ops: list[MessageEnded]) -> list[Any]:
    rows = await conn.fetch(
        "UPDATE messages m SET status = u.status, error_code = u.error_code, done_at = u.at,"
        " carrier = coalesce(u.carrier, m.carrier)"
        " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])"
        "   AS u(id, status, error_code, at, carrier)"
        " WHERE m.id = u.id AND m.status NOT IN ('delivered','undelivered','expired','rejected','failed')"
        f" RETURNING {', '.join('m.' + c.strip() for c in _FINISHED_COLUMNS.split(','))}",
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
            return Status(s)
    return Status.DELIVERED


async def _receipts(conn: asyncpg.Connection, ops: list[CarrierReceipt]) -> list[Any]:
    """Match receipts to submitted parts; end messages whose parts all ended.

    Returns, per op, the Finished summary when its message ended, True when
    it matched a part of a message still waiting for other parts, or False
    when nothing matched (the receipt beat its submit_sm_resp, or belongs
    to no message of ours) so that the caller can hold it and try again.
    """
    rows = await conn.fetch(
        "UPDATE carrier_submits cs SET status = r.status, error_code = r.error_code, done_at = r.at"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::int[])"
        "   AS r(carrier, cmid, status, error_code, at, i)"
        " WHERE cs.carrier = r.carrier AND cs.carrier_message_id = r.cmid"
        " RETURNING cs.message_id, r.i",
        [o.carrier for o in ops],
        [o.carrier_message_id for o in ops],
        [str(o.status) for o in ops],
        [o.error_code for o in ops],
        [o.at for o in ops],
        list(range(len(ops))),
    )
    results: list[Any] = [False] * len(ops)
    by_message: dict[uuid.UUID, list[int]] = {}
    for r in rows:
        results[r["i"]] = True
        by_message.setdefault(r["message_id"], []).append(r["i"])
    if not by_message:
        return results
    # A message ends when every one of its parts has a receipt.
    parts = await conn.fetch(
        "SELECT m.id, m.parts, array_agg(cs.status ORDER BY cs.part) AS statuses,"
        "       array_agg(cs.error_code ORDER BY cs.part) AS errors,"
        "       count(cs.done_at) AS done, max(cs.done_at) AS done_at,"
        "       (array_agg(cs.carrier ORDER BY cs.part))[1] AS carrier"
        " FROM messages m JOIN carrier_submits cs ON cs.message_id = m.id"
        " WHERE m.id = ANY($1::uuid[])"
        "   AND m.status NOT IN ('delivered','undelivered','expired','rejected','failed')"
        " GROUP BY m.id, m.parts",
        list(by_message),
    )
    ending = []
    for p in parts:
        if p["done"] < p["parts"]:
            continue
        status = final_of_parts(p["statuses"])
        error = next(
            (e for s, e in zip(p["statuses"], p["errors"], strict=True) if s == status), None
        )
        ending.append((p["id"], str(status), error, p["done_at"], p["carrier"]))
    if not ending:
        return results
    ended = await conn.fetch(
        "UPDATE messages m SET status = u.status, error_code = u.error_code, done_at = u.at,"
        " carrier = u.carrier"
        " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])"
        "   AS u(id, status, error_code, at, carrier)"
        " WHERE m.id = u.id"
        f" RETURNING {', '.join('m.' + c.strip() for c in _FINISHED_COLUMNS.split(','))}",
        *[list(col) for col in zip(*ending, strict=True)],
    )
    for f in _finished(ended):
        for i in by_message[f.message_id]:
            results[i] = f
    return results


async def _events(conn: asyncpg.Connection, ops: list[MessageEvent]) -> list[Any]:
    await conn.copy_records_to_table(
        "message_events",
        records=[(o.message_id, o.at, o.status, o.detail) for o in ops],
        columns=("message_id", "at", "status", "detail"),
    )
    return [None] * len(ops)


async def _outbox_done(conn: asyncpg.Connection, ops: list[OutboxDone]) -> list[Any]:
    await conn.execute(
        "UPDATE outbox o SET done_at = u.at, attempts = o.attempts + 1,"
        " last_error = coalesce(u.error, o.last_error)"
        " FROM unnest($1::bigint[], $2::timestamptz[], $3::text[]) AS u(id, at, error)"
        " WHERE o.id = u.id",
        [o.outbox_id for o in ops],
        [o.at for o in ops],
        [o.error for o in ops],
    )
    return [None] * len(ops)


async def _outbox_retry(conn: asyncpg.Connection, ops: list[OutboxRetry]) -> list[Any]:
    await conn.execute(
        "UPDATE outbox o SET next_attempt_at = u.at, attempts = o.attempts + 1, last_error = u.err"
        " FROM unnest($1::bigint[], $2::timestamptz[], $3::text[]) AS u(id, at, err)"
        " WHERE o.id = u.id",
        [o.outbox_id for o in ops],
        [o.next_attempt_at for o in ops],
        [o.error for o in ops],
    )
    return [None] * len(ops)


# Order matters inside one transaction: a part must be recorded as sent
# before a receipt for it in the same flush can match.
_HANDLERS: list[tuple[str, Callable[[asyncpg.Connection, list[Any]], Awaitable[list[Any]]]]] = [
    ("insert", _insert_messages),
    ("sent", _parts_sent),
    ("ended", _messages_ended),
    ("receipt", _receipts),
    ("event", _events),
    ("outbox_done", _outbox_done),
    ("outbox_retry", _outbox_retry),
]


class GroupCommit:
    """One writer task: batches every waiting operation into one transaction."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = 2000,
        plan_notifications: NotificationPlanner | None = None,
        name: str = "status",
    ) -> None:
        self.name = name
        self._pool = pool
        self._conn: asyncpg.Connection | None = None
        self._max_batch = max_batch
        self._waiting: list[tuple[Operation, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.plan_notifications = plan_notifications
        # Called after each commit with the outbox rows it created.
        self.on_notifications: Callable[[list[Notification]], None] | None = None

    def start(self) -> None:
        # Kept: asyncio.get_running_loop() costs a getpid() call on 3.11,
        # and submit() runs several times per message.
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="group-commit")

    async def _connection(self) -> asyncpg.Connection:
        """The writer's own connection, held between flushes: handing it back
        to the pool after every flush costs a reset round trip each time."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._pool.acquire()
        return self._conn

    async def _drop_connection(self) -> None:
        """After a failed flush the connection may be broken: take a fresh one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self._pool.release(conn, timeout=5)

    async def stop(self) -> None:
        """Flush what is waiting, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self._drop_connection()

    def submit(self, op: Operation) -> asyncio.Future[Any]:
        """Queue one operation; the future resolves once it is committed."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._waiting.append((op, fut))
        self._wake.set()
        return fut

    async def run(self, op: Operation) -> Any:
        return await self.submit(op)

    async def _run(self) -> None:
        while True:
            if not self._waiting:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            await self._flush(batch)

    async def _apply(
        self,
        conn: asyncpg.Connection,
        batch: list[tuple[Operation, asyncio.Future[Any]]],
        by_kind: dict[str, list[int]],
        results: list[Any],
    ) -> list[Notification]:
        """Every operation of the batch, in handler order, in one transaction;
        fills `results` and returns the outbox rows created."""
        finished: list[Finished] = []
        for kind, handler in _HANDLERS:
            idx = by_kind.get(kind)
            if not idx:
                continue
            out = await handler(conn, [batch[i][0] for i in idx])
            for i, r in zip(idx, out, strict=True):
                results[i] = r
                if isinstance(r, Finished):
                    finished.append(r)
        rows: list[tuple[Any, ...]] = []
        if finished and self.plan_notifications is not None:
            unique = list({f.message_id: f for f in finished}.values())
            rows = self.plan_notifications(unique)
        new = by_kind.get("notify", ())
        for i in new:
            n = batch[i][0]
            assert isinstance(n, NewNotification)
            rows.append(
                (n.notification_kind, n.account_id, n.message_id, n.target, n.payload, n.expires_at)
            )
        if not rows:
            return []
        created = await _insert_outbox(conn, rows)
        # New notifications come last in `created`: each op gets its row.
        for i, row in zip(new, created[len(created) - len(new) :], strict=True):
            results[i] = row
        return created

    async def _flush(self, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        by_kind: dict[str, list[int]] = {}
        for i, (op, _) in enumerate(batch):
            by_kind.setdefault(op.kind, []).append(i)
        results: list[Any] = [None] * len(batch)
        created: list[Notification] = []
        started = time.perf_counter()
        try:
            conn = await self._connection()
            if by_kind.keys() == {"insert"}:
                # One statement is its own transaction: no BEGIN/COMMIT trips.
                await _insert_messages(conn, [op for op, _ in batch])  # type: ignore[misc]
            else:
                async with conn.transaction():
                    created = await self._apply(conn, batch, by_kind, results)
        except Exception as exc:
            log.error("group commit failed", error=repr(exc), operations=len(batch))
            await self._drop_connection()
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(StoreError(str(exc)))
            return
        metrics.COMMIT_LATENCY.labels(self.name).observe(time.perf_counter() - started)
        metrics.COMMIT_BATCH.labels(self.name).observe(len(batch))
        for (_, fut), r in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(r)
        if created and self.on_notifications is not None:
            self.on_notifications(created)


class StoreError(Exception):
    """The database refused or lost a write; the operation did not happen."""


async def _insert_outbox(
    conn: asyncpg.Connection, rows: list[tuple[Any, ...]]
) -> list[Notification]:
    cols = list(zip(*rows, strict=True))
    out = await conn.fetch(
        "INSERT INTO outbox (kind, account_id, message_id, target, payload, next_attempt_at, expires_at)"
        " SELECT kind, account_id, message_id, target, payload, now(), expires_at"
        " FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::bytea[], $6::timestamptz[])"
        "   AS u(kind, account_id, message_id, target, payload, expires_at)"
        " RETURNING id, kind, account_id, message_id, target, payload, attempts,"
        "   next_attempt_at, expires_at",
        *[list(c) for c in cols],
    )
    # ids follow the order of the input rows (one sequence, one statement).
    return sorted((Notification(**dict(r)) for r in out), key=lambda n: n.id)


# ---------------------------------------------------------------- reads


async def get_message(pool: asyncpg.Pool, message_id: uuid.UUID, account_id: str) -> dict | None:
    """The message as GET /v1/messages/{id} shows it, with its events."""
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
    events = [{"at": row["created_at"], "status": "accepted", "detail": None}]
    events.append({"at": row["created_at"], "status": "queued", "detail": None})
    events.extend({"at": e["at"], "status": e["status"], "detail": e["detail"]} for e in extra)
    if row["sent_at"] is not None:
        events.append({"at": row["sent_at"], "status": "sent", "detail": row["carrier"]})
    if row["done_at"] is not None and row["status"] in FINAL_STATUSES:
        events.append({"at": row["done_at"], "status": row["status"], "detail": row["error_code"]})
    events.sort(key=lambda e: e["at"])
    return {**dict(row), "events": events}


async def pending_messages(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Everything accepted but not yet fully handed to a carrier, oldest first."""
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT * FROM messages WHERE status IN ('accepted', 'queued', 'sent')"
            " AND parts_sent < parts ORDER BY created_at, id"
        )


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
