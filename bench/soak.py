"""Soak: the daemon at a steady rate for N minutes, with retention at work
(issue 19, CONTRACT §10): is the router's memory flat, are the tables
bounded, does dropping a day slow ingress?

    python -m bench.soak [--minutes 10] [--rate 200]

On 127.0.0.1 only, everything started here and stopped by its PID: a
PostgreSQL of its own (embedded, in a temporary directory), the carrier
simulator, the daemon (`[retention] days = 1`, so that days written before
are expired), the HTTP load client (`smsrouter sim http`, one message a
request, each with an Idempotency-Key and a callback to its own receiver:
every table that retention partitions is written), and a probe that times
one POST /v1/messages every half second.

Before the load starts, `--past-days` days before yesterday are filled with
`--per-day` ended messages each (parts, events, notifications given up,
keys): what a steady state holds beyond the retention. Halfway, `smsrouter
db retention` runs (the daemon's own chore, at once) and drops them. Every
`--sample` seconds: the router's RSS, the size of each partitioned table
(all its partitions, indexes and TOAST included), its messages, and the
probe's slowest answer since the last sample. A markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.procs import LOOPBACK, Spawned, free_port, wait_port
from smsrouter.embedded_pg import EmbeddedPostgres
from smsrouter.router import retention
from smsrouter.router.migrations import apply_migrations
from smsrouter.router.store import partitions

API_KEY = "soak-key"
WEBHOOK_SECRET = "soak-secret"
SENDER = "12345"
TABLES = ("messages", "carrier_submits", "message_events", "outbox", "idempotency_keys")

# A past day's rows, as the router writes them: ended messages with a part
# and an event, a notification given up, a key (its day and the next).
_PAST = (
    "WITH m AS ("
    " SELECT (lpad(to_hex((extract(epoch FROM $1::timestamptz) * 1000)::bigint"
    "   + (random() * 86399999)::bigint), 12, '0') || '7'"
    "   || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid"
    "   AS id, n"
    " FROM generate_series(1, $2) AS n),"
    " i AS (INSERT INTO messages (id, account_id, ingress, sender, recipient, body, encoding,"
    "  data_coding, parts, price, status, created_at, done_at, callback_url)"
    " SELECT id, 'soak', 'http', '12345', '+1415' || lpad((n % 10000000)::text, 7, '0'),"
    "  'soak test text of a past day', 'gsm7', 0, 1, 0, 'delivered', $1, $1,"
    "  'http://127.0.0.1:9/' FROM m),"
    " s AS (INSERT INTO carrier_submits (carrier, carrier_message_id, message_id, part, status,"
    "  submitted_at, done_at)"
    " SELECT 'sim', md5(id::text), id, 0, 'delivered', $1, $1 FROM m),"
    " e AS (INSERT INTO message_events (message_id, at, status) SELECT id, $1, 'note' FROM m),"
    " o AS (INSERT INTO outbox (id, kind, account_id, message_id, target, payload,"
    "  next_attempt_at, expires_at, created_at, done_at, attempts, last_error)"
    " SELECT $3::bigint + n, 'webhook', 'soak', id, 'http://127.0.0.1:9/', convert_to(repeat('x', 200),"
    "  'UTF8'), $1, $1, $1, $1, 12, 'connection refused' FROM m WHERE n % 20 = 0)"
    " INSERT INTO idempotency_keys (account_id, key, day, request_hash, status, created_at,"
    "  message_id)"
    " SELECT 'soak', 'past-' || id, $1::date + c, 'h', 202, $1, id FROM m, generate_series(0, 1) c"
)


def _config(http_port: int, smpp_port: int, carrier_port: int, dsn: str) -> str:
    return f"""
[http]
listen = "{LOOPBACK}:{http_port}"
[smpp]
listen = "{LOOPBACK}:{smpp_port}"
[database]
url = "{dsn}"
[log]
level = "warning"
[retention]
days = 1
[[carriers]]
name = "sim"
host = "{LOOPBACK}"
port = {carrier_port}
system_id = "router"
password = "secret"
window = 100
reconnect_delay = 0.2
[[routes]]
prefix = "1"
carriers = [ {{ name = "sim", cost = "0.004" }} ]
[[prices]]
prefix = "1"
price = "0.0062"
[[accounts]]
id = "soak"
api_keys = ["{API_KEY}"]
credit = "1000000000"
webhook_secret = "{WEBHOOK_SECRET}"
[[numbers]]
number = "{SENDER}"
account = "soak"
type = "short_code"
rate = 100000
[queues]
max_per_sender = 1000000
[shutdown]
drain_seconds = 5
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Sample:
    at: float  # seconds since the load started
    rss_mb: float
    sizes_mb: dict[str, float]
    messages: int
    probe_max_ms: float
    note: str = ""


