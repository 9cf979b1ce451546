"""The reads: a message as the APIs show it, what a restart resumes, what
the database holds after a commit in doubt. On connections of the pool,
outside the writer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from smsrouter.router.messages import FINAL_STATUSES, Status
from smsrouter.router.store.operations import Notification
from smsrouter.router.store.schema import MESSAGE_COLUMNS, OPEN_SQL


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


async def pending_messages(
    pool: asyncpg.Pool, ids: Sequence[uuid.UUID] | None = None
) -> list[asyncpg.Record]:
    """Everything accepted but not yet fully handed to a carrier (or only
    these messages of it), oldest first, with `parts_sent` counted from its
    carrier_submits rows."""
    columns = ", ".join(f"m.{c}" for c in MESSAGE_COLUMNS)
    only = "" if ids is None else " AND m.id = ANY($1::uuid[])"
    async with pool.acquire() as conn:
        return await conn.fetch(
            f"SELECT {columns}, greatest(m.parts_sent, s.parts) AS parts_sent"
            " FROM messages m, LATERAL (SELECT count(DISTINCT cs.part)::int2 AS parts"
            "   FROM carrier_submits cs WHERE cs.message_id = m.id) s"
            f" WHERE m.status IN {OPEN_SQL}{only}"
            "   AND greatest(m.parts_sent, s.parts) < m.parts"
            " ORDER BY m.created_at, m.id",
            *(() if ids is None else (list(ids),)),
        )


async def stored_message_ids(pool: asyncpg.Pool, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these messages the database holds (after a commit in doubt)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT id FROM messages WHERE id = ANY($1::uuid[])", list(ids))
    return {r["id"] for r in rows}


async def pending_notifications(pool: asyncpg.Pool, owner: str | None = None) -> list[Notification]:
    """The outbox rows not done that this instance holds (CONTRACT §9: the
    rows no live instance holds are claimed by the shard keeper); owner
    None, those no one holds."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, kind, account_id, message_id, target, payload, attempts,"
            " next_attempt_at, expires_at FROM outbox"
            " WHERE done_at IS NULL AND owner IS NOT DISTINCT FROM $1"
            " ORDER BY id",
            owner,
        )
    return [Notification(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """The one message a keyed request stored, whose 202 was not stored
    with it (`IdempotentAnswer.from_message`): the answer is made again
    from these fields, as they were when it was first given."""

    id: uuid.UUID
    to: str
    parts: int
    encoding: str
    price: Decimal


async def idempotent_answer(
    pool: asyncpg.Pool, account_id: str, key: str
) -> tuple[bytes, int, bytes | AcceptedMessage] | None:
    """(request hash, status, body) of what a POST with this Idempotency-Key
    answered in the last 24 h (CONTRACT §3), or None. The body is the
    message it stored when its 202 is to be made again from it."""
    # The answer is on the key's row, or on the message that took the key
    # (migration 0005), or is that message's 202 (from_message). A key
    # taken in the last 24 h is in today's partition or yesterday's
    # (migration 0019); of two live rows, one was carried from the other
    # and they say the same.
    row = await pool.fetchrow(
        "SELECT k.request_hash, k.status, coalesce(k.body, m.answer_body) AS body,"
        " m.id, m.recipient, m.parts, m.encoding, m.price"
        " FROM idempotency_keys k LEFT JOIN messages m ON m.id = k.message_id"
        " WHERE k.account_id = $1 AND k.key = $2"
        "   AND k.day >= (now() AT TIME ZONE 'UTC')::date - 1"
        "   AND k.day <= (now() AT TIME ZONE 'UTC')::date"
        "   AND k.created_at >= now() - interval '24 hours'"
        " ORDER BY k.day DESC LIMIT 1",
        account_id,
        key,
    )
    if row is None:
        return None
    body = row["body"]
    if body is None:
        if row["id"] is None:
            # The message that took the key is gone before its key (its
            # day dropped by retention): nothing to answer it again with.
            return None
        body = AcceptedMessage(
            row["id"], row["recipient"], row["parts"], row["encoding"], row["price"]
        )
    return (row["request_hash"], row["status"], body)


# A message of a list with what get_message works out for one: until it
# ends, whether (and when, where) it was sent, from its carrier_submits.
_LIST = (
    "SELECT * FROM ("
    " SELECT m.*, s.at AS first_sent_at, s.parts AS parts_submitted, s.carrier AS first_carrier,"
    "  CASE WHEN m.status IN ('accepted', 'queued') AND s.at IS NOT NULL THEN 'sent'"
    "   ELSE m.status END AS shown_status"
    " FROM messages m LEFT JOIN LATERAL ("
    "  SELECT min(submitted_at) AS at, count(DISTINCT part) AS parts,"
    "   (array_agg(carrier ORDER BY submitted_at))[1] AS carrier"
    "  FROM carrier_submits c WHERE c.message_id = m.id AND m.sent_at IS NULL) s ON true"
    " WHERE m.account_id = $1"
    "  AND ($2::timestamptz IS NULL OR m.created_at >= $2)"
    "  AND ($3::text IS NULL OR m.client_ref = $3)"
    "  AND ($4::timestamptz IS NULL OR (m.created_at, m.id) < ($4, $5::uuid))"
    " ORDER BY m.created_at DESC, m.id DESC) page"
    " WHERE $6::text IS NULL OR shown_status = $6"
    " LIMIT $7"
)


async def list_messages(
    pool: asyncpg.Pool,
    account_id: str,
    *,
    limit: int,
    status: str | None = None,
    client_ref: str | None = None,
    since: datetime | None = None,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[dict]:
    """An account's messages, newest first, that were created at or after
    `since` and come after `before` (the last one of the previous page), at
    most `limit`; each as get_message shows it, without its events."""
    at, last_id = before if before is not None else (None, None)
    rows = await pool.fetch(_LIST, account_id, since, client_ref, at, last_id, status, limit)
    listed = []
    for row in rows:
        message = dict(row)
        if message["sent_at"] is None and message["first_sent_at"] is not None:
            message["sent_at"] = message["first_sent_at"]
            message["parts_sent"] = message["parts_submitted"]
            message["carrier"] = message["carrier"] or message["first_carrier"]
        message["status"] = message["shown_status"]
        listed.append(message)
    return listed


async def stored_since(pool: asyncpg.Pool, account_id: str, since: datetime) -> int:
    """Messages the account had stored since `since` (its day's count; the
    router's replies to STOP/START/HELP are not counted, migration 0014)."""
    count: int = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1 AND created_at >= $2"
        " AND ingress <> 'keyword'",
        account_id,
        since,
    )
    return count
