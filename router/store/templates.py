"""Message templates in PostgreSQL (CONTRACT §6 "Templates", §8; migration 0008).

An account creates a template ('pending'); an operator approves or rejects
it, each decision in one transaction with its audit row and a NOTIFY on the
directory's channel, so that every router process reloads the approved
templates with the directory (`directory.load`) within a second. A
creation is audited too (actor "account:<id>") but changes nothing the
processes hold: no NOTIFY.
"""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg

from smsrouter.router.store.directory import Conflict, NotFound, _audit, _changed

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
STATUSES = (PENDING, APPROVED, REJECTED)

_COLUMNS = "id, account_id, name, text, kind, status, reason, created_at, decided_at, decided_by"


def new_template_id() -> str:
    return "tpl_" + secrets.token_hex(8)


def account_actor(account_id: str) -> str:
    """The audit log's actor for a change an account made over /v1."""
    return f"account:{account_id}"


def customer_json(r: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """A template as its account sees it (GET /v1/templates): not who decided."""
    return {
        "id": r["id"],
        "name": r["name"],
        "text": r["text"],
        "kind": r["kind"],
        "status": r["status"],
        "reason": r["reason"],
        "created_at": r["created_at"],
        "decided_at": r["decided_at"],
    }


def operator_json(r: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """A template as the operator API and the audit log show it."""
    return {**customer_json(r), "account": r["account_id"], "decided_by": r["decided_by"]}


async def create_template(
    conn: asyncpg.Connection, account_id: str, name: str, text: str, kind: str | None
) -> dict[str, Any]:
    """A new pending template of the account (its row as `operator_json`);
    Conflict("template_exists") when the account has one of that name."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO templates (id, account_id, name, text, kind) VALUES ($1, $2, $3, $4, $5)"
            f" ON CONFLICT (account_id, name) DO NOTHING RETURNING {_COLUMNS}",
            new_template_id(),
            account_id,
            name,
            text,
            kind,
        )
        if row is None:
            raise Conflict("template_exists", f"the account has a template named {name!r}", "name")
        shown = operator_json(row)
        await _audit(conn, account_actor(account_id), "template.create", row["id"], None, shown)
    return shown


async def get_template(
    conn: asyncpg.Connection, template_id: str, account_id: str | None = None
) -> dict[str, Any] | None:
    """The template (`operator_json`), or None; with `account_id`, None for
    another account's."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM templates WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)",
        template_id,
        account_id,
    )
    return None if row is None else operator_json(row)


async def list_templates(
    conn: asyncpg.Connection,
    *,
    limit: int,
    after: str | None = None,
    account_id: str | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """Templates by id, those after `after` (the last id of the previous
    page), of one account and one status when given, at most `limit`."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM templates"
        " WHERE ($1::text IS NULL OR id > $1) AND ($2::text IS NULL OR account_id = $2)"
        " AND ($3::text IS NULL OR status = $3) ORDER BY id LIMIT $4",
        after,
        account_id,
        status,
        limit,
    )
    return [operator_json(r) for r in rows]


async def decide_template(
    conn: asyncpg.Connection, actor: str, template_id: str, *, approve: bool, reason: str = ""
) -> dict[str, Any]:
    """Approve or reject a pending template (CONTRACT §8), with its audit
    row and the NOTIFY that makes every process reload the approved ones.
    NotFound("template"); Conflict("template_not_pending") for one decided
    already."""
    async with conn.transaction():
        old = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM templates WHERE id = $1 FOR UPDATE", template_id
        )
        if old is None:
            raise NotFound("template")
        if old["status"] != PENDING:
            raise Conflict(
                "template_not_pending",
                f"template {template_id} is {old['status']}, not pending",
                "status",
            )
        row = await conn.fetchrow(
            "UPDATE templates SET status = $2, reason = $3, decided_at = now(), decided_by = $4"
            f" WHERE id = $1 RETURNING {_COLUMNS}",
            template_id,
            APPROVED if approve else REJECTED,
            reason,
            actor,
        )
        shown = operator_json(row)
        action = "template.approve" if approve else "template.reject"
        await _changed(conn, actor, action, template_id, operator_json(old), shown)
    return shown
