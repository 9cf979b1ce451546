"""The batch SQL: each kind of operation applied to a whole batch at once,
all of a flush in one transaction (`apply`), on a connection of the writer
(`group_commit.GroupCommit`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from smsrouter.router.messages import KEYWORD_INGRESS, STATUS_OF, Status
from smsrouter.router.retention import uuid_floor
from smsrouter.router.store.listeners import CommitListener
from smsrouter.router.store.notices import NOTICES_OF_M
from smsrouter.router.store.operations import (
    FENCED,
    KEY_TAKEN,
    BatchSettled,
    CarrierReceipt,
    Finished,
    HeldReceiptsTried,
    InsertMessage,
    MessageEnded,
    MessageEvent,
    NewNotification,
    Notification,
    Operation,
    OptOutChange,
    OutboxDone,
    OutboxKept,
    OutboxRetry,
    PartSent,
    RetryHeldReceipts,
    Unpaid,
)
from smsrouter.router.store.schema import FINAL_SQL, INSERTED_COLUMNS, storable_text


# A binary COPY of the batch: one round trip, its own transaction when
# alone in a flush (under load every round trip waits for a turn of the
# busy event loop, so the count of round trips sets the commit latency).
# Measured against one INSERT ... SELECT FROM unnest() of an array per
# column: half the router's CPU per row (asyncpg checks every array element
# against collections.abc; a COPY row goes straight through each column's
# codec) and cheaper for the database too.
async def insert_messages(
    conn: asyncpg.Connection, ops: list[InsertMessage], *, careful: bool = False
) -> list[Any]:
    """Store the messages of these operations. Their charge and their
    account's daily count are the insert's own (migrations 0005, 0014: a
    statement trigger debits each account and counts its day once per
    insert) and it refuses the whole insert (CREDIT_SHORT,
    DAILY_LIMIT_REACHED) when a balance cannot pay for all of it or a day
    cannot take it; then the writer comes back `careful`: the accounts' rows
    locked, the messages that fit chosen in the order they came, only those
    stored, the others' operations told `Unpaid`."""
    results: list[Any] = [None] * len(ops)
    if careful and any(op.answer is not None for op in ops):
        results = await _take_keys(conn, ops)
    storing = [op for op, r in zip(ops, results, strict=True) if r is None]
    if not storing:
        return results
    why = await _refused(conn, storing) if careful else None
    refused = why.all() if why is not None else set()
    records = []
    for op in storing:
        # The key goes with the request's first message (migration 0005);
        # taken already when `careful`.
        answer = None if careful else op.answer
        for m in op.messages:
            if m.id in refused:
                continue
            records.append(
                (
                    m.id, m.account_id, m.ingress, m.sender, m.recipient, storable_text(m.body), m.encoding,
                    m.data_coding, m.udh, m.parts, m.price, m.client_ref, m.callback_url,
                    m.registered_delivery, str(m.status), m.created_at, m.valid_until,
                    m.send_at, m.kind,
                    *(
                        (
                            answer.key, answer.request_hash, answer.status,
                            None if answer.from_message else answer.body,
                        )
                        if answer is not None
                        else _NO_KEY
                    ),
                )
            )  # fmt: skip
            answer = None
    await conn.copy_records_to_table("messages", columns=INSERTED_COLUMNS, records=records)
    if why is not None and refused:
        await _tell_unpaid(conn, ops, results, why)
    return results


_NO_KEY = (None, None, None, None)

# SQLSTATEs of the reserve trigger (migrations 0005, 0014): a balance
# could not pay for all of an insert, it would take an account's day past
# its daily_limit, or the account over its max_tps; either way it stored
# nothing.
CREDIT_SHORT = "SR001"
DAILY_LIMIT_REACHED = "SR002"
RATE_EXCEEDED = "SR003"


