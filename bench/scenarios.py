"""The four scenarios of issue 4, run against one system at a time.

Every load comes from the project's own load clients (``smsrouter sim
http`` / ``smsrouter sim esme``), each in a process of its own, and every
message goes to the same carrier simulator (`bench.carrier`), also in a
process of its own: neither is counted in a system's CPU.

One measurement (`measure`):

1. the carrier's record is reset;
2. the system's CPU is read (every process of it, `bench.procs.CpuMeter`);
3. the load client runs until it is done: it sends until its count or
   duration, then waits for the receipts of what was accepted (it stops
   early once all are in). A system that sends no receipts (Jasmin 0.11.1)
   would keep it waiting for nothing: once the carrier has taken every
   accepted message and sent every receipt, and nothing moved for
   `RECEIPT_GRACE` seconds, the client is told to stop (SIGTERM; it then
   prints its summary);
4. the bench waits for the carrier to stop receiving (egress may trail
   ingress), then reads the CPU again.

CPU per message is the CPU of all the system's processes over that window
divided by the submit_sm the carrier accepted: every message that made the
whole way, ingress to carrier, and its receipt back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.carrier import CarrierProcess
from bench.procs import CpuMeter, MachineCpu, Spawned, cpu_delta, cpu_seconds_of, machine_cpu

# Scenario 4: how much earlier than its bucket allows a message may reach the
# carrier before it counts as a violation (see `pacing`).
JITTER_S = 0.2
# Seconds without any progress at the carrier (submits and receipts alike)
# after which a client still waiting for receipts is stopped.
RECEIPT_GRACE = 10.0
POLL = 0.5

SCENARIOS = ("scenario1", "scenario2", "scenario3", "scenario4")
# The ones measured in messages per second, repeated by `--rounds`.
THROUGHPUT_SCENARIOS = ("scenario1", "scenario2", "scenario3")
TITLES = {
    "scenario1": "HTTP, 1 recipient/request, 50 concurrent → carrier → webhook receipts",
    "scenario2": "SMPP ingress, window 100 → carrier → receipts to the ESME",
    "scenario3": "HTTP batch, 500 recipients/request → carrier → webhook receipts",
    "scenario4": "Many senders: per-sender egress vs. its token bucket",
}


class System(Protocol):
    name: str
    cpu: CpuMeter
    settings: dict[str, Any]

    async def start(self, carrier_port: int, system_id: str, password: str) -> None: ...

    async def stop(self) -> None: ...

    def versions(self) -> dict[str, str]: ...

    def http_args(self) -> list[str]: ...


@dataclass(frozen=True)
class Sizes:
    """How long and how much: `quick` keeps `python -m bench all` within minutes."""

    seconds: float  # sending time of the throughput scenarios
    count_cap: int  # messages at most per throughput run
    batch_count_cap: int  # ... of a batch run (ingest outruns egress: bounded by count)
    jasmin_count: int  # Jasmin: messages per run (its egress is slow; bounded by count)
    warmup_count: int
    sc_senders: int  # scenario 4: short codes, all of them
    sc_messages: int  # ... messages each
    sc_paced_senders: int  # scenario 4: short codes few enough for their buckets to bind
    sc_paced_messages: int
    lc_senders: int  # scenario 4: long codes
    lc_messages: int
    # Scenarios 1-3: messages (or requests) per second at most, 0 = as fast
    # as the system takes them. A fixed rate compares CPU per message of two
    # builds at the same load, where batches are the same size.
    rate: float = 0.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            seconds=8.0,
            count_cap=200_000,
            batch_count_cap=20_000,
            jasmin_count=600,
            warmup_count=500,
            sc_senders=1000,
            sc_messages=150,
            sc_paced_senders=5,
            sc_paced_messages=400,
            lc_senders=10_000,
            lc_messages=3,
        )

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            seconds=30.0,
            count_cap=1_000_000,
            batch_count_cap=200_000,
            jasmin_count=2000,
            warmup_count=2000,
            sc_senders=1000,
            sc_messages=150,
            sc_paced_senders=10,
            sc_paced_messages=1000,
            lc_senders=10_000,
            lc_messages=5,
        )


def destinations(count: int) -> str:
    """A range of distinct US numbers, one per message (the carrier flags repeats)."""
    span = max(count, 10_000)
    return f"+14155{{000000..{min(span, 999_999) - 1:06d}}}"


@dataclass
class Measurement:
    scenario: str
    system: str
    client: dict[str, Any] = field(default_factory=dict)
    carrier: dict[str, Any] = field(default_factory=dict)
    cpu_by_part: dict[str, float] = field(default_factory=dict)
    carrier_cpu_s: float = 0.0
    window_s: float = 0.0
    # Shares of the machine's cores over the load: busy, whoever used them
    # (steal included), and taken by the hypervisor for other machines.
    machine_busy: float | None = None
    machine_steal: float | None = None
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The one JSON line of this scenario and system."""
        c = self.client
        submits = int(self.carrier.get("count") or 0)
        span = self.carrier.get("span_s") or 0.0
        cpu = round(sum(self.cpu_by_part.values()), 3)
        accepted = int(c.get("accepted") or 0)
        latency = c.get("latency_ms") or {}
        out: dict[str, Any] = {
            "bench": self.scenario,
            "system": self.system,
            "sent": c.get("sent"),
            "accepted": accepted,
            "accepted_per_s": c.get("messages_per_s", c.get("submits_per_s")),
            "carrier_submits": submits,
            "carrier_submit_per_s": round(submits / span, 1) if span > 0 else None,
            "carrier_duplicates": self.carrier.get("duplicates"),
            "receipts_matched": c.get("receipts_matched"),
            "receipts_per_s": c.get("receipts_per_s"),
            "latency_p50_ms": latency.get("p50"),
            "latency_p99_ms": latency.get("p99"),
            "receipt_latency_p50_ms": (c.get("receipt_latency_ms") or {}).get("p50"),
            "cpu_s": cpu,
            "cpu_ms_per_msg": round(cpu * 1000.0 / submits, 3) if submits else None,
            "cpu_by_part": self.cpu_by_part,
            # Where the rest of the machine went: the load client and the
            # carrier simulator, each in a process of its own.
            "client_cpu_s": c.get("cpu_s"),
            "carrier_cpu_s": round(self.carrier_cpu_s, 3),
            "errors": c.get("errors") or {},
            "window_s": round(self.window_s, 2),
            # Near 100: the machine, not the system, set the rate.
            "machine_busy_pct": _pct(self.machine_busy),
            "machine_steal_pct": _pct(self.machine_steal),
        }
        if c.get("rejected"):
            out["rejected"] = c["rejected"]
        if c.get("interrupted"):
            out["client_stopped"] = "no progress at the carrier for a while (receipts missing)"
        if self.notes:
            out["notes"] = self.notes
        return out


