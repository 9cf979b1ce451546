"""Daily partitions (migration 0012, CONTRACT §10): made ahead, dropped once
expired, the DEFAULT partitions watched. What to make and drop is decided
by `router/retention.py`; this is the SQL.

Every change of a partitioned table's partitions takes an ACCESS EXCLUSIVE
lock on it (DETACH ... CONCURRENTLY is refused while a DEFAULT partition
exists), so each runs in a transaction of its own under a short
`lock_timeout`: waiting for the lock would queue every flush behind it.
A statement that times out is tried again a little later, and a run that
could not get its lock leaves the rest to the next run. A partition is
detached first and dropped after, so that the removal of its files never
happens under the parent's lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import asyncpg
import structlog

from smsrouter.router import retention
from smsrouter.router.retention import (
    MESSAGE_DAYS,
    MESSAGES,
    NOTIFICATION_DAYS,
    OUTBOX,
    TABLES,
    PartitionedTable,
)
from smsrouter.router.store.ledger import fold_ledger

log = structlog.get_logger("retention")

# How long a change of partitions waits for its table's lock before it
# lets the flushes queued behind it go, and tries again.
LOCK_TIMEOUT_MS = 200
LOCK_TRIES = 10
LOCK_RETRY_SECONDS = 1.0

# Only one process changes partitions at a time (CONTRACT §9: several
# instances share one database); the others skip their run.
_LOCK_ID = 0x5353_5250  # "SSRP"

# A message's stored status stays 'accepted' or 'queued' until it ends
# (router/store/writes.py leaves the row alone until then): the predicate of
# the messages_pending index (migration 0001), so the check is an index probe.
_OPEN_STORED = "('accepted', 'queued')"

# A statement of retention that may run long (dropping a big day's files,
# folding a big ledger, moving rows out of a DEFAULT partition) is not cut
# off by the pool's command_timeout.
LONG_STATEMENT_SECONDS = 3600.0

# Rows counted at most in a DEFAULT partition: it should hold none.
_DEFAULT_ROWS_LIMIT = 10_000


@dataclass
class RetentionRun:
    """What one run did."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    # Expired partitions kept, and why.
    kept: dict[str, str] = field(default_factory=dict)
    # Rows in each non-empty DEFAULT partition (at most _DEFAULT_ROWS_LIMIT).
    default_rows: dict[str, int] = field(default_factory=dict)
    ledger_rows_folded: int = 0
    # False when another process held the retention lock: nothing was done.
    ran: bool = True
    # Seconds each detach took, from the wait for its table's exclusive
    # lock to its commit (the flushes wait at most that long for it).
    locks_held: list[float] = field(default_factory=list)


async def existing_days(conn: asyncpg.Connection) -> dict[str, list[date]]:
    """The days each partitioned table has a partition for, by table name."""
    rows = await conn.fetch(
        "SELECT parent.relname AS parent, child.relname AS child"
        " FROM pg_inherits i"
        " JOIN pg_class parent ON parent.oid = i.inhparent"
        " JOIN pg_class child ON child.oid = i.inhrelid"
        " WHERE parent.relname = ANY($1::text[])"
        "   AND parent.relnamespace = current_schema()::regnamespace",
        [t.name for t in TABLES],
    )
    by_name = {t.name: t for t in TABLES}
    days: dict[str, list[date]] = {t.name: [] for t in TABLES}
    for r in rows:
        day = retention.day_of_partition(by_name[r["parent"]], r["child"])
        if day is not None:
            days[r["parent"]].append(day)
    for listed in days.values():
        listed.sort()
    return days