def store_carefully(exc: BaseException) -> bool:
    """Whether a flush that failed so is to be stored again `careful`: a
    balance could not pay for all of it, an account's day or bucket could
    not take all of it (the other instances' messages counted too), or one
    of its Idempotency-Keys was in the table already (a repeat, the same
    key twice in the flush, or a key past its 24 h not yet swept)."""
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    if exc.sqlstate in (CREDIT_SHORT, DAILY_LIMIT_REACHED, RATE_EXCEEDED):
        return True
    # The key of a day's partition of idempotency_keys (migration 0012):
    # idempotency_keys_pYYYYMMDD_pkey, or idempotency_keys_default_pkey.
    constraint = getattr(exc, "constraint_name", None) or ""
    return (
        isinstance(exc, asyncpg.UniqueViolationError)
        and constraint.startswith("idempotency_keys_")
        and constraint.endswith("_pkey")
    )


async def lock_accounts(conn: asyncpg.Connection, account_ids: Sequence[str]) -> None:
    """Lock balance rows in one order (by id) before updating several: two
    flushes that each update two accounts would otherwise be able to take
    them in opposite orders and deadlock."""
    await conn.execute(
        "SELECT 1 FROM accounts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
        list(account_ids),
    )


class Refused:
    """The messages of a careful insert that are not stored, by reason."""

    __slots__ = ("limited", "throttled", "unpaid")

    def __init__(self) -> None:
        self.unpaid: set[uuid.UUID] = set()  # the balance cannot pay
        self.limited: set[uuid.UUID] = set()  # the account's day is full
        self.throttled: set[uuid.UUID] = set()  # over the account's max_tps

    def all(self) -> set[uuid.UUID]:
        return self.unpaid | self.limited | self.throttled


# How far ahead of now an account's bucket may run over all instances
# (migration 0014): the bucket of CONTRACT §6 (1 s, or one message's
# interval under 1 a second) and a margin for a commit's lateness behind
# the admission that counted the message in its own process.
RATE_MARGIN_SECONDS = 0.25


async def _refused(conn: asyncpg.Connection, ops: list[InsertMessage]) -> Refused:
    """The messages the balances cannot pay for, those past their account's
    daily_limit and those over its max_tps, message by message in the
    order they came (a later, cheaper one may still fit). The accounts'
    rows are read under locks held to the commit, so the insert that
    follows (whose trigger debits, counts and runs the bucket of what is
    stored) never goes below -credit_limit nor past a limit, whatever
    commits meanwhile on any instance. An account without a balance row
    pays for nothing."""
    accounts = sorted({m.account_id for op in ops for m in op.messages})
    rows = await conn.fetch(
        "SELECT id, credit, credit_limit, daily_limit, max_tps,"
        "  CASE WHEN counted_day = (now() AT TIME ZONE timezone)::date"
        "       THEN day_count ELSE 0 END AS day_count,"
        "  extract(epoch FROM greatest(rate_due, now()) - now())::float8 AS rate_ahead"
        " FROM accounts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
        accounts,
    )
    room = {r["id"]: r["credit"] + r["credit_limit"] for r in rows}
    day_room = {r["id"]: r["daily_limit"] - r["day_count"] for r in rows if r["daily_limit"]}
    # Account → (seconds its bucket runs ahead of now, a message's interval,
    # how far ahead it may run).
    rates = {
        r["id"]: [
            r["rate_ahead"],
            1.0 / r["max_tps"],
            max(1.0, 1.0 / r["max_tps"]) + RATE_MARGIN_SECONDS,
        ]
        for r in rows
        if r["max_tps"] > 0
    }
    refused = Refused()
    for op in ops:
        for m in op.messages:
            # The router's replies to STOP/START/HELP are not counted
            # (migration 0014).
            counted = m.ingress != KEYWORD_INGRESS
            rate = rates.get(m.account_id) if counted else None
            if rate is not None and rate[0] + rate[1] > rate[2] + 1e-9:
                refused.throttled.add(m.id)
                continue
            left_today = day_room.get(m.account_id) if counted else None
            if left_today is not None and left_today <= 0:
                refused.limited.add(m.id)
                continue
            if m.price:
                left = room.get(m.account_id)
                if left is None or left < m.price:
                    refused.unpaid.add(m.id)
                    continue
                room[m.account_id] = left - m.price
            if left_today is not None:
                day_room[m.account_id] = left_today - 1
            if rate is not None:
                rate[0] += rate[1]
    return refused


