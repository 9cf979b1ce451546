"""What daily partitions (migration 0012, CONTRACT §10) cost the writer's
flushes: the same statements on two databases of one PostgreSQL, one
migrated up to 0011 (plain tables) and one fully (partitioned), in one run.

    python -m bench.partition_cost [--flushes 5000] [--batch 32] [--days 30]

Both databases first get `--days` past days of ended messages with their
parts (`--per-day` each), so that the partitioned one has the partitions of
a steady state under [retention] days = 30 and the plain one the same rows.
Then, interleaved in rounds so that both see the same machine, per database
and per flush:

* ``insert_keyed``: `writes.insert_messages` of `--batch` requests of one
  message each, every request with an Idempotency-Key (what HTTP clients
  send; a key is two rows when partitioned), charged by the reserve trigger;
* ``insert``: the same without keys (SMPP, or HTTP without a key);
* ``sent``: a PartSent per message (`carrier_submits` rows);
* ``receipts``: a CarrierReceipt per message, which looks its part up by
  carrier id: in every day's partition, the id saying nothing of the day.

For each: wall time per flush (mean, p50, p99, in ms) and the CPU of the
database backend per flush (from /proc/<pid>/stat), and the ratio of
partitioned to plain. A markdown table; `--json` for one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from bench.procs import CLOCK_TICKS
from smsrouter.embedded_pg import EmbeddedPostgres
from smsrouter.router import retention
from smsrouter.router.messages import Message, Status, new_message_id
from smsrouter.router.migrations import migration_files
from smsrouter.router.store import partitions, writes
from smsrouter.router.store.operations import (
    CarrierReceipt,
    IdempotentAnswer,
    InsertMessage,
    PartSent,
)

KINDS = ("insert_keyed", "insert", "sent", "receipts")
PLAIN, PARTITIONED = "plain (0011)", "partitioned (0012)"

# Past messages, ended, with their part: spread over a day in SQL.
_PAST = (
    "WITH m AS ("
    " SELECT (lpad(to_hex((extract(epoch FROM $1::timestamptz) * 1000)::bigint"
    "   + (random() * 86399999)::bigint), 12, '0') || '7'"
    "   || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid"
    "   AS id, n"
    " FROM generate_series(1, $2) AS n),"
    " i AS (INSERT INTO messages (id, account_id, ingress, sender, recipient, body, encoding,"
    "  data_coding, parts, price, status, created_at, done_at)"
    " SELECT id, 'bench', 'http', '12345', '+1415' || lpad((n % 10000000)::text, 7, '0'),"
    "  'past', 'gsm7', 0, 1, 0, 'delivered', $1, $1 FROM m)"
    " INSERT INTO carrier_submits (carrier, carrier_message_id, message_id, part, status,"
    "  submitted_at, done_at)"
    " SELECT 'sim', 'past-' || $1::date || '-' || n, id, 0, 'delivered', $1, $1 FROM m"
)


# The sent parts' statement before migration 0012 (its conflict target had
# no message id): what the plain database runs.
_PARTS_SENT_PLAIN = (
    "INSERT INTO carrier_submits (carrier, carrier_message_id, message_id, part, submitted_at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::int2[], $5::timestamptz[])"
    " ON CONFLICT (carrier, carrier_message_id, part) DO UPDATE"
    " SET message_id = EXCLUDED.message_id,"
    "     submitted_at = EXCLUDED.submitted_at, status = 'sent', done_at = NULL"
)


async def _parts_sent_plain(conn: asyncpg.Connection, ops: list[PartSent]) -> None:
    await conn.execute(
        _PARTS_SENT_PLAIN,
        [o.carrier for o in ops],
        [o.carrier_message_id for o in ops],
        [o.message_id for o in ops],
        [o.part for o in ops],
        [o.at for o in ops],
    )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Database:
    """One database of the server, one connection as the writer holds it."""

    def __init__(self, label: str, dsn: str) -> None:
        self.label = label
        self.dsn = dsn
        self.conn: asyncpg.Connection
        self.backend = 0
        self.wall: dict[str, list[float]] = {k: [] for k in KINDS}
        self.cpu: dict[str, float] = dict.fromkeys(KINDS, 0.0)

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.dsn)
        await self.conn.execute(writes.WRITER_SETTINGS)
        self.backend = await self.conn.fetchval("SELECT pg_backend_pid()")

    async def timed(self, kind: str, flush: Callable[[], Awaitable[Any]]) -> None:
        cpu = _cpu_seconds(self.backend)
        began = time.perf_counter()
        await flush()
        self.wall[kind].append(time.perf_counter() - began)
        self.cpu[kind] += _cpu_seconds(self.backend) - cpu


async def _migrate(dsn: str, upto: str | None) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for version, sql in migration_files():
            if upto is not None and version > upto:
                break
            async with conn.transaction():
                await conn.execute(sql)
        await conn.execute(
            "INSERT INTO accounts (id, credit, initial_credit, currency)"
            " VALUES ('bench', 1e12, 1e12, 'EUR')"
        )
    finally:
        await conn.close()


async def _fill(db: Database, days: int, per_day: int, partitioned: bool) -> None:
    today = datetime.now(UTC).date()
    for n in range(1, days + 1):
        day = today - timedelta(days=n)
        if partitioned:
            for table in retention.TABLES:
                await partitions.create_partition(db.conn, table, day)
        await db.conn.execute(_PAST, retention.day_start(day), per_day)
    await db.conn.execute("VACUUM ANALYZE")


def _message(n: int, now: datetime) -> Message:
    return Message(
        id=new_message_id(), account_id="bench", ingress="http", sender="12345",
        recipient=f"+1415{n % 10_000_000:07d}", body="partition cost", encoding="gsm7",
        data_coding=0, parts=1, price=Decimal("0.0062"), created_at=now,
    )  # fmt: skip


def _messages(batch: int, n: int) -> list[Message]:
    now = datetime.now(UTC)
    return [_message(n + i, now) for i in range(batch)]


async def _round(db: Database, flushes: int, batch: int, first: int) -> None:
    conn = db.conn
    for f in range(flushes):
        n = (first + f) * batch
        keyed = [
            InsertMessage([m], IdempotentAnswer("bench", f"k-{m.id}", b"h" * 32, 202, b"{}"))
            for m in _messages(batch, n)
        ]
        await db.timed("insert_keyed", functools.partial(writes.insert_messages, conn, keyed))
        plain = _messages(batch, n)
        await db.timed(
            "insert",
            functools.partial(writes.insert_messages, conn, [InsertMessage([m]) for m in plain]),
        )
        now = datetime.now(UTC)
        sent = [PartSent(m.id, 0, "sim", f"c-{m.id}", now) for m in plain]
        parts_sent = _parts_sent_plain if db.label == PLAIN else writes._parts_sent
        await db.timed("sent", functools.partial(parts_sent, conn, sent))
        receipts = [CarrierReceipt("sim", f"c-{m.id}", Status.DELIVERED, None, now) for m in plain]
        await db.timed("receipts", functools.partial(writes._receipts, conn, receipts))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _summary(db: Database, batch: int) -> dict[str, dict[str, float]]:
    out = {}
    for kind in KINDS:
        wall = sorted(db.wall[kind])
        count = len(wall)
        out[kind] = {
            "flushes": count,
            "mean_ms": _ms(statistics.fmean(wall)),
            "p50_ms": _ms(wall[count // 2]),
            "p99_ms": _ms(wall[min(count - 1, int(count * 0.99))]),
            "db_cpu_us_per_message": round(db.cpu[kind] / count / batch * 1e6, 2),
        }
    return out


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    server = EmbeddedPostgres(root / "pg", database="postgres")
    await server.start()
    try:
        admin = await asyncpg.connect(server.dsn)
        for name in ("plain", "partitioned"):
            await admin.execute(f"CREATE DATABASE {name}")
        await admin.close()
        dbs = [
            Database(PLAIN, server.dsn_for("plain")),
            Database(PARTITIONED, server.dsn_for("partitioned")),
        ]
        await _migrate(dbs[0].dsn, "0011_instances")
        await _migrate(dbs[1].dsn, None)
        for db in dbs:
            await db.open()
        filled = time.perf_counter()
        await _fill(dbs[0], args.days, args.per_day, partitioned=False)
        await _fill(dbs[1], args.days, args.per_day, partitioned=True)
        filled = time.perf_counter() - filled
        per_round = max(1, args.flushes // args.rounds)
        for r in range(args.rounds):
            # Alternate who goes first: neither always follows the other.
            for db in dbs if r % 2 == 0 else reversed(dbs):
                await _round(db, per_round, args.batch, r * per_round)
        partition_count = await dbs[1].conn.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'carrier_submits'::regclass"
        )
        results = {db.label: _summary(db, args.batch) for db in dbs}
        for db in dbs:
            await db.conn.close()
    finally:
        await server.stop()
    return {
        "flushes": per_round * args.rounds,
        "batch": args.batch,
        "past_days": args.days,
        "per_day": args.per_day,
        "carrier_submits_partitions": partition_count,
        "fill_seconds": round(filled, 1),
        "results": results,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "at": date.today().isoformat(),
    }


def markdown(out: dict[str, Any]) -> str:
    lines = [
        f"{out['flushes']} flushes of {out['batch']} per kind and database, after "
        f"{out['past_days']} past days of {out['per_day']} ended messages with their parts "
        f"({out['carrier_submits_partitions']} partitions of carrier_submits when partitioned).",
        "",
        "| flush | database | mean ms | p50 ms | p99 ms | DB CPU µs/message |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    results = out["results"]
    for kind in KINDS:
        for label in (PLAIN, PARTITIONED):
            r = results[label][kind]
            lines.append(
                f"| {kind} | {label} | {r['mean_ms']} | {r['p50_ms']} | {r['p99_ms']} "
                f"| {r['db_cpu_us_per_message']} |"
            )
        plain, part = results[PLAIN][kind], results[PARTITIONED][kind]
        lines.append(
            f"| {kind} | ratio | {part['mean_ms'] / plain['mean_ms']:.2f} | | | "
            f"{part['db_cpu_us_per_message'] / max(plain['db_cpu_us_per_message'], 1e-9):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flushes", type=int, default=5000, help="per kind and database")
    parser.add_argument("--batch", type=int, default=32, help="messages per flush")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--days", type=int, default=30, help="past days stored first")
    parser.add_argument("--per-day", type=int, default=20_000, help="messages per past day")
    parser.add_argument("--json", action="store_true", help="one JSON line instead")
    args = parser.parse_args()
    # As root the embedded PostgreSQL runs as its own user: its parent
    # directory must be readable by it (bench/router.py does the same).
    root = Path(tempfile.mkdtemp(prefix="smsrouter-partitions-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        out = asyncio.run(run(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out) if args.json else markdown(out))


if __name__ == "__main__":
    main()
