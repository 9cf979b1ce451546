"""PostgreSQL's group-commit ceiling with the router's own write pattern
(issue 19, "the road to 100,000 msg/s").

    python -m bench.pg_ceiling [--writers 4] [--batch 32] [--seconds 20]
        [--synchronous-commit on|off] [--accounts 1] [--warmup 2] [--dsn DSN]
        [--wal-breakdown]

No router runs: this process drives the router's own store code
(`router/store/writes.py`) from `--writers` connections, each as fast as
the server answers, so that what tops out is PostgreSQL. Every message
costs the writes scenario 1 makes for it, through the real statements:

1. stored: `insert_messages`, one binary COPY of `--batch` requests of one
   message each, every one with its Idempotency-Key (the insert's trigger,
   migration 0005, takes the keys and debits the account with a ledger
   row); a statement of its own, as the ingest writer commits it;
2. sent: a `PartSent` under the sender's shard lease and epoch (the fenced
   statement, CONTRACT §9);
3. ended: its `CarrierReceipt` (delivered), which ends the message and
   returns its webhook's body, and the notification batch row (migration
   0018) that `OutboxPlanner` inserts for the flush in the same
   transaction;
4. its notification delivered: the flush's batch settled (`BatchSettled`,
   the row deleted).

Steps 2-4 go through `writes.apply` in one transaction per round, as the
status writer commits them: a round's flush carries the parts sent of the
batch just stored, the receipts of the batch before it and the finished
notifications of the one before that. So a round is two commits and, once
the pipe is full, `--batch` messages through their whole life. Scenario 1
has one sender number (a short code) and one account; `--accounts N`
spreads the writers over N accounts (writer w stores for account w mod N):
the insert's trigger updates its account's row, whose lock is held to the
commit, so writers of one account never share a WAL flush.

Without `--dsn` a fresh embedded PostgreSQL (`smsrouter/embedded_pg.py`)
runs in a temporary directory and is stopped at the end; with `--dsn` the
database given is migrated and written to (use a scratch one). Either
way the database is migrated with `apply_migrations`.

After `--warmup` seconds the figures are read over `--seconds`, while the
writers keep going, and printed as one JSON line:

* ``msg_per_s``: messages through their whole life (step 4 committed);
* ``flushes_per_s``: commits (two per round);
* ``pg_cpu_ms_per_msg``: utime + stime of the postmaster and every process
  under it (/proc, exited children included), only when the server runs
  on this machine;
* ``driver_cpu_ms_per_msg``: this process's own CPU (asyncpg encoding and
  decoding, building the operations): not PostgreSQL's, and not the
  router's either, which does much more per message;
* ``wal_bytes_per_msg`` (pg_current_wal_lsn() before and after),
  ``wal_records_per_msg`` and ``wal_fpi_per_msg`` (pg_stat_wal),
  ``commits_per_wal_fsync`` (pg_stat_io: how many commits each fsync of
  the WAL carried, group commit at work);
* ``kept_bytes_per_msg``: the size of the tables a message stays in
  until retention (its row, its parts', its key's; indexes included) over
  the messages stored, at the end;
* with ``--wal-breakdown``, ``wal_by_record``: the window's WAL by record
  type per message (pg_walinspect, read once the window is over);
* the machine: cores, load average, how busy its cores were and how much
  of that was neither PostgreSQL nor this process (others on a shared
  machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg

from bench.procs import MachineCpu, cpu_seconds_of, machine_cpu, process_tree
from smsrouter.embedded_pg import EmbeddedPostgres
from smsrouter.router.messages import Message, Status, new_message_id
from smsrouter.router.migrations import apply_migrations
from smsrouter.router.notifications import OutboxPlanner
from smsrouter.router.shards import shard_of
from smsrouter.router.store import leases
from smsrouter.router.store.operations import (
    BatchSettled,
    CarrierReceipt,
    Finished,
    IdempotentAnswer,
    InsertMessage,
    Notification,
    Operation,
    PartSent,
)
from smsrouter.router.store.writes import WRITER_SETTINGS, apply, insert_messages

# Scenario 1's traffic (bench/router.py, sims/http_load.py): one short code,
# distinct US recipients, the load client's text, a callback URL on every
# request, the benchmark's price.
SENDER = "12345"
TEXT = "smsrouter load test"
PRICE = Decimal("0.0062")
CALLBACK_URL = "http://127.0.0.1:41234/callbacks"
CARRIER = "sim"
INSTANCE = "pg-ceiling"
CREDIT = "1000000000000"
# The dispatcher's default `[webhooks] retry_hours`.
RETRY_HOURS = 72.0
# The sender's lease is taken once for the whole run: nothing renews it.
LEASE_SECONDS = 24 * 3600.0

# The arithmetic of the results: a primary of this many cores, of which this
# share is PostgreSQL's to use (the rest: autovacuum, checkpoints, WAL
# senders, the operating system, headroom).
PRIMARY_CORES = 32
USABLE_SHARE = 0.75
TARGET_MSG_PER_S = 100_000


@dataclass(frozen=True, slots=True)
class Options:
    writers: int = 4
    batch: int = 32
    seconds: float = 20.0
    warmup: float = 2.0
    synchronous_commit: str = "on"
    accounts: int = 1
    wal_breakdown: bool = False


def account_of(writer: int, accounts: int) -> str:
    """The account writer `writer` stores for: one account (scenario 1), or
    the writers spread over `accounts` of them."""
    return "bench" if accounts <= 1 else f"bench-{writer % accounts}"


def account_ids(accounts: int) -> list[str]:
    return sorted({account_of(w, accounts) for w in range(max(accounts, 1))})


# -- what a request stores ----------------------------------------------------


class Traffic:
    """Scenario 1's requests for one writer: one recipient each, each with
    its own Idempotency-Key, whose 202 is made again from its message on a
    repeat (not stored)."""

    def __init__(self, writer: int, account_id: str) -> None:
        self.writer = writer
        self.account_id = account_id
        self._request = 0
        self._submit = 0
        self._key_prefix = f"{uuid.uuid4().hex[:16]}-{writer}-"

    def requests(self, n: int) -> list[InsertMessage]:
        now = datetime.now(UTC)
        out = []
        for _ in range(n):
            self._request += 1
            # Distinct recipients, as the benchmark's load client sends.
            recipient = f"+1415{(self.writer * 1_000_000 + self._request) % 10_000_000:07d}"
            message = Message(
                new_message_id(), self.account_id, "http", SENDER, recipient, TEXT, "gsm7", 0,
                1, PRICE, now, callback_url=CALLBACK_URL,
            )  # fmt: skip
            body = (
                b'{"messages":[{"id":"%s","to":"%s","status":"accepted","parts":1,'
                b'"encoding":"gsm7","price":"0.0062"}],"rejected":[]}'
                % (str(message.id).encode(), recipient.encode())
            )
            request = b'{"from":"%s","to":"%s","text":"%s","callback_url":"%s"}' % (
                SENDER.encode(), recipient.encode(), TEXT.encode(), CALLBACK_URL.encode(),
            )  # fmt: skip
            answer = IdempotentAnswer(
                self.account_id,
                f"{self._key_prefix}{self._request}",
                hashlib.sha256(request).digest(),
                202,
                body,
                from_message=True,  # one recipient, nothing rejected: as HTTP marks it
            )
            out.append(InsertMessage([message], answer))
        return out

    def carrier_id(self) -> str:
        """A carrier message id as the simulator gives them (hex), unique
        across writers."""
        self._submit += 1
        return f"{self.writer << 40 | self._submit:x}"


# -- one writer -----------------------------------------------------------------


class MismatchError(Exception):
    """A write did not do what the router's would have: the figures would
    measure something else."""


@dataclass(slots=True)
class Counters:
    completed: int = 0  # messages whose batch's BatchSettled committed
    flushes: int = 0  # commits
    # Wall seconds spent in each kind of commit, statements included.
    insert_seconds: float = 0.0
    status_seconds: float = 0.0


class Writer:
    """One connection doing rounds: a COPY of a batch of new messages (its
    own commit), then one status flush through `writes.apply` with the
    parts sent of that batch, the receipts of the previous one and the
    outbox rows done of the one before (CONTRACT §3: the final status and
    its webhook's outbox row commit together)."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        traffic: Traffic,
        batch: int,
        shard: int,
        epoch: int,
        counters: Counters,
    ) -> None:
        self.conn = conn
        self.traffic = traffic
        self.batch = batch
        self.shard = shard
        self.epoch = epoch
        self.counters = counters
        self.planner = OutboxPlanner(RETRY_HOURS)
        self._receipts: list[CarrierReceipt] = []  # parts sent last round
        self._done: list[BatchSettled] = []  # batches planned last round
        self._notified = 0  # their notifications

    async def round(self) -> None:
        inserts = self.traffic.requests(self.batch)
        started = time.perf_counter()
        stored = await insert_messages(self.conn, inserts)
        self.counters.insert_seconds += time.perf_counter() - started
        if any(r is not None for r in stored):
            raise MismatchError(f"the insert did not store every message: {stored!r}")
        self.counters.flushes += 1
        now = datetime.now(UTC)
        sent: list[Operation] = []
        receipts: list[CarrierReceipt] = []
        for op in inserts:
            cmid = self.traffic.carrier_id()
            sent.append(PartSent(op.messages[0].id, 0, CARRIER, cmid, now, self.shard, self.epoch))
            receipts.append(CarrierReceipt(CARRIER, cmid, Status.DELIVERED, None, now))
        ops: list[Operation] = [*sent, *self._receipts, *self._done]
        started = time.perf_counter()
        created = await self._flush(ops)
        self.counters.status_seconds += time.perf_counter() - started
        self.counters.flushes += 1
        self.counters.completed += self._notified
        if len(created) != len(self._receipts):
            raise MismatchError(
                f"{len(self._receipts)} messages ended, {len(created)} notifications planned"
            )
        self._receipts = receipts
        self._done = [BatchSettled(b) for b in dict.fromkeys(n.batch for n in created)]
        self._notified = len(created)

    async def _flush(self, ops: list[Operation]) -> list[Notification]:
        batch: list[tuple[Operation, Any]] = [(op, None) for op in ops]
        by_class: dict[type, list[int]] = {}
        for i, op in enumerate(ops):
            by_class.setdefault(type(op), []).append(i)
        results: list[Any] = [None] * len(ops)
        created: list[Notification] = []
        async with self.conn.transaction():
            await apply(self.conn, batch, by_class, results, self.planner, created)
        for i in by_class.get(PartSent, ()):
            if results[i] is not None:
                raise MismatchError(f"a part sent was not recorded plainly: {results[i]!r}")
        for i in by_class.get(CarrierReceipt, ()):
            if not isinstance(results[i], Finished):
                raise MismatchError(f"a receipt did not end its message: {results[i]!r}")
        return created