async def _tell_unpaid(
    conn: asyncpg.Connection, ops: list[InsertMessage], results: list[Any], why: Refused
) -> None:
    """Tell each operation which of its messages were not stored, and why;
    a request's stored answer is made to say so too."""
    refused = why.all()
    for i, op in enumerate(ops):
        if results[i] is not None:
            continue
        mine = frozenset(m.id for m in op.messages if m.id in refused)
        if not mine:
            continue
        result = results[i] = Unpaid(mine, mine & why.limited, mine & why.throttled)
        answer = op.answer
        if answer is None:
            continue
        # The key's row of today, and of tomorrow when carried (migration
        # 0019), just taken.
        if len(result.throttled) == len(op.messages):
            # Nothing stored and only for the rate: the client is told to
            # come back later (429), with the same key; it stays free.
            await conn.execute(
                "DELETE FROM idempotency_keys"
                " WHERE account_id = $1 AND key = $2 AND day >= (now() AT TIME ZONE 'UTC')::date",
                answer.account_id,
                answer.key,
            )
        elif answer.unpaid is not None:
            status, body = answer.unpaid(result)
            await conn.execute(
                "UPDATE idempotency_keys SET status = $3, body = $4"
                " WHERE account_id = $1 AND key = $2 AND day >= (now() AT TIME ZONE 'UTC')::date",
                answer.account_id,
                answer.key,
                status,
                body,
            )


# A key is taken by inserting it into today's partition (migration 0019): a
# key in it (taken today, or carried from late yesterday), one taken in
# yesterday's partition in the last 24 h, or the same key earlier in the
# flush, leaves it to that one. A key older than 24 h is free again
# (CONTRACT §3 "kept 24 h"), whether or not its partition is dropped yet.
# A key taken in the last hour of the UTC day is carried into tomorrow's
# partition as the trigger carries it, where no other row of it can be.
_TAKE_KEYS = (
    "WITH taken AS ("
    " INSERT INTO idempotency_keys (account_id, key, day, request_hash, status, body)"
    " SELECT u.account_id, u.key, (now() AT TIME ZONE 'UTC')::date, u.request_hash,"
    "  u.status, u.body"
    " FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int2[], $5::bytea[])"
    "  AS u(account_id, key, request_hash, status, body)"
    " WHERE NOT EXISTS (SELECT 1 FROM idempotency_keys y"
    "  WHERE y.account_id = u.account_id AND y.key = u.key"
    "   AND y.day = (now() AT TIME ZONE 'UTC')::date - 1"
    "   AND y.created_at >= now() - interval '24 hours')"
    " ON CONFLICT (account_id, key, day) DO UPDATE"
    " SET request_hash = EXCLUDED.request_hash, status = EXCLUDED.status,"
    "     body = EXCLUDED.body, message_id = NULL, created_at = now()"
    " WHERE idempotency_keys.created_at < now() - interval '24 hours'"
    " RETURNING account_id, key, day, request_hash, status, body, created_at),"
    " carried AS ("
    " INSERT INTO idempotency_keys (account_id, key, day, request_hash, status, body, created_at)"
    " SELECT account_id, key, day + 1, request_hash, status, body, created_at FROM taken"
    " WHERE idempotency_key_carried(created_at)"
    " ON CONFLICT (account_id, key, day) DO UPDATE"
    " SET request_hash = EXCLUDED.request_hash, status = EXCLUDED.status,"
    "     body = EXCLUDED.body, message_id = NULL, created_at = EXCLUDED.created_at)"
    " SELECT account_id, key FROM taken"
)


async def _take_keys(conn: asyncpg.Connection, ops: list[InsertMessage]) -> list[Any]:
    """None for each operation whose messages may be stored, KEY_TAKEN for
    each whose key another request holds."""
    results: list[Any] = [None] * len(ops)
    first: dict[tuple[str, str], int] = {}
    for i, op in enumerate(ops):
        if op.answer is None:
            continue
        at = (op.answer.account_id, op.answer.key)
        if at in first:
            results[i] = KEY_TAKEN  # the same key twice in one flush: the first has it
        else:
            first[at] = i
    answers = [ops[i].answer for i in first.values()]
    taken = await conn.fetch(
        _TAKE_KEYS,
        [a.account_id for a in answers if a],
        [a.key for a in answers if a],
        [a.request_hash for a in answers if a],
        [a.status for a in answers if a],
        [a.body for a in answers if a],
    )
    won = {(r["account_id"], r["key"]) for r in taken}
    for at, i in first.items():
        if at not in won:
            results[i] = KEY_TAKEN
    return results


