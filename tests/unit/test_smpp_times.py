from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsrouter.connectors.smpp.times import SmppTimeError, format_smpp_time, parse_smpp_time

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def test_empty_is_not_given() -> None:
    assert parse_smpp_time("", NOW) is None


def test_absolute_with_offsets() -> None:
    # 14:30 local at UTC+2 (8 quarter hours) is 12:30 UTC.
    assert parse_smpp_time("261121143000008+", NOW) == datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
    assert parse_smpp_time("261121103000008-", NOW) == datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
    assert parse_smpp_time("261121123000500+", NOW) == datetime(
        2026, 11, 21, 12, 30, 0, 500_000, tzinfo=UTC
    )


def test_relative() -> None:
    assert parse_smpp_time("000001020304000R", NOW) == NOW + timedelta(
        days=1, hours=2, minutes=3, seconds=4
    )


@pytest.mark.parametrize("bad", ["2611211200", "261121120000000*", "261341120000000+", "x" * 16])
def test_malformed(bad: str) -> None:
    with pytest.raises(SmppTimeError):
        parse_smpp_time(bad, NOW)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)))
def test_format_round_trip(dt: datetime) -> None:
    dt = dt.replace(microsecond=dt.microsecond // 100_000 * 100_000, tzinfo=UTC)
    assert parse_smpp_time(format_smpp_time(dt), NOW) == dt