# -- the database and its server -------------------------------------------------


async def prepare(conn: asyncpg.Connection, accounts: int) -> tuple[int, int]:
    """Migrate, open the accounts with ample credit, register this driver
    as an instance and take its sender's shard; (shard, epoch)."""
    await apply_migrations(conn)
    await conn.executemany(
        "INSERT INTO accounts (id, credit, initial_credit, currency, credit_limit)"
        " VALUES ($1, $2::numeric, $2::numeric, 'EUR', 0)"
        " ON CONFLICT (id) DO UPDATE SET credit = EXCLUDED.credit",
        [(a, CREDIT) for a in account_ids(accounts)],
    )
    incarnation = uuid.uuid4()
    if not await leases.register(conn, INSTANCE, incarnation, 0.0):
        raise SystemExit(f"instance {INSTANCE} is registered and alive")
    shard = shard_of(SENDER)
    # Taken over whoever held it: this database is the bench's.
    await conn.execute("UPDATE shard_leases SET expires_at = '-infinity' WHERE shard = $1", shard)
    claimed = await leases.claim(conn, INSTANCE, [shard], LEASE_SECONDS)
    if not claimed:
        raise SystemExit(f"could not take shard {shard}")
    return shard, claimed[0].epoch


async def postmaster_of(conn: asyncpg.Connection) -> int | None:
    """The postmaster's PID when the server runs on this machine (None
    when /proc does not know it, as for a server elsewhere)."""
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    data_dir = await conn.fetchval("SELECT current_setting('data_directory')")
    return parent_in(int(backend), str(data_dir))