# A sent part is one row of carrier_submits, which its receipt will match;
# the message row is left alone until the message ends. An UPDATE of it per
# sent part cost more of the database than storing the message did, and
# what it recorded (sent, when, where, how many parts) is read off these
# rows instead (`get_message`, `pending_messages`). The key holds the
# message (its partition, migration 0012): the same part sent again under
# the same carrier id is one row, a carrier id reused for another message
# is another row.
_PARTS_SENT = (
    "INSERT INTO carrier_submits (carrier, carrier_message_id, message_id, part, submitted_at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::int2[], $5::timestamptz[])"
    " ON CONFLICT (carrier, carrier_message_id, part, message_id) DO UPDATE"
    " SET submitted_at = EXCLUDED.submitted_at, status = 'sent', done_at = NULL"
)
# The same, with the fencing check (CONTRACT §9) in the one statement: the
# shards whose lease is no longer the one the parts were sent under.
_PARTS_SENT_FENCED = (
    f"WITH sent AS ({_PARTS_SENT})"
    " SELECT f.shard FROM unnest($6::int2[], $7::int8[]) AS f(shard, epoch)"
    " WHERE NOT EXISTS (SELECT 1 FROM shard_leases l"
    "   WHERE l.shard = f.shard AND l.epoch = f.epoch AND l.owner IS NOT NULL)"
)


async def _parts_sent(conn: asyncpg.Connection, ops: list[PartSent]) -> list[Any]:
    # ON CONFLICT may not touch one row twice in a statement: a carrier id
    # repeated within the batch (a resend after a lost link) keeps its last.
    latest = {(o.carrier, o.carrier_message_id, o.part, o.message_id): o for o in ops}
    submits = latest.values()
    columns = (
        [o.carrier for o in submits],
        [o.carrier_message_id for o in submits],
        [o.message_id for o in submits],
        [o.part for o in submits],
        [o.at for o in submits],
    )
    leases = {o.shard: o.epoch for o in ops if o.shard >= 0}
    if not leases:
        await conn.execute(_PARTS_SENT, *columns)
        return [None] * len(ops)
    stale = {
        r[0]
        for r in await conn.fetch(_PARTS_SENT_FENCED, *columns, list(leases), list(leases.values()))
    }
    return [FENCED if o.shard in stale else None for o in ops]


# What a statement that ends messages returns of each: the Finished, with
# what is owed to the outside about it (store.notices).
_FINISHED_OF_M = f"m.id, m.status, {NOTICES_OF_M}"


def _finished(rows: Sequence[asyncpg.Record]) -> list[Finished]:
    return [
        Finished(
            r["id"],
            STATUS_OF[r["status"]],
            r["account_id"],
            r["done_at"],
            r["callback_url"],
            r["webhook"],
            r["receipt"],
        )
        for r in rows
    ]


_MESSAGES_ENDED = (
    "UPDATE messages m SET status = u.status, error_code = u.error_code, done_at = u.at,"
    " carrier = coalesce(u.carrier, m.carrier)"
    " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])"
    "   AS u(id, status, error_code, at, carrier)"
    f" WHERE m.id = u.id AND m.status NOT IN {FINAL_SQL}"
    f" RETURNING {_FINISHED_OF_M}, m.price,"
    # Whether any part reached a carrier (a submit_sm it accepted).
    "  EXISTS (SELECT 1 FROM carrier_submits cs WHERE cs.message_id = m.id) AS submitted"
)

# CONTRACT §6 "Credit": a message that ends without reaching a carrier
# (rejected, failed before any submit_sm was accepted, expired while
# queued) is refunded, in the commit that ends it; a ledger row per message.
_REFUNDED = frozenset({Status.REJECTED, Status.FAILED, Status.EXPIRED})

