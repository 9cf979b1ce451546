"""Every process's view of which accounts' days passed their daily_alarm
(CONTRACT §6 "Daily thresholds"). The insert that takes an account's count
to its alarm raises it once for all instances (migration 0014: the alert's
outbox row, then NOTIFY `smsrouter_alarm`); each instance hears it here and
sets its `smsrouter_account_alarm` gauge, as DirectoryWatch keeps the
accounts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from smsrouter.router.store.directory_watch import DirectoryWatch

NOTIFY_CHANNEL = "smsrouter_alarm"


@dataclass(frozen=True, slots=True)
class AlarmedDay:
    account_id: str
    day: date  # the account's day (its time zone)
    count: int  # messages counted that day so far


async def alarmed_days(conn: asyncpg.Connection) -> list[AlarmedDay]:
    """Accounts whose last counted day reached its daily_alarm."""
    rows = await conn.fetch(
        "SELECT id, counted_day, day_count FROM accounts"
        " WHERE daily_alarm > 0 AND counted_day IS NOT NULL AND day_count >= daily_alarm"
    )
    return [AlarmedDay(r["id"], r["counted_day"], r["day_count"]) for r in rows]


class AlarmWatch(DirectoryWatch):
    """`on_change` gets the list of AlarmedDay."""

    channel = NOTIFY_CHANNEL

    async def _load(self, conn: asyncpg.Connection) -> Any:
        return await alarmed_days(conn)