def parent_in(pid: int, data_dir: str) -> int | None:
    """The parent of this backend, if it is a postmaster working in
    `data_dir` (a backend of another server with the same PID would have
    another parent)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        ppid = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")))
        # The postmaster's working directory is its data directory.
        if Path(f"/proc/{ppid}/cwd").resolve() != Path(data_dir).resolve():
            return None
    except (OSError, StopIteration, ValueError):
        return None
    return ppid


class Snapshot(NamedTuple):
    at: float  # monotonic seconds
    completed: int
    flushes: int
    insert_seconds: float
    status_seconds: float
    pg_cpu: float | None  # seconds
    driver_cpu: float  # seconds
    machine: MachineCpu
    wal_lsn: int  # bytes
    wal_records: int | None
    wal_fpi: int | None
    wal_fsyncs: int | None
    checkpoints: int | None


async def _stat(conn: asyncpg.Connection, sql: str) -> Any:
    """A statistics view's figure, None where this server lacks it."""
    try:
        return await conn.fetchval(sql)
    except asyncpg.PostgresError:
        return None


async def snapshot(
    conn: asyncpg.Connection, counters: Sequence[Counters], postmaster: int | None
) -> Snapshot:
    # The writers' backends report their statistics (pg_stat_wal,
    # pg_stat_io) at most once a second: those figures trail by up to a
    # second, at both ends of the window alike.
    at = time.monotonic()
    pg_cpu = cpu_seconds_of(process_tree([postmaster])) if postmaster is not None else None
    return Snapshot(
        at=at,
        completed=sum(c.completed for c in counters),
        flushes=sum(c.flushes for c in counters),
        insert_seconds=sum(c.insert_seconds for c in counters),
        status_seconds=sum(c.status_seconds for c in counters),
        pg_cpu=pg_cpu,
        driver_cpu=time.process_time(),
        machine=machine_cpu(),
        wal_lsn=int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")),
        wal_records=await _stat(conn, "SELECT wal_records FROM pg_stat_wal"),
        wal_fpi=await _stat(conn, "SELECT wal_fpi FROM pg_stat_wal"),
        # PostgreSQL 18 counts WAL fsyncs in pg_stat_io.
        wal_fsyncs=await _stat(
            conn, "SELECT sum(fsyncs)::int8 FROM pg_stat_io WHERE object = 'wal'"
        ),
        checkpoints=await _stat(conn, "SELECT num_timed + num_requested FROM pg_stat_checkpointer"),
    )