async def run_client(
    tool: str, args: list[str], log_path: Path, *, stop_when: Callable[[], bool] | None = None
) -> tuple[dict[str, Any], Spawned]:
    """`smsrouter sim <tool> ARGS` to its end (or until `stop_when()`); its JSON line."""
    client = Spawned(
        f"sim {tool}",
        [sys.executable, "-m", "smsrouter", "sim", tool, *args],
        log_path,
        capture_stdout=True,
    )
    await client.start()
    assert client.proc is not None and client.proc.stdout is not None
    reader = asyncio.ensure_future(client.proc.stdout.read())
    try:
        while not reader.done():
            await asyncio.wait({reader}, timeout=POLL)
            if not reader.done() and stop_when is not None and stop_when():
                await client.stop(grace=30)
                break
        out = await reader
        # Its output ends a moment before its exit is reaped: wait for that
        # rather than signal a process that may already be gone.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await client.proc.wait()
    finally:
        if not reader.done():
            reader.cancel()
        await client.stop(grace=30)
    lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"sim {tool} printed no summary:\n{client.tail()}")
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary, client


class Progress:
    """Watches the carrier while a client runs: is anything still moving?"""

    def __init__(self, carrier: CarrierProcess) -> None:
        self.carrier = carrier
        self.last: tuple[int, int] = (-1, -1)
        self.moved_at = time.monotonic()
        self.submits = 0
        self.receipts_sent = 0
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                stats = await self.carrier.stats()
                now = (int(stats["submits"]), int(stats["receipts_sent"]))
                self.submits, self.receipts_sent = now
                if now != self.last:
                    self.last = now
                    self.moved_at = time.monotonic()
            await asyncio.sleep(POLL)

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def idle_for(self) -> float:
        return time.monotonic() - self.moved_at

    async def until_idle(self, seconds: float, timeout: float) -> None:
        """Until nothing moved at the carrier for `seconds` (at most `timeout`)."""
        deadline = time.monotonic() + timeout
        # The state polled is another process's: there is no event to wait on.
        while self.idle_for() < seconds and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(POLL)


async def measure(
    scenario: str,
    system: System,
    carrier: CarrierProcess,
    tool: str,
    args: list[str],
    workdir: Path,
    *,
    min_runtime: float,
) -> Measurement:
    """One load against one system; see the module docstring."""
    await carrier.reset()
    progress = Progress(carrier)
    started = time.monotonic()

    def give_up() -> bool:
        # The client waits for receipts that do not come: all sent, all
        # receipts handed to the system, nothing moving.
        return (
            time.monotonic() - started > min_runtime
            and progress.submits > 0
            and progress.receipts_sent >= progress.submits
            and progress.idle_for() > RECEIPT_GRACE
        )

    carrier_pid = [carrier.proc.pid] if carrier.proc.pid is not None else []
    carrier_before = cpu_seconds_of(carrier_pid)
    cpu_before = system.cpu.read()
    machine_before = machine_cpu()
    progress.start()
    try:
        summary, _ = await run_client(
            tool, args, workdir / f"{scenario}-{system.name}-client.log", stop_when=give_up
        )
        # The load's own span: the quiet wait below would dilute the share.
        machine_after = machine_cpu()
        # Egress may trail the client's end (a peer that queues): wait for
        # the carrier to go quiet.
        await progress.until_idle(2.0, timeout=60.0)
    finally:
        await progress.stop()
    cpu_after = system.cpu.read()
    carrier_cpu = cpu_seconds_of(carrier_pid) - carrier_before
    window = time.monotonic() - started
    submits = await carrier.submits()
    stats = await carrier.stats()
    first, last = submits.get("first_at"), submits.get("last_at")
    carrier_view = {
        "count": submits["count"],
        "span_s": (last - first) if first is not None and last is not None else 0.0,
        "duplicates": stats.get("duplicates"),
        "receipts_sent": stats.get("receipts_sent"),
        "refused": stats.get("refused"),
    }
    return Measurement(
        scenario=scenario,
        system=system.name,
        client=summary,
        carrier=carrier_view,
        cpu_by_part=cpu_delta(cpu_before, cpu_after),
        carrier_cpu_s=carrier_cpu,
        window_s=window,
        machine_busy=_share(machine_before, machine_after, "busy"),
        machine_steal=_share(machine_before, machine_after, "steal"),
    )


