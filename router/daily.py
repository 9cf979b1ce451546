"""Daily thresholds: messages accepted per account per day (CONTRACT §6
"Daily thresholds"), in the account's time zone.

This process's own count, a check before the commit: counted when
admission lets a message through and uncounted when it is not stored after
all (the commit failed, a sender queue was full, its Idempotency-Key was
taken). The exact count is the database's, over every instance (migration
0014: the insert that stores the messages counts them on the account's row
and refuses to pass the limit); when it refuses, `reached` keeps this
process refusing too until the limit changes. The alarm is raised by the
database as well, once for all instances; `mark_alarmed` records it here
for the gauge. The day's counts are read from the database at start
(`start`), so that a restart does not reopen a day's limit. Pure: the
caller passes the day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(slots=True)
class _Day:
    day: date
    count: int = 0
    alarmed: bool = False
    limit: int = 0  # the limit of the last take
    full_at: int = 0  # the limit at which the database said the day is full


class DailyCounts:
    def __init__(self) -> None:
        self._days: dict[str, _Day] = {}

    def _today(self, account_id: str, day: date) -> _Day:
        current = self._days.get(account_id)
        if current is None or current.day != day:
            # A new day starts from zero, its alarm not yet raised.
            current = self._days[account_id] = _Day(day)
        return current

    def take(self, account_id: str, day: date, limit: int) -> bool:
        """Count one message of the account on `day`, unless that would pass
        `limit` (0: none); whether it was counted."""
        today = self._today(account_id, day)
        today.limit = limit
        if limit and (today.count >= limit or today.full_at == limit):
            return False
        today.count += 1
        return True

    def reached(self, account_id: str, day: date) -> None:
        """The database refused messages of `day` for the limit: other
        instances' messages filled it. Refused here too until the limit is
        changed (raised, the database decides again)."""
        today = self._days.get(account_id)
        if today is not None and today.day == day:
            today.full_at = today.limit

    def give_back(self, account_id: str, day: date, count: int = 1) -> None:
        """Uncount messages counted on `day` and then not stored."""
        today = self._days.get(account_id)
        if today is not None and today.day == day:
            today.count = max(0, today.count - count)

    def mark_alarmed(self, account_id: str, day: date) -> bool:
        """The database raised the alarm of `day`; whether it is news here."""
        today = self._today(account_id, day)
        if today.alarmed:
            return False
        today.alarmed = True
        return True

    def count(self, account_id: str, day: date) -> int:
        today = self._days.get(account_id)
        return today.count if today is not None and today.day == day else 0

    def alarmed(self, account_id: str, day: date) -> bool:
        today = self._days.get(account_id)
        return today is not None and today.day == day and today.alarmed

    def start(self, account_id: str, day: date, count: int, alarm: int) -> None:
        """The count of the current day found in the database at start; an
        alarm already passed that day is not raised again."""
        self._days[account_id] = _Day(day, count, alarmed=bool(alarm) and count >= alarm)

    def catch_up(self, account_id: str, day: date, stored: int, alarm: int) -> None:
        """The day's count read from the database for an account that got
        its thresholds while the router ran: what it counted meanwhile
        stays, the stored count is the floor."""
        today = self._today(account_id, day)
        today.count = max(today.count, stored)
        today.alarmed = today.alarmed or (bool(alarm) and stored >= alarm)
