"""Retention by time partition (CONTRACT §10): which daily partitions to
create and which to drop, given the partitions that exist and a clock.
Pure; the SQL that does it is `router/store/partitions.py`.

Every partitioned table (migration 0012) is split by RANGE into one
partition per UTC day, named ``<table>_pYYYYMMDD``, plus ``<table>_default``
for any row outside them (it should stay empty). A day's bounds are spelled
in the table's partition key:

- messages, carrier_submits and message_events by message id. Ids are
  UUIDv7 (`messages.new_message_id`): the top 48 bits are the Unix time in
  ms, so a day is the uuid range [day start ms << 80, next day ms << 80).
  A message's parts and events live in its own day's partitions and go
  with it; a look-up by message id prunes to one partition.
- outbox by id: an outbox id is its row's UTC day number << 47 plus a
  sequence number (migration 0012), so a look-up by id prunes too. Rows
  from before the migration (plain sequence numbers) are the day 1970-01-01.
- idempotency_keys by its `day` column: a key is written into its day's
  partition, and a repeat is refused by that day's unique index or by a
  look into the day before (CONTRACT §3: a key is kept 24 h; PostgreSQL has
  no unique index across partitions). A key taken in the last hour of its
  day is carried into the next one too (migration 0019).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

DAY = timedelta(days=1)
EPOCH = date(1970, 1, 1)

# Partitions made ahead of the day they hold: today and the next three.
# The daily chore keeps that many ahead; the DEFAULT partition catches what
# would come after (a clock jump, a daemon stopped for longer).
AHEAD_DAYS = 3

# CONTRACT §3: an Idempotency-Key is kept 24 h. The partition of a day holds
# keys taken that day and those carried from the day before's last hour:
# all are past their 24 h one day after the partition's range ended, and
# until then the next day's inserts look into it.
KEY_LIFETIME = timedelta(hours=24)

# Outbox ids: UTC day number << OUTBOX_DAY_SHIFT | sequence (mod 2**47). 47
# bits of sequence are 1.4e14 rows a day; 16 bits of day last to 2149.
OUTBOX_DAY_SHIFT = 47

# How a table's partition key spells a day.
UUID7 = "uuid7"  # message ids
OUTBOX_ID = "outbox_id"
DAY_COLUMN = "day"

# What decides when a table's day may go.
MESSAGE_DAYS = "message_days"  # [retention] days after the range, no message open
NOTIFICATION_DAYS = "notification_days"  # [retention] days after, no row pending
KEY_DAYS = "key_days"  # KEY_LIFETIME after the range


@dataclass(frozen=True, slots=True)
class PartitionedTable:
    name: str
    key: str  # UUID7 | OUTBOX_ID | DAY_COLUMN
    kept: str  # MESSAGE_DAYS | NOTIFICATION_DAYS | KEY_DAYS


MESSAGES = PartitionedTable("messages", UUID7, MESSAGE_DAYS)
CARRIER_SUBMITS = PartitionedTable("carrier_submits", UUID7, MESSAGE_DAYS)
MESSAGE_EVENTS = PartitionedTable("message_events", UUID7, MESSAGE_DAYS)
OUTBOX = PartitionedTable("outbox", OUTBOX_ID, NOTIFICATION_DAYS)
IDEMPOTENCY_KEYS = PartitionedTable("idempotency_keys", DAY_COLUMN, KEY_DAYS)

# A day's rows of a message go before the message itself: never a part or
# an event whose message is gone while they stay.
TABLES: tuple[PartitionedTable, ...] = (
    CARRIER_SUBMITS,
    MESSAGE_EVENTS,
    MESSAGES,
    OUTBOX,
    IDEMPOTENCY_KEYS,
)

_PARTITION_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")


def partition_name(table: PartitionedTable, day: date) -> str:
    return f"{table.name}_p{day:%Y%m%d}"


def default_partition(table: PartitionedTable) -> str:
    return f"{table.name}_default"


def day_of_partition(table: PartitionedTable, name: str) -> date | None:
    """The day a partition of `table` holds, from its name; None for any
    other name (the DEFAULT partition, a table attached by hand)."""
    match = _PARTITION_NAME.match(name)
    if match is None or match["table"] != table.name:
        return None
    try:
        return datetime.strptime(match["day"], "%Y%m%d").date()
    except ValueError:
        return None


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def uuid_floor(at: datetime) -> uuid.UUID:
    """The lowest UUIDv7 of the millisecond `at` (RFC 9562 §5.7): version
    and variant bits are below the 48 bits of time, so it is also the upper
    bound of every id made before `at`."""
    ms = int(at.timestamp() * 1000)
    return uuid.UUID(int=ms << 80)


def outbox_id_floor(day: date) -> int:
    return (day - EPOCH).days << OUTBOX_DAY_SHIFT


def day_of_outbox_id(outbox_id: int) -> date:
    return EPOCH + timedelta(days=outbox_id >> OUTBOX_DAY_SHIFT)


def bounds(table: PartitionedTable, day: date) -> tuple[str, str]:
    """FROM and TO of the day's partition, as SQL literals."""
    following = day + DAY
    if table.key == UUID7:
        low, high = uuid_floor(day_start(day)), uuid_floor(day_start(following))
        return f"'{low}'", f"'{high}'"
    if table.key == OUTBOX_ID:
        return str(outbox_id_floor(day)), str(outbox_id_floor(following))
    return f"'{day.isoformat()}'", f"'{following.isoformat()}'"


