"""Flagged and suspended sender numbers in PostgreSQL (CONTRACT §6
"Opt-out rate", §8 "Senders"; migration 0009).

The process that sees a number's opt-out rate cross a threshold writes its
row (`record_state`); an operator's resume deletes it (`resume`). Each
change commits with its audit row and NOTIFY `smsrouter_senders`, on which
every process loads the rows again (`load_states`,
`router/store/sender_watch.py`).
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from smsrouter.router.sender_states import FLAGGED, SUSPENDED, SenderState
from smsrouter.router.store.directory import NotFound

NOTIFY_CHANNEL = "smsrouter_senders"
#: The audit log's actor for a state the router decided from a rate.
ROUTER_ACTOR = "router"

_ACTIONS = {FLAGGED: "sender.flag", SUSPENDED: "sender.suspend"}
_COLUMNS = "number, account_id, state, opt_outs, recipients, rate, since"


def _state(r: asyncpg.Record) -> SenderState:
    return SenderState(
        r["number"], r["account_id"], r["state"], r["opt_outs"], r["recipients"], r["rate"],
        r["since"],
    )  # fmt: skip


def state_json(s: SenderState) -> dict[str, Any]:
    """A row as the operator API shows it (CONTRACT §8 "Senders")."""
    return {
        "number": s.number,
        "account": s.account_id,
        "state": s.state,
        "opt_outs": s.opt_outs,
        "recipients": s.recipients,
        "rate": round(s.rate, 6),
        "since": s.since.isoformat(),
    }


async def load_states(conn: asyncpg.Connection) -> list[SenderState]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM sender_states")
    return [_state(r) for r in rows]


async def _audit(
    conn: asyncpg.Connection,
    actor: str,
    action: str,
    target: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, target, before, after)"
        " VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)",
        actor, action, target,
        None if before is None else json.dumps(before),
        None if after is None else json.dumps(after),
    )  # fmt: skip
    # Delivered at commit, so a listener that reloads sees the change.
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, target)


async def record_state(
    conn: asyncpg.Connection, state: SenderState, decided_by: str
) -> SenderState | None:
    """Write a number's new state if it is worse than the stored one (another
    process may have got there first); the row written, or None if the
    stored state was already as bad."""
    async with conn.transaction():
        old = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM sender_states WHERE number = $1 FOR UPDATE", state.number
        )
        if old is not None and (old["state"] == SUSPENDED or old["state"] == state.state):
            return None
        row = await conn.fetchrow(
            "INSERT INTO sender_states"
            " (number, account_id, state, opt_outs, recipients, rate, since, decided_by)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (number) DO UPDATE SET account_id = excluded.account_id,"
            "  state = excluded.state, opt_outs = excluded.opt_outs,"
            "  recipients = excluded.recipients, rate = excluded.rate, since = excluded.since,"
            "  decided_by = excluded.decided_by"
            # A row another process inserted since the SELECT (there was
            # none to lock) is raised only, never lowered.
            f" WHERE sender_states.state <> '{SUSPENDED}'"
            "  AND sender_states.state <> excluded.state"
            f" RETURNING {_COLUMNS}",
            state.number, state.account_id, state.state, state.opt_outs, state.recipients,
            state.rate, state.since, decided_by,
        )  # fmt: skip
        if row is None:
            return None
        written = _state(row)
        before = None if old is None else state_json(_state(old))
        await _audit(
            conn, ROUTER_ACTOR, _ACTIONS[state.state], state.number, before,
            {**state_json(written), "decided_by": decided_by},
        )  # fmt: skip
    return written


async def resume(conn: asyncpg.Connection, actor: str, number: str) -> dict[str, Any]:
    """An operator resumes a flagged or suspended number: its row goes (the
    audit row keeps it); NotFound("sender") if it is neither."""
    async with conn.transaction():
        old = await conn.fetchrow(
            f"DELETE FROM sender_states WHERE number = $1 RETURNING {_COLUMNS}", number
        )
        if old is None:
            raise NotFound("flagged or suspended sender")
        before = state_json(_state(old))
        await _audit(conn, actor, "sender.resume", number, before, None)
    return {**before, "state": "active", "resumed_by": actor}


async def list_states(
    conn: asyncpg.Connection, *, state: str | None, limit: int, after: str | None
) -> list[dict[str, Any]]:
    """Flagged and suspended numbers (or one state's) by number, those after
    `after`, at most `limit`."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM sender_states"
        " WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR number > $2)"
        " ORDER BY number LIMIT $3",
        state,
        after,
        limit,
    )
    return [state_json(_state(r)) for r in rows]
