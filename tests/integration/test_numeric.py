"""Amounts read back from PostgreSQL are written plainly (CONTRACT §3:
money is a decimal string): asyncpg reads some round numerics with an
exponent (router/store/numeric.py)."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest

from smsrouter.router.store.numeric import plain


@pytest.mark.parametrize(
    ("sql", "written"),
    [
        ("1000000", "1000000"),
        ("20000", "20000"),
        ("-10000", "-10000"),
        ("1000000.00", "1000000.00"),
        ("0.0100", "0.0100"),
        ("0", "0"),
    ],
)
async def test_a_numeric_read_back_is_written_without_an_exponent(
    db_pool: asyncpg.Pool, sql: str, written: str
) -> None:
    read: Decimal = await db_pool.fetchval(f"SELECT {sql}::numeric")
    assert str(plain(read)) == written
    assert plain(read) == read


async def test_asyncpg_still_reads_a_round_numeric_with_an_exponent(db_pool: asyncpg.Pool) -> None:
    # Why plain() exists; when this fails, asyncpg reads them plainly.
    assert str(await db_pool.fetchval("SELECT 1000000::numeric")) == "1.00E+6"