_REFUND = (
    "WITH r AS (SELECT * FROM unnest($1::text[], $2::uuid[], $3::numeric[])"
    "   WITH ORDINALITY AS r(account_id, message_id, amount, n)),"
    " t AS (SELECT account_id, sum(amount) AS amount FROM r GROUP BY account_id),"
    " u AS (UPDATE accounts a SET credit = a.credit + t.amount FROM t WHERE a.id = t.account_id"
    "   RETURNING a.id, a.credit)"
    " INSERT INTO ledger (account_id, at, kind, amount, balance, message_id, messages)"
    # Each row's balance is the one after it: the new credit less the
    # refunds of the account that come after it in the batch.
    " SELECT r.account_id, $4, 'refund', r.amount,"
    "   u.credit - coalesce(sum(r.amount) OVER (PARTITION BY r.account_id ORDER BY r.n DESC"
    "     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0),"
    "   r.message_id, 1"
    " FROM r JOIN u ON u.id = r.account_id ORDER BY r.n"
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
    refunds = [
        (r["account_id"], r["id"], r["price"])
        for r in rows
        if r["price"] and not r["submitted"] and STATUS_OF[r["status"]] in _REFUNDED
    ]
    if refunds:
        accounts = sorted({a for a, _, _ in refunds})
        if len(accounts) > 1:
            await lock_accounts(conn, accounts)
        await conn.execute(
            _REFUND, *[list(c) for c in zip(*refunds, strict=True)], datetime.now(UTC)
        )
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
# A receipt names its part by carrier id alone, which says nothing of the
# day whose partition holds it (migration 0012): the statement looks only
# in the days of message ids between $6 and $7 (pruned as it starts), the
# recent ones first (RECEIPTS_LOOK_BACK), then every day for those not found.
_RECEIPTS = (
    # Each receipt's parts are found by an index probe of (carrier, carrier
    # id) in each day's partition left after pruning to $6..$7: OFFSET 0
    # keeps the lateral subquery a probe per receipt. Joined flat instead,
    # the writer's generic plan (WRITER_SETTINGS), made once while the
    # tables were small, read the whole of today's partition by the range
    # once and filtered it against every receipt: 56 ms a flush of 32 after
    # a minute (bench/RESULTS.md, issue 19).
    "WITH f AS ("
    " SELECT r.i, r.status, r.error_code, r.at, p.carrier, p.carrier_message_id, p.part,"
    "  p.message_id, p.submitted_at, mp.parts"
    # i: the receipt's place in the batch, from 1 (no array of it to send).
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])"
    "   WITH ORDINALITY AS r(carrier, cmid, status, error_code, at, i)"
    " CROSS JOIN LATERAL ("
    "  SELECT cs.carrier, cs.carrier_message_id, cs.part, cs.message_id, cs.submitted_at"
    "  FROM carrier_submits cs"
    "  WHERE cs.carrier = r.carrier AND cs.carrier_message_id = r.cmid"
    "    AND cs.message_id >= $6 AND cs.message_id < $7 OFFSET 0) AS p"
    # And its message's count of parts, by its key (a probe of the same kind).
    " CROSS JOIN LATERAL ("
    "  SELECT m.parts FROM messages m WHERE m.id = p.message_id OFFSET 0) AS mp),"
    # A single-part message ends with its receipt, written on the message's
    # row alone: its part's row stays as it was sent (nothing reads a
    # part's outcome but the count of a longer message's, below).
    " ended AS ("
    " UPDATE messages m SET status = f.status, error_code = f.error_code, done_at = f.at,"
    " carrier = f.carrier, sent_at = f.submitted_at, parts_sent = 1 FROM f"
    " WHERE m.id = f.message_id AND f.parts = 1"
    f"   AND m.status NOT IN {FINAL_SQL}"
    f" RETURNING {_FINISHED_OF_M}),"
    # A part of a longer message is marked on its part's row, where the
    # message's end is counted (`_end_complete_messages`).
    " r AS ("
    " UPDATE carrier_submits cs SET status = f.status, error_code = f.error_code, done_at = f.at"
    " FROM f WHERE cs.carrier = f.carrier AND cs.carrier_message_id = f.carrier_message_id"
    "   AND cs.part = f.part AND cs.message_id = f.message_id AND f.parts > 1)"
    " SELECT f.i, f.message_id, ended.* FROM f LEFT JOIN ended ON ended.id = f.message_id"
)


