"""SMPP 3.4 §7.1.1 time format: absolute and relative times.

``YYMMDDhhmmsstnnp``: 16 characters, where ``t`` is tenths of a second,
``nn`` the offset from UTC in quarter hours and ``p`` is ``+``/``-`` for an
absolute time or ``R`` for a time relative to now (then YY..ss are a
duration). An empty field means "not given".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_FORMAT = re.compile(r"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d)(\d{2})([-+R])")


class SmppTimeError(ValueError):
    """Not an SMPP 3.4 §7.1.1 time."""


def parse_smpp_time(value: str, now: datetime) -> datetime | None:
    """The UTC instant an SMPP time stands for; None for an empty field."""
    if not value:
        return None
    m = _FORMAT.fullmatch(value)
    if not m:
        raise SmppTimeError(f"not an SMPP time: {value!r}")
    yy, mo, dd, hh, mi, ss, tenth, nn, p = m.groups()
    if p == "R":
        # §7.1.1.2: relative; years and months are taken as 365 and 30 days,
        # as SMSCs do (the spec gives no calendar for a duration).
        days = int(yy) * 365 + int(mo) * 30 + int(dd)
        return now + timedelta(
            days=days, hours=int(hh), minutes=int(mi), seconds=int(ss) + int(tenth) / 10
        )
    try:
        local = datetime(
            2000 + int(yy), int(mo), int(dd), int(hh), int(mi), int(ss), int(tenth) * 100_000
        )
    except ValueError as exc:
        raise SmppTimeError(f"not a date: {value!r}") from exc
    offset = timedelta(minutes=15 * int(nn))
    # The time is local to an offset of nn quarter hours ahead (+) or behind
    # (-) UTC: UTC = local - offset for '+'.
    utc = local - offset if p == "+" else local + offset
    return utc.replace(tzinfo=UTC)


def format_smpp_time(dt: datetime) -> str:
    """An absolute SMPP time in UTC ("YYMMDDhhmmss" + tenths + "00+")."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%y%m%d%H%M%S") + str(dt.microsecond // 100_000) + "00+"
