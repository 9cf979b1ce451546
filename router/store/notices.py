"""What leaves the router about a message that ended, as SQL over its final
row: the DLR webhook's body, an ESME's receipt, and whether each is owed.

The statements that end messages return these with the rows they update
(`writes._FINISHED_OF_M`), so that no message is read again to plan its
notifications; the same expressions turn a flush's notification batch
back into outbox rows when its notifications were not all settled
(migration 0018: after a crash, a lost commit answer, a stop or an
instance reaped).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

WEBHOOK = "webhook"
SMPP_RECEIPT = "smpp_receipt"


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


# A DLR webhook is owed when the message has a callback URL.
WANTS_WEBHOOK = "m.callback_url <> ''"
# A receipt is owed to an ESME that asked for one: registered delivery
# (SMPP 3.4 §5.2.17) bits 0-1, 1 = a receipt whatever the outcome, 2 = a
# receipt only when the message was not delivered.
WANTS_RECEIPT = (
    "m.ingress = 'smpp' AND (m.registered_delivery & 3 = 1"
    " OR (m.registered_delivery & 3 = 2 AND m.status <> 'delivered'))"
)

# What a statement that ends messages returns of each, after its id and
# status: the account, when it ended, and each notification's payload (as
# UTF-8 bytes) where one is owed, else NULL: built by the database from the
# row it just updated, so the router neither reads the message again nor
# encodes payloads.
NOTICES_OF_M = (
    "m.account_id, m.done_at, m.callback_url,"
    f" CASE WHEN {WANTS_WEBHOOK} THEN convert_to({status_webhook_body()}, 'UTF8') END"
    "  AS webhook,"
    f" CASE WHEN {WANTS_RECEIPT} THEN convert_to({smpp_receipt_body()}, 'UTF8') END"
    "  AS receipt"
)

# A new outbox id, as the table's default makes it (migration 0012): its
# UTC day in the high bits, so that it falls in that day's partition.
_OUTBOX_ID = (
    "(((now() AT TIME ZONE 'UTC')::date - date '1970-01-01')::bigint << 47)"
    " | (nextval('outbox_id_seq') & ((1::bigint << 47) - 1))"
)

# One row for a flush's notifications, each with the outbox id it keeps:
# $1 its messages, $2 their kinds, in the order they are sent.
INSERT_BATCH = (
    "INSERT INTO notification_batches (retry_hours, message_ids, kinds, outbox_ids)"
    f" SELECT $3, $1::uuid[], $2::text[], array(SELECT {_OUTBOX_ID}"
    "   FROM generate_series(1, cardinality($2::text[])) AS g ORDER BY g)"
    " RETURNING id, outbox_ids"
)


def _expand(where: str) -> str:
    """The statement that turns the notification batches chosen by `where`
    into outbox rows owned by $1 (NULL: by no instance, for any to claim),
    each with the id it was sent under; rows already written for some of
    them (a first try that failed) stay as they are."""
    return (
        f"WITH b AS (DELETE FROM notification_batches WHERE {where}"
        "   RETURNING retry_hours, message_ids, kinds, outbox_ids),"
        " e AS (SELECT b.retry_hours, e.* FROM b"
        "   CROSS JOIN LATERAL unnest(b.message_ids, b.kinds, b.outbox_ids)"
        "     AS e(message_id, kind, outbox_id)),"
        " ins AS (INSERT INTO outbox (id, kind, account_id, message_id, target, payload,"
        "   next_attempt_at, expires_at, owner)"
        " SELECT e.outbox_id, e.kind, m.account_id, m.id,"
        f"   CASE e.kind WHEN '{WEBHOOK}' THEN m.callback_url END,"
        f"   convert_to(CASE e.kind WHEN '{WEBHOOK}' THEN {status_webhook_body()}"
        f"     ELSE {smpp_receipt_body()} END, 'UTF8'),"
        "   now(), m.done_at + e.retry_hours * interval '1 hour', $1"
        # Joined to the ids, each message is looked up in its day's
        # partition (migration 0012).
        " FROM e JOIN messages m ON m.id = e.message_id"
        " ORDER BY e.outbox_id"
        " ON CONFLICT (id) DO NOTHING RETURNING 1)"
        " SELECT count(*) FROM ins"
    )


_EXPAND_OWNED = _expand("owner = ANY($2::text[])")
_EXPAND_OWNED_BUT = _expand("owner = ANY($2::text[]) AND NOT id = ANY($3::int8[])")
_EXPAND_THESE = _expand("id = ANY($2::int8[])")


async def expand_batches(
    conn: asyncpg.Connection,
    new_owner: str | None,
    *,
    owners: Sequence[str] = (),
    but: Sequence[int] = (),
    ids: Sequence[int] | None = None,
) -> int:
    """Turn notification batches into outbox rows owned by `new_owner`:
    the batches `ids`, or else those of `owners` except `but` (those whose
    notifications this process holds). Returns how many rows were written."""
    if ids is not None:
        if not ids:
            return 0
        return int(await conn.fetchval(_EXPAND_THESE, new_owner, list(ids)))
    if but:
        return int(await conn.fetchval(_EXPAND_OWNED_BUT, new_owner, list(owners), list(but)))
    return int(await conn.fetchval(_EXPAND_OWNED, new_owner, list(owners)))