def _share(before: MachineCpu, after: MachineCpu, part: str) -> float | None:
    """That part's share of all cores between two `machine_cpu` readings."""
    total = after.total - before.total
    return (getattr(after, part) - getattr(before, part)) / total if total > 0 else None


def _pct(share: float | None) -> float | None:
    return round(100 * share, 1) if share is not None else None


# ---------------------------------------------------------------------------
# Scenario 4: per-sender pacing


def pacing(times_ms: list[int], rate: float) -> tuple[float | None, float]:
    """(steady egress rate, worst excess over the bucket in messages) of one sender.

    The bucket holds one second of `rate` (at least one token) and starts
    full (CONTRACT §2): the first `capacity` messages may leave at once,
    then one per 1/rate s. The steady rate is the slope of the message
    number over its arrival time from the last message of that first
    bucketful on (least squares; at least 3 points, else None), which does
    not depend on how fast the first bucketful itself went out.

    Excess: the most messages seen in any interval [t_i, t_j] beyond what
    the bucket allows there, capacity + rate·(t_j - t_i); excess / rate is
    how much earlier than its bucket allows a message reached the carrier.
    Arrival times carry the jitter of the router's batches and windows and
    of the network: a message that left late makes the next one, sent on
    time, look early (`pacing_summary` allows `JITTER_S` for that).
    """
    times = sorted(t / 1000.0 for t in times_ms)
    capacity = max(1, int(rate))
    steady: float | None = None
    tail = times[capacity - 1 :]
    if len(tail) >= 3 and tail[-1] > tail[0]:
        mean_t = statistics.fmean(tail)
        mean_k = (len(tail) - 1) / 2.0
        var = sum((t - mean_t) ** 2 for t in tail)
        cov = sum((k - mean_k) * (t - mean_t) for k, t in enumerate(tail))
        steady = cov / var if var > 0 else None
    # With a_k = k - rate·t_k, the messages in [t_i, t_j] beyond the rate
    # are a_j - a_i + 1: the worst interval ends at j with the lowest a_i before.
    worst = 0.0
    low = math.inf
    for k, t in enumerate(times):
        a = k - rate * t
        low = min(low, a)
        worst = max(worst, a - low)
    return steady, max(0.0, worst + 1 - capacity)


def pacing_summary(senders: dict[str, list[int]], rate: float) -> dict[str, Any]:
    rates: list[float] = []
    over = 0
    short = 0  # senders with too few messages past their first bucketful for a rate
    worst_excess = 0.0
    allowance = rate * JITTER_S
    messages = 0
    first = min((min(t) for t in senders.values() if t), default=0)
    last = max((max(t) for t in senders.values() if t), default=0)
    for times in senders.values():
        messages += len(times)
        steady, excess = pacing(times, rate)
        if steady is not None:
            rates.append(steady)
        worst_excess = max(worst_excess, excess)
        if excess > allowance + 1e-9:
            over += 1
        if len(times) < max(1, int(rate)) + 2:
            short += 1
    out: dict[str, Any] = {
        "senders": len(senders),
        "messages": messages,
        "bucket_per_s": rate,
        "egress_span_s": round((last - first) / 1000.0, 2),
        "aggregate_per_s": round(messages * 1000.0 / (last - first), 1) if last > first else None,
        "senders_over_bucket": over,
        "jitter_allowance_ms": round(JITTER_S * 1000),
        "worst_excess_msgs": round(worst_excess, 2),
        "worst_early_ms": round(worst_excess / rate * 1000.0),
    }
    if short:
        out["senders_without_rate"] = short
    if rates:
        mean = statistics.fmean(rates)
        out.update(
            {
                "rate_mean_per_s": round(mean, 4),
                "rate_min_per_s": round(min(rates), 4),
                "rate_max_per_s": round(max(rates), 4),
                "mean_deviation_pct": round((mean - rate) / rate * 100.0, 2),
                "worst_deviation_pct": round(max(abs(r - rate) for r in rates) / rate * 100.0, 2),
            }
        )
    return out
