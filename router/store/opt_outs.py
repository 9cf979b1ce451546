"""The opt-out rows (migration 0007, CONTRACT §6 "Opt-out") as the
router's processes read them, and the operator's bulk import.

A single change (a subscriber's STOP or START, an account's PUT or DELETE)
is an `OptOutChange` through the status writer (store/writes.py), which
NOTIFYs it; the import here is one transaction of its own, with its audit
row (CONTRACT §8) and one NOTIFY "*" for the whole account.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import asyncpg

from smsrouter.router.opt_outs import OptOutList
from smsrouter.router.store import directory
from smsrouter.router.store.operations import OptOutChange
from smsrouter.router.store.writes import OPT_OUTS_CHANNEL

__all__ = [
    "ACCOUNT_SOURCE",
    "IMPORT_SOURCE",
    "SUBSCRIBER_SOURCE",
    "account_notice",
    "apply_committed",
    "get_opt_out",
    "import_opt_outs",
    "list_all_opt_outs",
    "list_opt_outs",
    "load_account",
    "load_opt_outs",
    "present",
]

# Who made an entry (`opt_outs.source`): the subscriber by STOP, the account
# by PUT /v1/opt-outs, an operator by import.
SUBSCRIBER_SOURCE = "subscriber"
ACCOUNT_SOURCE = "account"
IMPORT_SOURCE = "import"

# The numbers as keys (router/opt_outs.py `number_key`: the digits as an
# integer), each account's aggregated by the server into one int8 array:
# asyncpg decodes an array of int8 into a list of ints in C, where a row
# per number cost a Record each (1,000,000 rows: bench/opt_out_import.py).
_KEYS_BY_ACCOUNT = (
    "SELECT account_id, array_agg(substr(recipient, 2)::int8) FROM opt_outs GROUP BY account_id"
)


async def load_opt_outs(pool: asyncpg.Pool, opt_outs: OptOutList) -> int:
    """Every account's list into `opt_outs` (at start, before any message
    is admitted, and when changes may have been missed); returns how many
    numbers."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(_KEYS_BY_ACCOUNT)
    opt_outs.load_keys({r[0]: r[1] for r in rows})
    return sum(len(r[1]) for r in rows)


async def load_account(conn: asyncpg.Connection, account_id: str) -> list[int]:
    """One account's whole list as number keys (after a bulk import)."""
    keys = await conn.fetchval(
        "SELECT array_agg(substr(recipient, 2)::int8) FROM opt_outs WHERE account_id = $1",
        account_id,
    )
    return list(keys or ())


async def present(
    conn: asyncpg.Connection, pairs: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of these (account, E.164) pairs are opted out now: one SELECT."""
    if not pairs:
        return set()
    accounts, recipients = zip(*pairs, strict=True)
    rows = await conn.fetch(
        "SELECT o.account_id, o.recipient FROM opt_outs o"
        " JOIN unnest($1::text[], $2::text[]) AS u(account_id, recipient)"
        "   ON o.account_id = u.account_id AND o.recipient = u.recipient",
        list(accounts),
        list(recipients),
    )
    return {(r[0], r[1]) for r in rows}


def apply_committed(opt_outs: OptOutList, change: OptOutChange, changed: bool) -> None:
    """This process's own change, applied to its list right after the
    commit, so that a send that follows in the same process is decided on
    it at once (other processes follow the NOTIFY). An opt-out holds
    whoever's entry it met; an opt-in removes only what it deleted."""
    if change.opted_out:
        opt_outs.add(change.account_id, change.recipient)
    elif changed:
        opt_outs.remove(change.account_id, change.recipient)


def _entry(r: asyncpg.Record) -> dict[str, Any]:
    return {"number": r["recipient"], "source": r["source"], "created_at": r["created_at"]}


async def get_opt_out(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str, recipient: str
) -> dict[str, Any] | None:
    """The account's entry for this number ({"number", "source",
    "created_at"}), or None."""
    row = await conn.fetchrow(
        "SELECT recipient, source, created_at FROM opt_outs"
        " WHERE account_id = $1 AND recipient = $2",
        account_id,
        recipient,
    )
    return None if row is None else _entry(row)


async def list_opt_outs(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str, *, limit: int, after: str | None
) -> list[dict[str, Any]]:
    """The account's entries in number order, those after `after`, at most
    `limit` (the primary key's order: an index scan whatever the list's size)."""
    rows = await conn.fetch(
        "SELECT recipient, source, created_at FROM opt_outs"
        " WHERE account_id = $1 AND ($2::text IS NULL OR recipient > $2)"
        " ORDER BY recipient LIMIT $3",
        account_id,
        after,
        limit,
    )
    return [_entry(r) for r in rows]


async def list_all_opt_outs(
    conn: asyncpg.Connection, *, limit: int, after: tuple[str, str] | None
) -> list[dict[str, Any]]:
    """Every account's entries in (account, number) order, for the operator."""
    after_account, after_number = after if after is not None else (None, None)
    rows = await conn.fetch(
        "SELECT account_id, recipient, source, created_at FROM opt_outs"
        " WHERE $1::text IS NULL OR (account_id, recipient) > ($1, $2::text)"
        " ORDER BY account_id, recipient LIMIT $3",
        after_account,
        after_number,
        limit,
    )
    return [{"account": r["account_id"], **_entry(r)} for r in rows]


def account_notice(account_id: str) -> str:
    """The NOTIFY payload that tells every process to reload one account's
    list (store/writes.py `opt_out_notice` for a single number)."""
    return f"*\t{account_id}\t"


IMPORT_ACTION = "opt_outs.import"


async def import_opt_outs(
    conn: asyncpg.Connection, actor: str, account_id: str, numbers: Sequence[str], received: int
) -> int:
    """An operator's list into the account's (CONTRACT §6, §8): `numbers`
    are E.164 already checked, `received` how many lines the request held.
    One transaction: COPY into a temporary table, one INSERT of those not
    listed yet (source 'import'; an entry already there keeps its source),
    the audit row, and a NOTIFY "*" that has every process reload the
    account. Returns how many were added; NotFound("account")."""
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM accounts WHERE id = $1", account_id) is None:
            raise directory.NotFound("account")
        await conn.execute(
            "CREATE TEMPORARY TABLE opt_out_import (recipient text NOT NULL) ON COMMIT DROP"
        )
        # The numbers are checked E.164 (digits and '+'): nothing in them
        # needs escaping in COPY's text format.
        await conn.copy_to_table(
            "opt_out_import",
            source=io.BytesIO("\n".join(numbers).encode("ascii") + b"\n" if numbers else b""),
            format="text",
        )
        status = await conn.execute(
            "INSERT INTO opt_outs (account_id, recipient, source)"
            " SELECT $1, recipient, $2 FROM opt_out_import"
            " ON CONFLICT (account_id, recipient) DO NOTHING",
            account_id,
            IMPORT_SOURCE,
        )
        added = int(status.rsplit(" ", 1)[1])
        await directory.audit(
            conn, actor, IMPORT_ACTION, account_id, None, {"received": received, "added": added}
        )
        await conn.execute("SELECT pg_notify($1, $2)", OPT_OUTS_CHANNEL, account_notice(account_id))
    return added