def days_to_create(existing: Iterable[date], today: date, ahead: int = AHEAD_DAYS) -> list[date]:
    """Today and the `ahead` days after it that have no partition yet."""
    have = set(existing)
    wanted = (today + timedelta(days=n) for n in range(ahead + 1))
    return [d for d in wanted if d not in have]


def kept_for(table: PartitionedTable, days: int) -> timedelta:
    """How long after its range ends a day of `table` is kept."""
    if table.kept == KEY_DAYS:
        return KEY_LIFETIME
    return timedelta(days=days)


def expired_days(existing: Iterable[date], now: datetime, kept: timedelta) -> list[date]:
    """The days whose range ended `kept` or longer before `now`, oldest first."""
    return sorted(d for d in set(existing) if day_start(d + DAY) + kept <= now)


@dataclass(frozen=True, slots=True)
class Drop:
    """A partition to drop."""

    table: PartitionedTable
    day: date

    @property
    def name(self) -> str:
        return partition_name(self.table, self.day)


def drops(
    existing: Mapping[str, Iterable[date]],
    now: datetime,
    days: int,
    *,
    open_message_days: Iterable[date] = (),
    pending_notification_days: Iterable[date] = (),
) -> list[Drop]:
    """The partitions to drop at `now`, in TABLES order, oldest day first.

    `existing`: the days that have a partition, by table name. A day of
    messages that still holds a message not ended is kept, and so are its
    parts and events (`open_message_days`); a day of the outbox that still
    holds a notification not done is kept (`pending_notification_days`).
    """
    held = {
        MESSAGE_DAYS: set(open_message_days),
        NOTIFICATION_DAYS: set(pending_notification_days),
        KEY_DAYS: set(),
    }
    out: list[Drop] = []
    for table in TABLES:
        for day in expired_days(existing.get(table.name, ()), now, kept_for(table, days)):
            if day not in held[table.kept]:
                out.append(Drop(table, day))
    return out


def candidates(
    existing: Mapping[str, Iterable[date]], now: datetime, days: int
) -> dict[str, list[date]]:
    """The expired days of messages and of the outbox: those whose rows must
    be looked at (a message open, a notification pending) before a drop."""
    return {
        MESSAGE_DAYS: expired_days(existing.get(MESSAGES.name, ()), now, timedelta(days=days)),
        NOTIFICATION_DAYS: expired_days(existing.get(OUTBOX.name, ()), now, timedelta(days=days)),
    }


def ledger_cutoff(now: datetime, ledger_days: int) -> datetime | None:
    """Ledger rows before this are folded into one carried-forward row per
    account (`store.ledger.fold_ledger`); None: kept for ever (0)."""
    if ledger_days <= 0:
        return None
    return now - timedelta(days=ledger_days)
