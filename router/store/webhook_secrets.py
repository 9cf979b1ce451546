"""An account's webhook secrets as the operator rotates them (CONTRACT §3
"during a secret rotation an account holds two secrets", §8).

A rotation is three steps, each one transaction with its audit row and a
NOTIFY on the directory's channel, so every instance signs with the new
secrets within a second (store/directory_watch.py):

1. `put_next`: the second secret; callbacks are signed with both from now on;
2. `promote`: once the receiver verifies with the new one, it becomes the
   only one (the old secret stops signing);
3. or `clear_next`: the rotation is called off.

No secret ever leaves through here: answers and audit rows hold
fingerprints (`fingerprint`). A secret the config file sets is the file's
(CONTRACT §8 "managed_by_config"), and so is its rotation
(`webhook_secret_next` in the file, store/directory.py `sync_config`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg

from smsrouter.router.store.directory import NOTIFY_CHANNEL, Conflict, NotFound, audit

# The fingerprint's hex digits: enough to tell secrets apart, too few to
# stand for the secret's hash.
FINGERPRINT_HEX = 16
# Columns of the file's that hold a rotation.
_SECRET_FIELDS = ("webhook_secret", "webhook_secret_next")


def fingerprint(secret: str) -> str | None:
    """`sha256:` and the first 16 hex digits of the SHA-256 of the secret's
    UTF-8 bytes (what `printf %s SECRET | sha256sum` starts with); None
    for no secret."""
    if not secret:
        return None
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:FINGERPRINT_HEX]


def _state(row: asyncpg.Record) -> dict[str, Any]:
    managed = frozenset(row["managed_fields"] or ())
    return {
        "current": fingerprint(row["webhook_secret"]),
        "next": fingerprint(row["webhook_secret_next"]),
        "managed_by_config": any(f in managed for f in _SECRET_FIELDS),
    }


def _audited(state: dict[str, Any]) -> dict[str, Any]:
    return {"current": state["current"], "next": state["next"]}


async def _row(conn: asyncpg.Connection, account_id: str, *, lock: bool) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT webhook_secret, webhook_secret_next, managed_fields FROM accounts WHERE id = $1"
        + (" FOR UPDATE" if lock else ""),
        account_id,
    )
    if row is None:
        raise NotFound("account")
    return row


async def _writable(conn: asyncpg.Connection, account_id: str) -> asyncpg.Record:
    """The account's row, locked; Conflict if the file holds its secret."""
    row = await _row(conn, account_id, lock=True)
    managed = frozenset(row["managed_fields"] or ())
    for name in _SECRET_FIELDS:
        if name in managed:
            raise Conflict(
                "managed_by_config", f"the account's {name} is set by the config file", name
            )
    return row


async def _write(
    conn: asyncpg.Connection,
    actor: str,
    action: str,
    account_id: str,
    before: asyncpg.Record,
    current: str,
    next_secret: str,
) -> dict[str, Any]:
    after = await conn.fetchrow(
        "UPDATE accounts SET webhook_secret = $2, webhook_secret_next = $3, updated_at = now()"
        " WHERE id = $1 RETURNING webhook_secret, webhook_secret_next, managed_fields",
        account_id,
        current,
        next_secret,
    )
    shown = _state(after)
    await audit(conn, actor, action, account_id, _audited(_state(before)), _audited(shown))
    # Delivered at commit: every instance reloads its accounts (CONTRACT §8).
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, account_id)
    return shown


async def get_state(conn: asyncpg.Connection, account_id: str) -> dict[str, Any]:
    """`{"current", "next", "managed_by_config"}`, fingerprints or null."""
    return _state(await _row(conn, account_id, lock=False))


async def put_next(
    conn: asyncpg.Connection, actor: str, account_id: str, secret: str
) -> dict[str, Any]:
    """Start (or restart) a rotation to `secret`. Conflict "secret_in_use"
    if it is the current secret; the same next secret again changes
    nothing and writes no audit row."""
    async with conn.transaction():
        row = await _writable(conn, account_id)
        if secret == row["webhook_secret"]:
            raise Conflict("secret_in_use", "the next secret must differ from the current", "next")
        if secret == row["webhook_secret_next"]:
            return _state(row)
        return await _write(
            conn, actor, "webhook_secret.put_next", account_id, row, row["webhook_secret"], secret
        )


async def promote(conn: asyncpg.Connection, actor: str, account_id: str) -> dict[str, Any]:
    """The next secret becomes the only one. Conflict "no_next_secret"
    when no rotation is under way."""
    async with conn.transaction():
        row = await _writable(conn, account_id)
        if not row["webhook_secret_next"]:
            raise Conflict("no_next_secret", "the account has no next secret to promote", "next")
        return await _write(
            conn, actor, "webhook_secret.promote", account_id, row, row["webhook_secret_next"], ""
        )


async def clear_next(conn: asyncpg.Connection, actor: str, account_id: str) -> dict[str, Any]:
    """Call a rotation off: the next secret stops signing. Without one,
    nothing changes and no audit row is written."""
    async with conn.transaction():
        row = await _writable(conn, account_id)
        if not row["webhook_secret_next"]:
            return _state(row)
        return await _write(
            conn, actor, "webhook_secret.delete_next", account_id, row, row["webhook_secret"], ""
        )
