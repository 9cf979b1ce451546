"""What connectors/problems.py refuses before the database sees it: U+0000
in a JSON body (PostgreSQL text cannot hold it), times outside UTC's years."""

from __future__ import annotations

import asyncio

import pytest

from smsrouter.connectors.http_server import Response
from smsrouter.connectors.problems import (
    ABANDONED_READS,
    NUL_DETAIL,
    holds_nul,
    nul_errors,
    rfc3339,
    store_read,
)
from smsrouter.router.admission import FieldError


def test_each_field_holding_a_nul_anywhere_is_named() -> None:
    raw = (
        b'{"text": "a\\u0000b", "to": ["+1", "\\u0000"], "params": {"k\\u0000": 1},'
        b' "client_ref": "ok", "n": 0}'
    )
    assert nul_errors(raw) == [
        FieldError(name, "invalid", NUL_DETAIL) for name in ("text", "to", "params")
    ]


def test_an_escaped_backslash_before_u0000_is_no_nul() -> None:
    # The JSON text "\\u0000" is a backslash and "u0000": six characters.
    assert nul_errors(b'{"text": "\\\\u0000"}') == []
    assert not holds_nul({"text": "\\u0000"})


def test_a_body_without_the_escape_is_not_decoded_at_all() -> None:
    assert nul_errors(b"not even json") == []


@pytest.mark.parametrize(
    "written", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-01-01T00:00:00"]
)
def test_a_time_that_is_not_in_utc_s_years_or_has_no_offset_is_none(written: str) -> None:
    assert rfc3339(written) is None


def test_a_time_at_the_edges_of_utc_s_years_is_read() -> None:
    edge = rfc3339("0001-01-01T00:00:00Z")
    assert edge is not None and edge.year == 1
    assert rfc3339("9999-12-31T23:59:59+00:00") is not None


async def test_a_read_past_its_deadline_answers_503_without_waiting_for_its_cleanup() -> None:
    """CONTRACT §11 "A hung database": a cancelled asyncpg query waits for
    the server to answer the cancel before its connection goes back to the
    pool; a hung server never answers. The request is answered at its
    deadline all the same, and the read ends on its own later."""
    release = asyncio.Event()
    cleaned = asyncio.Event()

    async def hung_read() -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # the connection's reset, on a hung server
            cleaned.set()
            raise
        return 1

    async with asyncio.timeout(5):  # waiting for the cleanup would hang here
        answer = await store_read(hung_read(), 0.01)
    assert isinstance(answer, Response) and answer.status == 503
    assert len(ABANDONED_READS) == 1
    release.set()
    await cleaned.wait()
    await asyncio.sleep(0)
    assert not ABANDONED_READS


async def test_a_read_in_time_gives_its_result_and_a_lost_database_503() -> None:
    async def fine() -> int:
        return 7

    async def lost() -> int:
        raise ConnectionRefusedError("the database is away")

    assert await store_read(fine(), 1.0) == 7
    answer = await store_read(lost(), 1.0)
    assert isinstance(answer, Response) and answer.status == 503
