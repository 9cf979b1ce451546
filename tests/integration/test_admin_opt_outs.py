"""The operator's opt-out import over HTTP (CONTRACT §6, §8) against a real
PostgreSQL: the body's form (text/plain, at most 100,000 lines, a larger
body than any other route of the listener takes), invalid lines reported
and skipped, an unknown account, and the importing process's own list
updated as the import commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from smsrouter.connectors.admin_api import AdminApi
from smsrouter.connectors.admin_requests import MAX_IMPORT_LINES
from smsrouter.router.opt_outs import OptOutList

TOKEN = "ops-token-0123456789abcdefghijkl"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IMPORT = "/admin/v1/accounts/acc/opt-outs/import"  # "acc": tests/integration/conftest.py


@pytest.fixture
async def served(
    db_pool: asyncpg.Pool,
) -> AsyncIterator[tuple[aiohttp.ClientSession, OptOutList]]:
    opt_outs = OptOutList()
    api = AdminApi(db_pool, [("ops", TOKEN)], price_plans=lambda: (), opt_outs=opt_outs)
    await api.server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{api.server.port}") as session:
            yield session, opt_outs
    finally:
        await api.server.stop()


async def _post(
    session: aiohttp.ClientSession, path: str, body: bytes, kind: str = "text/plain"
) -> tuple[int, Any]:
    headers = {**AUTH, "Content-Type": kind}
    async with session.post(path, data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_valid_lines_are_added_and_invalid_ones_reported(
    served: tuple[aiohttp.ClientSession, OptOutList], db_pool: asyncpg.Pool
) -> None:
    session, opt_outs = served
    body = b"+14155550101\r\n\r\n  +44 7700 900123  \nnope\n+14155550101\n+1415\n"
    status, answer = await _post(session, IMPORT, body, "text/plain; charset=utf-8")
    assert status == 200, answer
    assert answer == {
        "received": 5,
        "added": 2,
        "invalid": [{"line": 4, "value": "nope"}, {"line": 6, "value": "+1415"}],
        "invalid_count": 2,
    }
    stored = await db_pool.fetch("SELECT recipient, source FROM opt_outs ORDER BY recipient")
    # Written as the router writes numbers, the form a send is matched on.
    assert [(r["recipient"], r["source"]) for r in stored] == [
        ("+14155550101", "import"),
        ("+447700900123", "import"),
    ]
    # The importing process's own list has them as soon as the import answers.
    assert opt_outs.opted_out("acc", "14155550101") and opt_outs.opted_out("acc", "447700900123")


async def test_the_body_must_be_a_text_list_of_at_most_100000_lines(
    served: tuple[aiohttp.ClientSession, OptOutList], db_pool: asyncpg.Pool
) -> None:
    session, _ = served
    status, problem = await _post(session, IMPORT, b'["+14155550101"]', "application/json")
    assert (status, problem["code"]) == (415, "unsupported_media_type")
    # Over a megabyte, which no other route takes, but too many lines.
    too_many = b"+14155550101\n" * (MAX_IMPORT_LINES + 1)
    status, problem = await _post(session, IMPORT, too_many)
    assert (status, problem["code"]) == (413, "too_many_lines")
    # The largest list passes the listener's body limit on this route only.
    full = b"".join(b"+1415%07d\n" % i for i in range(MAX_IMPORT_LINES))
    assert len(full) > 1 << 20
    status, answer = await _post(session, IMPORT, full)
    assert status == 200, answer
    assert (answer["received"], answer["added"]) == (MAX_IMPORT_LINES, MAX_IMPORT_LINES)
    status, problem = await _post(session, "/admin/v1/accounts", full, "application/json")
    assert (status, problem["code"]) == (413, "body_too_large")
    assert await db_pool.fetchval("SELECT count(*) FROM opt_outs") == MAX_IMPORT_LINES


async def test_an_unknown_account_is_404_and_nothing_is_stored(
    served: tuple[aiohttp.ClientSession, OptOutList], db_pool: asyncpg.Pool
) -> None:
    session, opt_outs = served
    path = "/admin/v1/accounts/nobody/opt-outs/import"
    status, problem = await _post(session, path, b"+14155550101\n")
    assert (status, problem["code"]) == (404, "not_found")
    assert await db_pool.fetchval("SELECT count(*) FROM opt_outs") == 0
    assert len(opt_outs) == 0
    async with session.post(IMPORT, data=b"+14155550101\n") as resp:
        assert resp.status == 401
