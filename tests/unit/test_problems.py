"""What connectors/problems.py refuses before the database sees it: U+0000
in a JSON body (PostgreSQL text cannot hold it), times outside UTC's years."""

from __future__ import annotations

import pytest

from smsrouter.connectors.problems import NUL_DETAIL, holds_nul, nul_errors, rfc3339
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