# -- the figures -------------------------------------------------------------------


def _per(value: float | None, n: float | None, scale: float = 1.0, digits: int = 3) -> float | None:
    return None if value is None or n is None or n <= 0 else round(value * scale / n, digits)


def _delta(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else b - a


def figures(before: Snapshot, after: Snapshot, cores: int) -> dict[str, Any]:
    """Rates and costs per message over the window between two snapshots."""
    seconds = after.at - before.at
    done = after.completed - before.completed
    flushes = after.flushes - before.flushes
    pg_cpu = None if before.pg_cpu is None or after.pg_cpu is None else after.pg_cpu - before.pg_cpu
    driver_cpu = after.driver_cpu - before.driver_cpu
    machine_busy = after.machine.busy - before.machine.busy
    machine_total = after.machine.total - before.machine.total
    others = None if pg_cpu is None else machine_busy - pg_cpu - driver_cpu
    fsyncs = _delta(before.wal_fsyncs, after.wal_fsyncs)
    wal_bytes = after.wal_lsn - before.wal_lsn
    # Half the flushes are inserts, half status flushes.
    return {
        "seconds": round(seconds, 2),
        "messages": done,
        "msg_per_s": _per(done, seconds, digits=1),
        "flushes_per_s": _per(flushes, seconds, digits=1),
        "messages_per_flush": _per(done, flushes, digits=1),
        "insert_commit_ms": _per(
            after.insert_seconds - before.insert_seconds, flushes / 2, 1000.0, 2
        ),
        "status_commit_ms": _per(
            after.status_seconds - before.status_seconds, flushes / 2, 1000.0, 2
        ),
        "pg_cpu_ms_per_msg": _per(pg_cpu, done, 1000.0, 4),
        "driver_cpu_ms_per_msg": _per(driver_cpu, done, 1000.0, 4),
        "pg_cores_busy": _per(pg_cpu, seconds, digits=2),
        "driver_cores_busy": _per(driver_cpu, seconds, digits=2),
        "machine_busy_share": _per(machine_busy, machine_total, digits=3),
        # Cores kept busy by neither PostgreSQL nor this process.
        "others_cores_busy": _per(others, seconds, digits=2),
        "wal_bytes_per_msg": _per(wal_bytes, done, digits=0),
        "wal_mb_per_s": _per(wal_bytes, seconds, 1e-6, 2),
        "wal_records_per_msg": _per(_delta(before.wal_records, after.wal_records), done, digits=2),
        "wal_fpi_per_msg": _per(_delta(before.wal_fpi, after.wal_fpi), done, digits=3),
        "wal_fsyncs_per_s": _per(fsyncs, seconds, digits=1),
        "commits_per_wal_fsync": _per(flushes, fsyncs, digits=2),
        "checkpoints": _delta(before.checkpoints, after.checkpoints),
        "cores": cores,
    }


def ceiling(
    pg_ms_per_msg: float,
    *,
    cores: int = PRIMARY_CORES,
    usable: float = USABLE_SHARE,
    target: float = TARGET_MSG_PER_S,
) -> dict[str, float]:
    """What a primary takes at this much PostgreSQL CPU per message, if
    CPU is what binds: one core takes 1000/X msg/s; `cores` of which
    `usable` are PostgreSQL's take that many times more; `target` needs
    that many such cores, or primaries."""
    per_core = 1000.0 / pg_ms_per_msg
    primary = per_core * cores * usable
    return {
        "msg_per_s_per_core": round(per_core),
        "msg_per_s_per_primary": round(primary),
        "cores_for_target": round(target / per_core / usable, 1),
        "primaries_for_target": round(target / primary, 2),
    }


# -- the run -----------------------------------------------------------------------


async def connect_writer(dsn: str, synchronous_commit: str) -> asyncpg.Connection:
    # Each connection names its instance, as the daemon's pool does
    # (migration 0011: the outbox rows it stores are its own), and takes
    # the writer's session settings (writes.WRITER_SETTINGS).
    conn = await asyncpg.connect(
        dsn,
        server_settings={"smsrouter.instance": INSTANCE, "synchronous_commit": synchronous_commit},
    )
    await conn.execute(WRITER_SETTINGS)
    return conn


async def drive(dsn: str, options: Options) -> dict[str, Any]:
    """Prepare the database, run the writers, return the figures."""
    control = await asyncpg.connect(dsn)
    writers: list[asyncpg.Connection] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        shard, epoch = await prepare(control, options.accounts)
        postmaster = await postmaster_of(control)
        counters = [Counters() for _ in range(options.writers)]
        for _ in range(options.writers):
            writers.append(await connect_writer(dsn, options.synchronous_commit))
        stopping = asyncio.Event()

        async def work(w: int) -> None:
            writer = Writer(
                writers[w],
                Traffic(w, account_of(w, options.accounts)),
                options.batch,
                shard,
                epoch,
                counters[w],
            )
            while not stopping.is_set():
                await writer.round()

        tasks = [asyncio.create_task(work(w), name=f"writer-{w}") for w in range(options.writers)]
        await _sleep_or_fail(options.warmup, tasks)
        load_before = os.getloadavg()
        before = await snapshot(control, counters, postmaster)
        await _sleep_or_fail(options.seconds, tasks)
        after = await snapshot(control, counters, postmaster)
        load_after = os.getloadavg()
        stopping.set()
        await asyncio.gather(*tasks)
        server = await control.fetchval("SHOW server_version")
        tables = await _tables(control)
        kept = await _kept_bytes_per_message(control)
        breakdown = (
            await wal_breakdown(
                control, before.wal_lsn, after.wal_lsn, after.completed - before.completed
            )
            if options.wal_breakdown
            else None
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in writers:
            await conn.close()
        await control.close()
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {
        "bench": "pg_ceiling",
        "writers": options.writers,
        "batch": options.batch,
        "synchronous_commit": options.synchronous_commit,
        "accounts": options.accounts,
        **figures(before, after, cores),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in load_after],
        "postgresql": server,
        "python": platform.python_version(),
        "tables": tables,
        "kept_bytes_per_msg": kept,
        **({"wal_by_record": breakdown} if breakdown is not None else {}),
    }
    if out["pg_cpu_ms_per_msg"]:
        out["ceiling"] = ceiling(out["pg_cpu_ms_per_msg"])
    return out


async def _sleep_or_fail(seconds: float, tasks: list[asyncio.Task[None]]) -> None:
    """Wait, but a writer that failed ends the run with its error."""
    done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        task.result()


async def wal_breakdown(
    conn: asyncpg.Connection, start: int, end: int, messages: int
) -> dict[str, dict[str, float]]:
    """The WAL written between two positions by record type (Btree/INSERT_LEAF:
    index entries; Heap/HOT_UPDATE against Heap/UPDATE: updates that touched
    no index or every one), per message, largest first; {} without
    pg_walinspect (or the right to create it)."""
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        rows = await conn.fetch(
            'SELECT "resource_manager/record_type" AS kind, count, combined_size'
            " FROM pg_get_wal_stats($1::pg_lsn, $2::pg_lsn, true)"
            " WHERE count > 0 ORDER BY combined_size DESC",
            start,  # asyncpg sends a pg_lsn as its integer
            end,
        )
    except asyncpg.PostgresError:
        return {}
    return {
        r["kind"]: {
            "bytes_per_msg": round(r["combined_size"] / max(messages, 1), 1),
            "records_per_msg": round(r["count"] / max(messages, 1), 3),
        }
        for r in rows
    }


WRITTEN_TABLES = ("messages", "carrier_submits", "outbox", "idempotency_keys", "ledger")


async def _tables(conn: asyncpg.Connection) -> dict[str, dict[str, float]]:
    """Each written table's size with its indexes (MB) after the run, and
    how many indexes each row written must update."""
    rows = await conn.fetch(
        "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes,"
        "  (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid) AS indexes"
        " FROM pg_class c WHERE c.relname = ANY($1::text[]) AND c.relkind IN ('r', 'p')",
        list(WRITTEN_TABLES),
    )
    return {r["relname"]: {"mb": round(r["bytes"] / 1e6, 1), "indexes": r["indexes"]} for r in rows}


# What a message leaves on disk until retention drops it: its row, its
# parts' rows and its request's key (kept 24 h), indexes included. Outbox
# rows are deleted once delivered; the ledger has a row per flush.
KEPT_TABLES = ("messages", "carrier_submits", "idempotency_keys")


async def _kept_bytes_per_message(conn: asyncpg.Connection) -> float | None:
    stored = await conn.fetchval("SELECT count(*) FROM messages")
    kept = await conn.fetchval(
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
        " WHERE c.relname = ANY($1::text[]) AND c.relkind IN ('r', 'p')",
        list(KEPT_TABLES),
    )
    return None if not stored or kept is None else round(float(kept) / stored)


@contextlib.asynccontextmanager
async def embedded_server() -> AsyncIterator[str]:
    """A fresh embedded PostgreSQL in a temporary directory, stopped and
    removed at the end; its DSN."""
    # As root the server runs as its own user, which must reach the data dir.
    root = Path(tempfile.mkdtemp(prefix="smsrouter-pg-ceiling-", dir="/tmp"))
    os.chmod(root, 0o755)
    server = EmbeddedPostgres(root / "pg")
    try:
        yield await server.start()
    finally:
        await server.stop()
        relocated = server.relocated
        pgdata = server.pgdata if relocated else None
        shutil.rmtree(root, ignore_errors=True)
        if pgdata is not None:
            shutil.rmtree(pgdata, ignore_errors=True)


async def run(options: Options, dsn: str | None) -> dict[str, Any]:
    if dsn:
        return await drive(dsn, options)
    async with embedded_server() as embedded:
        return await drive(embedded, options)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, str | None]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    defaults = Options()
    parser.add_argument("--writers", type=int, default=defaults.writers)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--warmup", type=float, default=defaults.warmup)
    parser.add_argument(
        "--synchronous-commit", choices=("on", "off"), default=defaults.synchronous_commit
    )
    parser.add_argument("--accounts", type=int, default=defaults.accounts)
    parser.add_argument(
        "--wal-breakdown",
        action="store_true",
        help="the window's WAL by record type (pg_walinspect, read after the window)",
    )
    parser.add_argument("--dsn", default=None, help="an external (scratch) database")
    args = parser.parse_args(argv)
    if args.writers < 1 or args.batch < 1 or args.accounts < 1 or args.seconds <= 0:
        parser.error("--writers, --batch, --accounts and --seconds must be positive")
    options = Options(
        writers=args.writers,
        batch=args.batch,
        seconds=args.seconds,
        warmup=args.warmup,
        synchronous_commit=args.synchronous_commit,
        accounts=args.accounts,
        wal_breakdown=args.wal_breakdown,
    )
    return options, args.dsn


def main(argv: Sequence[str] | None = None) -> None:
    options, dsn = parse_args(argv)
    print(json.dumps(asyncio.run(run(options, dsn))), flush=True)


if __name__ == "__main__":
    main()
