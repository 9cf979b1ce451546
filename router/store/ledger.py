"""The credit ledger (CONTRACT §6 "Credit"): every change of a balance is a
row, so that balance = initial credit + sum of the ledger, exactly.

Reserves and refunds are written by the writer in the commit that stores
or ends their messages (`writes`); top-ups and adjustments by the operator
API, here, each in its own transaction with its balance update.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from smsrouter.router.store.numeric import plain

RESERVE = "reserve"
REFUND = "refund"
TOP_UP = "top_up"
ADJUSTMENT = "adjustment"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    account_id: str
    at: datetime
    kind: str
    amount: Decimal
    balance: Decimal
    message_id: uuid.UUID | None
    messages: int
    reference: str | None
    actor: str | None

    def as_json(self, *, with_actor: bool) -> dict[str, object]:
        shown: dict[str, object] = {
            "id": self.id,
            "account": self.account_id,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "kind": self.kind,
            "amount": self.amount,
            "balance": self.balance,
            "message_id": None if self.message_id is None else str(self.message_id),
            "messages": self.messages,
            "reference": self.reference,
        }
        if with_actor:
            shown["actor"] = self.actor
        return shown


_COLUMNS = "id, account_id, at, kind, amount, balance, message_id, messages, reference, actor"


def _entry(row: asyncpg.Record) -> LedgerEntry:
    return LedgerEntry(
        row["id"], row["account_id"], row["at"], row["kind"], plain(row["amount"]),
        plain(row["balance"]), row["message_id"], row["messages"], row["reference"], row["actor"],
    )  # fmt: skip


async def add_credit(
    conn: asyncpg.Connection, account_id: str, amount: Decimal, *, reference: str, actor: str
) -> LedgerEntry | None:
    """Add `amount` (negative: an adjustment down) to the account's credit
    and write its ledger row, in one statement; None if no such account.
    The caller's transaction, if any, holds both."""
    kind = TOP_UP if amount > 0 else ADJUSTMENT
    row = await conn.fetchrow(
        "WITH u AS (UPDATE accounts SET credit = credit + $2, updated_at = now()"
        "  WHERE id = $1 RETURNING id, credit)"
        " INSERT INTO ledger (account_id, kind, amount, balance, reference, actor)"
        " SELECT u.id, $3, $2, u.credit, $4, $5 FROM u"
        f" RETURNING {_COLUMNS}",
        account_id,
        amount,
        kind,
        reference,
        actor,
    )
    return None if row is None else _entry(row)


async def list_ledger(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str, *, limit: int, before: int | None
) -> list[LedgerEntry]:
    """The account's ledger, newest first, rows older than `before` (the
    last id of the previous page), at most `limit`."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM ledger WHERE account_id = $1 AND ($2::bigint IS NULL OR id < $2)"
        " ORDER BY id DESC LIMIT $3",
        account_id,
        before,
        limit,
    )
    return [_entry(r) for r in rows]


async def balance_identity(conn: asyncpg.Connection, account_id: str) -> tuple[Decimal, Decimal]:
    """(credit, initial credit + sum of the ledger): equal, always."""
    row = await conn.fetchrow(
        "SELECT a.credit, a.initial_credit + coalesce("
        "  (SELECT sum(amount) FROM ledger l WHERE l.account_id = a.id), 0) AS summed"
        " FROM accounts a WHERE a.id = $1",
        account_id,
    )
    if row is None:
        raise LookupError(account_id)
    return row["credit"], row["summed"]


CARRIED_FORWARD = "carried_forward"

# [retention] ledger_days (CONTRACT §10): each account's rows before the
# cutoff become one, the latest of them, which keeps its place (id), its
# balance after, and takes their kind "carried_forward" and their summed
# amount and message count. Sum and order are unchanged, so balance =
# initial credit + sum(ledger) still holds; one statement, one transaction.
# A row is written with `at` = now() of its transaction: none can arrive
# before a cutoff days in the past.
_FOLD = (
    "WITH folded AS ("
    " SELECT account_id, max(id) AS kept, sum(amount) AS amount, sum(messages) AS messages"
    " FROM ledger WHERE at < $1 GROUP BY account_id"
    " HAVING count(*) > 1 OR bool_or(kind <> $2)),"
    " gone AS ("
    " DELETE FROM ledger l USING folded f"
    " WHERE l.account_id = f.account_id AND l.at < $1 AND l.id < f.kept RETURNING l.id),"
    " carried AS ("
    " UPDATE ledger l SET kind = $2, amount = f.amount, messages = f.messages,"
    "  message_id = NULL, reference = NULL, actor = NULL"
    " FROM folded f WHERE l.id = f.kept RETURNING l.id)"
    " SELECT (SELECT count(*) FROM gone) AS gone, (SELECT count(*) FROM carried) AS carried"
)


async def fold_ledger(
    conn: asyncpg.Connection, before: datetime, timeout: float | None = None
) -> int:
    """Fold each account's ledger rows older than `before` into one
    carried-forward row; how many rows went."""
    row = await conn.fetchrow(_FOLD, before, CARRIED_FORWARD, timeout=timeout)
    gone: int = row["gone"]
    return gone