async def _receipts(conn: asyncpg.Connection, ops: list[CarrierReceipt]) -> list[Any]:
    """Match receipts to submitted parts; end messages whose parts all ended.

    Returns, per op, the Finished summary when its message ended, True when
    it matched a part of a message still waiting for other parts, or False
    when nothing matched (the receipt beat its submit_sm_resp, or belongs
    to no message of ours): then it is held in the same transaction
    (migration 0015) and tried again by RetryHeldReceipts, so that the
    carrier may be answered once this commits.
    """
    if len({(o.carrier, o.carrier_message_id) for o in ops}) < len(ops):
        # One statement may not update a row twice: the same receipt twice
        # in a batch (a carrier resending it) goes one at a time.
        results: list[Any] = []
        for o in ops:
            results.extend(await _receipts(conn, [o]))
        return results
    results = await _match_all(conn, ops)
    unmatched = [o for o, r in zip(ops, results, strict=True) if r is False]
    if unmatched:
        await conn.execute(_HOLD, *_receipt_columns(unmatched))
    return results


def _receipt_columns(ops: Sequence[CarrierReceipt]) -> tuple[list[Any], ...]:
    """Receipts as the arrays $1-$5 of _RECEIPTS and _HOLD."""
    return (
        [o.carrier for o in ops],
        [o.carrier_message_id for o in ops],
        [str(o.status) for o in ops],
        [o.error_code for o in ops],
        [o.at for o in ops],
    )


# A receipt held again (the carrier sent it twice) keeps when it was first
# held: the grace period runs from then.
_HOLD = (
    "INSERT INTO held_receipts (carrier, carrier_message_id, status, error_code, at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])"
    " ON CONFLICT (carrier, carrier_message_id) DO UPDATE"
    " SET status = EXCLUDED.status, error_code = EXCLUDED.error_code, at = EXCLUDED.at"
)


async def _retry_held(conn: asyncpg.Connection, ops: list[RetryHeldReceipts]) -> list[Any]:
    """Held receipts tried again (migration 0015); those that match leave
    the table, as do those past their grace period. Rows another instance
    is trying now are skipped."""
    results: list[Any] = []
    for op in ops:
        given_up: int = await conn.fetchval(
            "WITH gone AS (DELETE FROM held_receipts"
            " WHERE held_at < now() - $1 * interval '1 second' RETURNING 1)"
            " SELECT count(*) FROM gone",
            op.grace_seconds,
        )
        rows = await conn.fetch(
            "SELECT carrier, carrier_message_id, status, error_code, at FROM held_receipts"
            " ORDER BY held_at LIMIT $1 FOR UPDATE SKIP LOCKED",
            op.limit,
        )
        held = [
            CarrierReceipt(r[0], r[1], STATUS_OF[r[2]], r[3], r[4])
            for r in rows
        ]  # fmt: skip
        matched: list[CarrierReceipt] = []
        finished: dict[uuid.UUID, Finished] = {}
        if held:
            for o, r in zip(held, await _match_all(conn, held), strict=True):
                if r is False:
                    continue
                matched.append(o)
                if isinstance(r, Finished):
                    finished[r.message_id] = r
        if matched:
            await conn.execute(
                "DELETE FROM held_receipts h USING unnest($1::text[], $2::text[]) AS u(c, m)"
                " WHERE h.carrier = u.c AND h.carrier_message_id = u.m",
                [o.carrier for o in matched],
                [o.carrier_message_id for o in matched],
            )
        results.append(HeldReceiptsTried(tuple(finished.values()), len(matched), given_up))
    return results


async def _match_all(conn: asyncpg.Connection, ops: Sequence[CarrierReceipt]) -> list[Any]:
    """The matching of `_receipts`, for receipts of distinct carrier ids."""
    results: list[Any] = [False] * len(ops)
    open_: dict[uuid.UUID, list[int]] = {}
    now = datetime.now(UTC)
    recent = (uuid_floor(now - RECEIPTS_LOOK_BACK), uuid_floor(now + RECEIPTS_LOOK_AHEAD))
    await _match_receipts(conn, ops, range(len(ops)), recent, results, open_)
    missed = [i for i, r in enumerate(results) if r is False]
    if missed:
        await _match_receipts(conn, [ops[i] for i in missed], missed, _EVERY_DAY, results, open_)
    if open_:
        for f in await _end_complete_messages(conn, list(open_)):
            for i in open_[f.message_id]:
                results[i] = f
    return results