async def _with_lock_timeout(conn: asyncpg.Connection, statements: Sequence[str]) -> float:
    """Run `statements` in one transaction that waits at most
    LOCK_TIMEOUT_MS for each lock, trying again a few times; the seconds
    from its first statement to its commit (what it held its locks)."""
    for attempt in range(LOCK_TRIES):
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
                began = time.perf_counter()
                for statement in statements:
                    await conn.execute(statement, timeout=LONG_STATEMENT_SECONDS)
            return time.perf_counter() - began
        except asyncpg.LockNotAvailableError:
            if attempt == LOCK_TRIES - 1:
                raise
        await asyncio.sleep(LOCK_RETRY_SECONDS)
    raise AssertionError("unreachable")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def create_partition(conn: asyncpg.Connection, table: PartitionedTable, day: date) -> bool:
    """Make the day's partition of `table`; False when it existed already.

    Rows of that day in the DEFAULT partition (written while the day had no
    partition) move into the new one, in the transaction that attaches it.
    """
    name = retention.partition_name(table, day)
    low, high = retention.bounds(table, day)
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
    if exists:
        return False
    try:
        await _with_lock_timeout(
            conn,
            [
                f"CREATE TABLE IF NOT EXISTS {_ident(name)} PARTITION OF {_ident(table.name)}"
                f" FOR VALUES FROM ({low}) TO ({high})"
            ],
        )
        return True
    except asyncpg.CheckViolationError:
        pass  # the DEFAULT partition holds rows of the day
    await _adopt_from_default(conn, table, name, low, high)
    return True


async def _adopt_from_default(
    conn: asyncpg.Connection, table: PartitionedTable, name: str, low: str, high: str
) -> None:
    """Make partition `name` out of the DEFAULT partition's rows in its range."""
    default = _ident(retention.default_partition(table))
    key = _ident(await _partition_key(conn, table))
    moved = await _count_moved(conn, default, key, low, high)
    await _with_lock_timeout(
        conn,
        [
            # No row of the range may reach the DEFAULT partition between
            # the move and the attach.
            f"LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE",
            f"CREATE TABLE {_ident(name)} (LIKE {_ident(table.name)} INCLUDING DEFAULTS"
            " INCLUDING CONSTRAINTS INCLUDING STORAGE)",
            f"WITH moved AS (DELETE FROM {default} WHERE {key} >= {low} AND {key} < {high}"
            f" RETURNING *) INSERT INTO {_ident(name)} SELECT * FROM moved",
            f"ALTER TABLE {_ident(table.name)} ATTACH PARTITION {_ident(name)}"
            f" FOR VALUES FROM ({low}) TO ({high})",
        ],
    )
    log.warning("partition made of rows of the default partition", partition=name, rows=moved)


async def _partition_key(conn: asyncpg.Connection, table: PartitionedTable) -> str:
    column: str = await conn.fetchval(
        "SELECT a.attname FROM pg_partitioned_table p"
        " JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]"
        " WHERE p.partrelid = $1::regclass",
        table.name,
    )
    return column


async def _count_moved(
    conn: asyncpg.Connection, default: str, key: str, low: str, high: str
) -> int:
    count: int = await conn.fetchval(
        f"SELECT count(*) FROM {default} WHERE {key} >= {low} AND {key} < {high}"
    )
    return count


async def drop_partition(
    conn: asyncpg.Connection,
    table: PartitionedTable,
    day: date,
    locks_held: list[float] | None = None,
) -> bool:
    """Detach the day's partition (a short lock on the table), then drop it;
    False when there was none. The seconds the lock was held are added to
    `locks_held`."""
    name = retention.partition_name(table, day)
    attached = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1)"
        " AND inhparent = $2::regclass)",
        name,
        table.name,
    )
    if attached:
        held = await _with_lock_timeout(
            conn, [f"ALTER TABLE {_ident(table.name)} DETACH PARTITION {_ident(name)}"]
        )
        if locks_held is not None:
            locks_held.append(held)
    elif await conn.fetchval("SELECT to_regclass($1) IS NULL", name):
        return False
    await conn.execute(f"DROP TABLE IF EXISTS {_ident(name)}", timeout=LONG_STATEMENT_SECONDS)
    return True


async def open_message_days(conn: asyncpg.Connection, days: Iterable[date]) -> dict[date, int]:
    """Of these days of messages, those holding messages not ended, with how
    many (counted up to 1,000)."""
    held: dict[date, int] = {}
    for day in days:
        name = _ident(retention.partition_name(MESSAGES, day))
        count = await conn.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM {name}"
            f" WHERE status IN {_OPEN_STORED} LIMIT 1000) AS open"
        )
        if count:
            held[day] = count
    return held


