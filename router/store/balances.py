"""The accounts' credit: rows made from the config at start, read for
`GET /v1/balance` (CONTRACT §3)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import asyncpg


async def ensure_accounts(
    pool: asyncpg.Pool, accounts: Sequence[tuple[str, Decimal, str, Decimal]]
) -> None:
    """Create the balance rows of configured accounts (credit from config
    once); the credit limit is the config's at every start."""
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO accounts (id, credit, initial_credit, currency, credit_limit)"
            " VALUES ($1, $2, $2, $3, $4)"
            " ON CONFLICT (id) DO UPDATE SET credit_limit = EXCLUDED.credit_limit",
            accounts,
        )


async def balance(pool: asyncpg.Pool, account_id: str) -> tuple[Decimal, str] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT credit, currency FROM accounts WHERE id = $1", account_id)
    return None if row is None else (row["credit"], row["currency"])
