"""The integration tests store messages of a few fixed accounts ("acc",
"acme", "other", "nosecret"), priced as the router prices them: a priced
message is stored only if its account's balance pays for it (CONTRACT §6
"Credit"). Every test with a database of its own gets those balance rows,
well funded; tests of the credit rules make accounts of their own, and a
module that sets OWN_ACCOUNTS = True gets none."""

from __future__ import annotations

import asyncpg
import pytest

from tests.tools import open_accounts

FUNDED_ACCOUNTS = ("acc", "acme", "other", "nosecret")


@pytest.fixture(autouse=True)
async def _funded_accounts(request: pytest.FixtureRequest) -> None:
    # A module about the accounts' rows themselves makes its own.
    if "database_url" not in request.fixturenames or getattr(request.module, "OWN_ACCOUNTS", False):
        return
    url: str = request.getfixturevalue("database_url")
    conn = await asyncpg.connect(url)
    try:
        await open_accounts(conn, *FUNDED_ACCOUNTS)
    finally:
        await conn.close()