# Receipts come seconds or minutes after their submit, which came after the
# message was made: the ids of the last day (today's partition, and
# yesterday's while the day is young) hold nearly all the parts they match;
# the look-ahead covers another instance's clock a little ahead. Each day
# looked in costs an index probe per receipt (bench/RESULTS.md, issue 19).
RECEIPTS_LOOK_BACK = timedelta(days=1)
RECEIPTS_LOOK_AHEAD = timedelta(hours=1)
_EVERY_DAY = (uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1))


async def _match_receipts(
    conn: asyncpg.Connection,
    ops: Sequence[CarrierReceipt],
    places: Sequence[int],
    ids: tuple[uuid.UUID, uuid.UUID],
    results: list[Any],
    open_: dict[uuid.UUID, list[int]],
) -> None:
    """The receipts `ops` (at `places` of the batch) matched to parts of
    messages whose ids are within `ids`: `results` and `open_` filled."""
    rows = await conn.fetch(_RECEIPTS, *_receipt_columns(ops), ids[0], ids[1])
    ended: dict[uuid.UUID, Finished] = {}
    for r in rows:
        place = places[r["i"] - 1]
        if r["id"] is not None:
            finished = ended.get(r["id"])
            if finished is None:
                finished = ended[r["id"]] = _finished((r,))[0]
            results[place] = finished
        else:
            # A carrier id reused for another message matches a row of each:
            # the message it ended is the answer, whatever the other row says.
            if results[place] is False:
                results[place] = True
            open_.setdefault(r["message_id"], []).append(place)


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
        # Joined to the ids, each message and its parts are looked up in
        # their day's partitions (migration 0012).
        " FROM unnest($1::uuid[]) AS e(id) JOIN messages m ON m.id = e.id"
        " JOIN carrier_submits cs ON cs.message_id = m.id"
        f" WHERE m.status NOT IN {FINAL_SQL}"
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
        # Joined, not `id = ANY($1)`: each id then finds its day's partition
        # (migration 0012) instead of being looked for in every one.
        await conn.execute(
            "DELETE FROM outbox o USING unnest($1::bigint[]) AS u(id) WHERE o.id = u.id",
            delivered,
        )
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


async def _outbox_kept(conn: asyncpg.Connection, ops: list[OutboxKept]) -> list[Any]:
    """Notifications of a batch that their first try did not deliver, as
    outbox rows of their own under the ids they were sent with. A row
    already there (its batch turned into rows meanwhile, after a database
    outage) stays as it is."""
    ns = [o.notification for o in ops]
    await conn.execute(
        "INSERT INTO outbox (id, kind, account_id, message_id, target, payload, attempts,"
        "   next_attempt_at, expires_at, last_error, done_at)"
        " SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::uuid[], $5::text[],"
        "   $6::bytea[], $7::int4[], $8::timestamptz[], $9::timestamptz[], $10::text[],"
        "   $11::timestamptz[])"
        " ON CONFLICT (id) DO NOTHING",
        [n.id for n in ns],
        [n.kind for n in ns],
        [n.account_id for n in ns],
        [n.message_id for n in ns],
        [n.target for n in ns],
        [n.payload for n in ns],
        [n.attempts for n in ns],
        [n.next_attempt_at for n in ns],
        [n.expires_at for n in ns],
        [o.error for o in ops],
        [o.done_at for o in ops],
    )
    return [None] * len(ops)


async def _batches_settled(conn: asyncpg.Connection, ops: list[BatchSettled]) -> list[Any]:
    await conn.execute(
        "DELETE FROM notification_batches WHERE id = ANY($1::int8[])", [o.batch for o in ops]
    )
    return [None] * len(ops)


