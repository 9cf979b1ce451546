"""Outside tools some tests use: present in CI (.ci/run installs them),
optional on a developer's machine."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

#: Default bound of a test's single wait, in seconds.
BOUND = 15.0


def require_tool(name: str, package: str) -> str:
    """Path of `name`; skip the test without it, except in CI where it must be."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian package {package})"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run should have installed it")
        pytest.skip(message)
    return path


async def bounded(aw: Awaitable[T], timeout: float = BOUND) -> T:
    """`aw`, failing with TimeoutError past `timeout` seconds."""
    async with asyncio.timeout(timeout):
        return await aw


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = BOUND) -> None:
    """Wait until `predicate()` holds, polling; fail the test naming `what` after `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def open_accounts(
    pool: Any, *account_ids: str, credit: str = "1000000", credit_limit: str = "0"
) -> None:
    """Balance rows for accounts whose messages a test stores: a priced
    message is stored only if its account can pay for it (CONTRACT §6)."""
    await pool.executemany(
        "INSERT INTO accounts (id, credit, initial_credit, currency, credit_limit)"
        " VALUES ($1, $2::numeric, $2::numeric, 'EUR', $3::numeric) ON CONFLICT (id) DO NOTHING",
        [(a, credit, credit_limit) for a in account_ids],
    )


async def kept_notifications(pool: Any) -> list[Any]:
    """Every notification the database keeps and that is not done, as a
    start would load them: what notification batches hold (migration 0018)
    turned into outbox rows no instance owns, then the outbox rows no
    instance owns, in id order."""
    from smsrouter.router.store import pending_notifications
    from smsrouter.router.store.notices import expand_batches

    async with pool.acquire() as conn:
        batches = [r["id"] for r in await conn.fetch("SELECT id FROM notification_batches")]
        await expand_batches(conn, None, ids=batches)
    return await pending_notifications(pool)
