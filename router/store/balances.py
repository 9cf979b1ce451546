"""The accounts' credit, read for `GET /v1/balance` (CONTRACT §3)."""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from smsrouter.router.store.numeric import plain


async def balance(pool: asyncpg.Pool, account_id: str) -> tuple[Decimal, str] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT credit, currency FROM accounts WHERE id = $1", account_id)
    return None if row is None else (plain(row["credit"]), row["currency"])