@dataclass
class Probe:
    """One POST /v1/messages every half second, timed."""

    url: str
    slowest: float = 0.0
    failures: int = 0
    times: list[float] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        body = json.dumps({"from": SENDER, "to": "+14155550199", "text": "probe"})
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    async with http.post(self.url, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status != 202:
                            self.failures += 1
                except (aiohttp.ClientError, TimeoutError):
                    self.failures += 1
                took = time.perf_counter() - began
                self.slowest = max(self.slowest, took)
                self.times.append(took)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

    def take_slowest(self) -> float:
        slowest, self.slowest = self.slowest, 0.0
        return slowest


async def _sizes(conn: asyncpg.Connection) -> tuple[dict[str, float], int]:
    sizes = {}
    for table in TABLES:
        size = await conn.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)"
            " FROM pg_partition_tree($1::regclass)",
            table,
        )
        sizes[table] = float(size) / 2**20
    messages = await conn.fetchval("SELECT count(*) FROM messages")
    return sizes, messages


async def _fill_past(conn: asyncpg.Connection, days: int, per_day: int) -> list[str]:
    """`days` days before yesterday, `per_day` ended messages each."""
    today = datetime.now(UTC).date()
    filled = []
    for n in range(2, days + 2):
        day = today - timedelta(days=n)
        for table in retention.TABLES:
            await partitions.create_partition(conn, table, day)
        # A key is kept in its day and the next (migration 0012).
        await partitions.create_partition(conn, retention.IDEMPOTENCY_KEYS, day + retention.DAY)
        await conn.execute(_PAST, retention.day_start(day), per_day, retention.outbox_id_floor(day))
        filled.append(day.isoformat())
    await conn.execute("ANALYZE")
    return filled


def _cli_retention(config: Path) -> tuple[list[str], float, str]:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "smsrouter", "db", "retention", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"db retention failed: {done.stderr}")
    return done.stdout.split(), took, done.stderr


