"""The opt-out rows (migration 0007, CONTRACT §6 "Opt-out") as the
router's processes read them."""

from __future__ import annotations

import asyncpg

from smsrouter.router.opt_outs import OptOutList


async def load_opt_outs(pool: asyncpg.Pool, opt_outs: OptOutList) -> int:
    """Every account's list into `opt_outs` (at start, before any message
    is admitted); returns how many numbers."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT account_id, recipient FROM opt_outs")
    opt_outs.load((r[0], r[1]) for r in rows)
    return len(rows)