async def pending_notification_days(
    conn: asyncpg.Connection, days: Iterable[date]
) -> dict[date, int]:
    """Of these days of the outbox, those holding notifications not done."""
    held: dict[date, int] = {}
    for day in days:
        name = _ident(retention.partition_name(OUTBOX, day))
        count = await conn.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM {name} WHERE done_at IS NULL LIMIT 1000) AS p"
        )
        if count:
            held[day] = count
    return held


async def default_rows(conn: asyncpg.Connection) -> dict[str, int]:
    """The DEFAULT partitions that hold rows, with how many (up to a limit)."""
    found: dict[str, int] = {}
    for table in TABLES:
        name = retention.default_partition(table)
        if await conn.fetchval("SELECT to_regclass($1) IS NULL", name):
            continue
        count = await conn.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM {_ident(name)} LIMIT {_DEFAULT_ROWS_LIMIT}) AS d"
        )
        if count:
            found[name] = count
    return found


async def ensure_partitions(conn: asyncpg.Connection, today: date) -> list[str]:
    """Today's partitions and those of the next AHEAD_DAYS days, made where
    missing; the names made."""
    made: list[str] = []
    existing = await existing_days(conn)
    for table in TABLES:
        for day in retention.days_to_create(existing[table.name], today):
            if await create_partition(conn, table, day):
                made.append(retention.partition_name(table, day))
    return made


async def prepare_partitions(conn: asyncpg.Connection, today: date) -> list[str]:
    """At start, before any message is taken: today's partitions and those
    of the next days, made where missing (after a daemon stopped for days,
    rows would otherwise go to the DEFAULT partitions until the first run)."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        return await ensure_partitions(conn, today)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def drop_expired(
    conn: asyncpg.Connection, now: datetime, days: int, run: RetentionRun
) -> None:
    """Drop the partitions expired at `now` (retention.drops), keeping a day
    that holds a message not ended or a notification not done."""
    existing = await existing_days(conn)
    candidates = retention.candidates(existing, now, days)
    open_days = await open_message_days(conn, candidates[MESSAGE_DAYS])
    pending_days = await pending_notification_days(conn, candidates[NOTIFICATION_DAYS])
    for day, count in open_days.items():
        name = retention.partition_name(MESSAGES, day)
        run.kept[name] = f"{count} messages not ended"
    for day, count in pending_days.items():
        name = retention.partition_name(OUTBOX, day)
        run.kept[name] = f"{count} notifications not done"
    for drop in retention.drops(
        existing, now, days, open_message_days=open_days, pending_notification_days=pending_days
    ):
        if await drop_partition(conn, drop.table, drop.day, run.locks_held):
            run.dropped.append(drop.name)


async def run_retention(
    conn: asyncpg.Connection,
    now: datetime,
    *,
    days: int,
    ledger_days: int = 0,
    create: bool = True,
) -> RetentionRun:
    """One run of retention as if the time were `now`: partitions made ahead
    (`create`), expired ones dropped, the ledger folded ([retention]
    ledger_days), the DEFAULT partitions looked at. Skipped (`ran` False)
    while another process runs it."""
    run = RetentionRun()
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_ID):
        run.ran = False
        return run
    try:
        if create:
            run.created = await ensure_partitions(conn, now.astimezone(UTC).date())
        await drop_expired(conn, now, days, run)
        cutoff = retention.ledger_cutoff(now, ledger_days)
        if cutoff is not None:
            run.ledger_rows_folded = await fold_ledger(conn, cutoff, LONG_STATEMENT_SECONDS)
        run.default_rows = await default_rows(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return run


def log_run(run: RetentionRun) -> None:
    """What a run did, as the daemon's log tells it."""
    if not run.ran:
        return
    if run.created:
        log.info("partitions made", partitions=run.created)
    if run.dropped:
        longest = max(run.locks_held, default=0.0)
        log.info(
            "expired partitions dropped",
            partitions=run.dropped,
            longest_detach_ms=round(longest * 1000, 1),
        )
    for name, why in run.kept.items():
        log.warning("expired partition kept", partition=name, reason=why)
    for name, rows in run.default_rows.items():
        # Rows outside every daily partition: a clock far off, or ids not
        # UUIDv7. Never dropped by retention; moved out when their day's
        # partition is made.
        log.warning("default partition holds rows", partition=name, rows=rows)
    if run.ledger_rows_folded:
        log.info("ledger rows folded", rows=run.ledger_rows_folded)