# Order matters inside one transaction: a part must be recorded as sent
# before a receipt for it in the same flush can match.
async def _opt_out_changes(conn: asyncpg.Connection, ops: list[OptOutChange]) -> list[Any]:
    """Each change in order, in the flush's transaction, with a NOTIFY per
    change that other processes apply to their lists (CONTRACT §6: an MO's
    STOP is committed before its deliver_sm_resp)."""
    results: list[Any] = []
    for op in ops:
        if op.opted_out:
            # A subscriber's STOP over an entry the account or an import made
            # takes it over: only the subscriber's START may lift it now.
            # True only for a new row (xmax is 0 for an insert, not for the
            # take-over, which leaves the list as it was).
            changed = await conn.fetchval(
                "INSERT INTO opt_outs (account_id, recipient, source) VALUES ($1, $2, $3)"
                " ON CONFLICT (account_id, recipient) DO UPDATE SET source = EXCLUDED.source"
                "  WHERE EXCLUDED.source = 'subscriber' AND opt_outs.source <> 'subscriber'"
                " RETURNING xmax = 0",
                op.account_id, op.recipient, op.source,
            )  # fmt: skip
        else:
            # A subscriber's START lifts any entry; the account and the
            # operator lift only their own (never a subscriber's STOP).
            changed = await conn.fetchval(
                "DELETE FROM opt_outs WHERE account_id = $1 AND recipient = $2"
                " AND ($3 = 'subscriber' OR source = $3) RETURNING true",
                op.account_id, op.recipient, op.source,
            )  # fmt: skip
        if changed:
            await conn.execute(
                "SELECT pg_notify($1, $2)",
                OPT_OUTS_CHANNEL,
                opt_out_notice(op.account_id, op.recipient, op.opted_out),
            )
        results.append(bool(changed))
    return results


# NOTIFY channel of opt-out changes; the payload is "+" or "-", then the
# account id and the number, tab-separated ("*" for a whole account's list
# after a bulk change).
OPT_OUTS_CHANNEL = "smsrouter_opt_outs"


def opt_out_notice(account_id: str, recipient: str, opted_out: bool) -> str:
    return f"{'+' if opted_out else '-'}\t{account_id}\t{recipient}"


_HANDLERS: list[tuple[type, Callable[[asyncpg.Connection, list[Any]], Awaitable[list[Any]]]]] = [
    (InsertMessage, insert_messages),
    (PartSent, _parts_sent),
    (MessageEnded, _messages_ended),
    (CarrierReceipt, _receipts),
    (RetryHeldReceipts, _retry_held),
    (MessageEvent, _events),
    # A kept row is written before its later outcome (both may be in one
    # flush: a retry that came due at once).
    (OutboxKept, _outbox_kept),
    (OutboxDone, _outbox_done),
    (OutboxRetry, _outbox_retry),
    (BatchSettled, _batches_settled),
    (OptOutChange, _opt_out_changes),
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
WRITER_SETTINGS = (
    "SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off;"
    " SET plan_cache_mode = force_generic_plan"
)


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


async def apply(
    conn: asyncpg.Connection,
    batch: list[tuple[Operation, Any]],
    by_class: dict[type, list[int]],
    results: list[Any],
    listener: CommitListener,
    created: list[Notification],
    *,
    careful: bool = False,
) -> None:
    """Every operation of the batch (with whoever waits for it), in handler
    order, inside the caller's transaction; `by_class` holds the places of
    each class's operations in the batch. Fills `results`, and `created`
    with the notifications the flush created: those `listener` plans for
    the messages that ended, then the NewNotification ones (the caller has
    them even when the commit fails after they were planned)."""
    ended: dict[uuid.UUID, Finished] = {}  # in order, once each
    for cls, handler in _HANDLERS:
        idx = by_class.get(cls)
        if not idx:
            continue
        ops = [batch[i][0] for i in idx]
        out = await (
            insert_messages(conn, ops, careful=True)  # type: ignore[arg-type]
            if careful and cls is InsertMessage
            else handler(conn, ops)
        )
        for i, r in zip(idx, out, strict=True):
            results[i] = r
            if isinstance(r, Finished):
                ended.setdefault(r.message_id, r)
            elif isinstance(r, HeldReceiptsTried):
                for f in r.finished:
                    ended.setdefault(f.message_id, f)
    if ended:
        created.extend(await listener.plan_notifications(conn, list(ended.values())))
    new = by_class.get(NewNotification, ())
    if not new:
        return
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
    created.extend(inserted)