async def soak(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    server = EmbeddedPostgres(root / "pg")
    procs: list[Spawned] = []
    await server.start()
    try:
        dsn = server.dsn
        conn = await asyncpg.connect(dsn)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()
        carrier_port, http_port, smpp_port, hook_port = (free_port() for _ in range(4))
        config = root / "soak.toml"
        config.write_text(_config(http_port, smpp_port, carrier_port, dsn))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMSROUTER_")}
        python = sys.executable
        carrier = Spawned(
            "carrier",
            [python, "-m", "smsrouter", "sim", "carrier", "--host", LOOPBACK,
             "--port", str(carrier_port), "--system-id", "router", "--password", "secret",
             "--receipt-delay", "0.2", "--record", "count", "--log-format", "json"],
            root / "carrier.log", env=env,
        )  # fmt: skip
        procs.append(carrier)
        await carrier.start()
        await wait_port(carrier_port, 60, carrier)
        router = Spawned(
            "smsrouter",
            [python, "-m", "smsrouter", "run", "--config", str(config)],
            root / "router.log",
            env=env,
        )
        procs.append(router)
        await router.start()
        await wait_port(http_port, 120, router)
        assert router.pid is not None
        # Filled once the daemon runs: its retention run at start would
        # have dropped them already.
        conn = await asyncpg.connect(dsn)
        try:
            past = await _fill_past(conn, args.past_days, args.per_day)
        finally:
            await conn.close()
        seconds = args.minutes * 60
        load = Spawned(
            "load",
            [python, "-m", "smsrouter", "sim", "http", "--url", f"http://{LOOPBACK}:{http_port}",
             "--key", API_KEY, "--idempotency-keys", "--rate", str(args.rate),
             "--duration", str(seconds), "--count", str(10**9), "--concurrency", "20",
             "--senders", SENDER, "--destinations", "+1415555{0000..9999}",
             "--text", "soak test message of some ordinary length",
             "--webhook-port", str(hook_port), "--webhook-secret", WEBHOOK_SECRET,
             "--receipt-timeout", "30"],
            root / "load.log", env=env, capture_stdout=True,
        )  # fmt: skip
        procs.append(load)
        probe = Probe(f"http://{LOOPBACK}:{http_port}/v1/messages")
        stop = asyncio.Event()
        samples: list[Sample] = []
        watch = await asyncpg.connect(dsn)
        try:
            sizes, count = await _sizes(watch)
            samples.append(Sample(0, rss_mb(router.pid), sizes, count, 0.0, "before the load"))
            began = time.monotonic()
            await load.start()
            probing = asyncio.create_task(probe.run(stop))
            retained = False
            dropped: list[str] = []
            retention_seconds = 0.0
            longest_lock_ms: float | None = None
            half = seconds / 2
            next_sample = args.sample
            while True:
                now = time.monotonic() - began
                if load.returncode is not None:
                    break
                if not retained and now >= half:
                    retained = True
                    dropped, retention_seconds, said = await asyncio.to_thread(
                        _cli_retention, config
                    )
                    lock = re.search(r"longest detach, its lock wait included: ([\d.]+) ms", said)
                    longest_lock_ms = float(lock[1]) if lock else None
                    sizes, count = await _sizes(watch)
                    samples.append(
                        Sample(
                            round(time.monotonic() - began),
                            rss_mb(router.pid),
                            sizes,
                            count,
                            probe.take_slowest() * 1000,
                            f"db retention: {len(dropped)} partitions dropped "
                            f"in {retention_seconds:.1f} s, the longest detach (its "
                            f"lock wait included) {longest_lock_ms} ms",
                        )
                    )
                if now >= next_sample:
                    next_sample += args.sample
                    if samples and now - samples[-1].at < 5:
                        continue  # the retention run's sample stands for it
                    sizes, count = await _sizes(watch)
                    samples.append(
                        Sample(
                            round(now),
                            rss_mb(router.pid),
                            sizes,
                            count,
                            probe.take_slowest() * 1000,
                        )
                    )
                if now > seconds + 120:
                    break
                await asyncio.sleep(1.0)
            stop.set()
            await probing
        finally:
            await watch.close()
        out, _ = await load.proc.communicate() if load.proc is not None else (b"", b"")
        summary = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    finally:
        for proc in reversed(procs):
            await proc.stop(grace=40)
        await server.stop()
    probe_times = sorted(probe.times)
    return {
        "minutes": args.minutes,
        "rate": args.rate,
        "past_days": past,
        "per_day": args.per_day,
        "dropped": dropped,
        "retention_seconds": round(retention_seconds, 2),
        "longest_lock_ms": longest_lock_ms,
        "probe": {
            "requests": len(probe_times),
            "failures": probe.failures,
            "p50_ms": round(probe_times[len(probe_times) // 2] * 1000, 1) if probe_times else None,
            "max_ms": round(probe_times[-1] * 1000, 1) if probe_times else None,
        },
        "load": {
            k: summary.get(k)
            for k in (
                "requests",
                "accepted",
                "errors",
                "messages_per_s",
                "latency_ms",
                "receipts_expected",
                "receipts_matched",
            )
        },
        "samples": [s.__dict__ for s in samples],
    }


def markdown(out: dict[str, Any]) -> str:
    lines = [
        f"{out['minutes']} minutes at {out['rate']} msg/s (HTTP, an Idempotency-Key and a "
        f"callback each), `[retention] days = 1`, {len(out['past_days'])} past days of "
        f"{out['per_day']} ended messages stored first; `smsrouter db retention` halfway "
        f"dropped {len(out['dropped'])} partitions in {out['retention_seconds']} s.",
        "",
        "| t (s) | router RSS MB | messages | "
        + " | ".join(f"{t} MB" for t in TABLES)
        + " | slowest probe POST ms | |",
        "| ---: | ---: | ---: | " + " | ".join("---:" for _ in TABLES) + " | ---: | --- |",
    ]
    for s in out["samples"]:
        sizes = " | ".join(f"{s['sizes_mb'][t]:.1f}" for t in TABLES)
        lines.append(
            f"| {s['at']:.0f} | {s['rss_mb']:.1f} | {s['messages']} | {sizes} "
            f"| {s['probe_max_ms']:.0f} | {s['note']} |"
        )
    probe, load = out["probe"], out["load"]
    lines += [
        "",
        f"Probe: {probe['requests']} POSTs, {probe['failures']} failed, p50 {probe['p50_ms']} ms, "
        f"max {probe['max_ms']} ms. Load client: {load}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--past-days", type=int, default=5)
    parser.add_argument("--per-day", type=int, default=30_000)
    parser.add_argument("--json", action="store_true", help="one JSON line instead")
    args = parser.parse_args()
    # As root the embedded PostgreSQL runs as its own user: its parent
    # directory must be readable by it (bench/router.py does the same).
    root = Path(tempfile.mkdtemp(prefix="smsrouter-soak-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        out = asyncio.run(soak(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, default=str) if args.json else markdown(out))


if __name__ == "__main__":
    main()
