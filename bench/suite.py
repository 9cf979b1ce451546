"""One run of the bench: each system in turn, its scenarios, everything stopped after.

For each system: a fresh carrier simulator process, the system started and
bound to it, a short warm-up load, the scenarios it supports, then the
system and the carrier are stopped (also on failure or Ctrl-C). A scenario
that fails is recorded with its error and the run goes on.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import compiled, install
from bench.carrier import PASSWORD, SYSTEM_ID, CarrierProcess
from bench.profile import profile_router
from bench.router import THROUGHPUT_SENDER_SPEC, SmsrouterSystem, scenario4_senders
from bench.scenarios import (
    SCENARIOS,
    THROUGHPUT_SCENARIOS,
    Measurement,
    Progress,
    Sizes,
    System,
    destinations,
    measure,
    pacing_summary,
    run_client,
)

SYSTEMS = ("smsrouter", "kannel", "jasmin")

# What each peer cannot do, per scenario (the reason goes into the results).
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("kannel", "scenario2"): "Kannel has no SMPP server (ESMEs cannot bind to it)",
    ("kannel", "scenario4"): "per-sender token buckets are smsrouter's; not measured on peers",
    ("jasmin", "scenario3"): "Jasmin's HTTP API /send takes one recipient per request",
    ("jasmin", "scenario4"): "per-sender token buckets are smsrouter's; not measured on peers",
}

HTTP_CONCURRENCY = 50
BATCH = 500
BATCH_CONCURRENCY = 10
SMPP_WINDOW = 100
RECEIPT_TIMEOUT = 60.0


@dataclass
class SuiteOptions:
    scenarios: list[str]
    systems: list[str]
    sizes: Sizes
    workdir: Path
    profile: bool = False
    profile_seconds: float = 10.0
    # The load the profile pass repeats: "scenario1" (HTTP) or "scenario2" (SMPP).
    profile_scenario: str = "scenario1"
    # Each system runs its throughput scenarios this many times, the systems
    # taking turns (a, b, c, a, b, c ...): the report takes each one's median
    # run, so that a spell of the hypervisor taking cores (machine_steal_pct)
    # during one system's run does not decide a ratio. Scenario 4 and the
    # profile pass run in the first round only.
    rounds: int = 1
    # smsrouter's build: "compiled" (bench.compiled builds it) or "interpreted".
    build: str = "compiled"
    # smsrouter's processes: `smsrouter run --workers N` (CONTRACT §9).
    workers: int = 1
    # smsrouter with the compliance rules of bench.compliance_config.
    compliance: bool = True
    # smsrouter with the account rules of CONTRACT §6 and Idempotency-Keys.
    account_rules: bool = True
    emit: Callable[[dict[str, Any]], None] = lambda record: None


@dataclass
class SuiteResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    installed: list[str] = field(default_factory=list)
    load: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0


def make_system(
    name: str,
    workdir: Path,
    sizes: Sizes,
    site: Path | None = None,
    workers: int = 1,
    compliance: bool = True,
    account_rules: bool = True,
) -> System:
    if name == "smsrouter":
        senders = scenario4_senders(sizes.sc_senders, sizes.lc_senders)
        return SmsrouterSystem(
            workdir, senders, site, workers=workers, compliance=compliance,
            account_rules=account_rules,
        )  # fmt: skip
    if name == "kannel":
        from bench.kannel import KannelSystem

        return KannelSystem(workdir)
    if name == "jasmin":
        from bench.jasmin import JasminSystem

        return JasminSystem(workdir)
    raise ValueError(f"unknown system {name!r}; one of {', '.join(SYSTEMS)}")


async def wait_bound(carrier: CarrierProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stats = await carrier.stats()
        if stats.get("binds"):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the system did not bind to the carrier simulator")
        await asyncio.sleep(0.2)


def _limited_by(summary: dict[str, Any], demand: float) -> str:
    """What set the pace of a scenario-4 phase, from its per-sender rates."""
    mean_dev = summary.get("mean_deviation_pct")
    worst_dev = summary.get("worst_deviation_pct")
    aggregate = summary.get("aggregate_per_s") or 0.0
    if mean_dev is not None and abs(mean_dev) <= 10 and (worst_dev or 0) <= 25:
        return "the buckets"
    if aggregate < 0.5 * demand:
        return f"router throughput ({aggregate:,.0f}/s in all, the buckets allow {demand:,.0f}/s)"
    if mean_dev is not None and mean_dev > 10:
        return "nothing: faster than the buckets"
    return "irregular: see the rates"


class Runner:
    def __init__(self, options: SuiteOptions) -> None:
        self.options = options
        self.sizes = options.sizes
        self.result = SuiteResult()
        self._site: Path | None = None  # the compiled build, once built
        self._round = 1
        z = self.sizes
        self.result.load = {
            "scenario1": (
                f"smsrouter sim http: {HTTP_CONCURRENCY} keep-alive connections, 1 recipient per "
                f"request, {z.seconds:g} s of sending (Jasmin: {z.jasmin_count} messages), "
                f"webhook receiver in the client, receipts awaited up to {RECEIPT_TIMEOUT:g} s"
            ),
            "scenario2": (
                f"smsrouter sim esme: 1 transceiver bind, window {SMPP_WINDOW}, "
                f"registered_delivery 1, {z.seconds:g} s (Jasmin: {z.jasmin_count} messages)"
            ),
            "scenario3": (
                f"smsrouter sim http: {BATCH} recipients per request, {BATCH_CONCURRENCY} "
                f"connections, {z.batch_count_cap:,} messages"
            ),
            "scenario4": (
                f"HTTP batches of one sender each; {z.lc_senders:,} long codes x "
                f"{z.lc_messages}, then {z.sc_senders:,} short codes x {z.sc_messages}, then "
                f"{z.sc_paced_senders} short codes x {z.sc_paced_messages}; no receipts"
            ),
            "warm-up": f"{z.warmup_count} messages over HTTP (Jasmin: 50) before the scenarios",
        }

    def _record(self, record: dict[str, Any]) -> None:
        if self.options.rounds > 1 and record.get("bench") in SCENARIOS:
            record["round"] = self._round
        self.result.records.append(record)
        self.options.emit(record)

    # ------------------------------------------------------------ loads

    def _count(self, system: System) -> tuple[int, float]:
        """(messages, seconds) of a throughput run: Jasmin is bounded by count."""
        if system.name == "jasmin":
            return self.sizes.jasmin_count, 600.0
        return self.sizes.count_cap, self.sizes.seconds

    def _http_load(self, system: System, count: int, seconds: float, batch: int) -> list[str]:
        return [
            *system.http_args(),
            "--concurrency",
            str(BATCH_CONCURRENCY if batch > 1 else HTTP_CONCURRENCY),
            "--batch",
            str(batch),
            "--count",
            str(count),
            "--duration",
            str(seconds),
            "--senders",
            THROUGHPUT_SENDER_SPEC,
            "--destinations",
            destinations(count),
            "--webhook-port",
            "0",
            # Receipts trail a batch's ingest: allow for 1,000/s of them.
            "--receipt-timeout",
            str(max(RECEIPT_TIMEOUT, count / 1000.0) if batch > 1 else RECEIPT_TIMEOUT),
            *self._rate_cap(),
        ]

    def _rate_cap(self) -> list[str]:
        return ["--rate", str(self.sizes.rate)] if self.sizes.rate > 0 else []

    async def _warmup(self, system: System, carrier: CarrierProcess) -> None:
        count = 50 if system.name == "jasmin" else self.sizes.warmup_count
        args = self._http_load(system, count, 30.0, 1)
        # Receipts matter not here; do not wait long for them.
        args[args.index("--receipt-timeout") + 1] = "5"
        await run_client("http", args, self.options.workdir / f"warmup-{system.name}.log")
        progress = Progress(carrier)
        progress.start()
        try:
            await progress.until_idle(1.0, timeout=30.0)
        finally:
            await progress.stop()

    async def scenario1(self, system: System, carrier: CarrierProcess) -> None:
        count, seconds = self._count(system)
        m = await measure(
            "scenario1",
            system,
            carrier,
            "http",
            self._http_load(system, count, seconds, 1),
            self.options.workdir,
            min_runtime=5.0,
        )
        self._finish(m, system)
        await self._profile_after("scenario1", system)

    def _smpp_load(self, system: System, count: int, seconds: float) -> list[str]:
        smpp_args: list[str] = system.smpp_args()  # type: ignore[attr-defined]
        return [
            *smpp_args,
            "--binds",
            "1",
            "--window",
            str(SMPP_WINDOW),
            "--count",
            str(count),
            "--duration",
            str(seconds),
            "--senders",
            THROUGHPUT_SENDER_SPEC,
            "--destinations",
            destinations(count),
            "--receipt-timeout",
            str(RECEIPT_TIMEOUT),
            *self._rate_cap(),
        ]

    async def scenario2(self, system: System, carrier: CarrierProcess) -> None:
        count, seconds = self._count(system)
        args = self._smpp_load(system, count, seconds)
        m = await measure(
            "scenario2", system, carrier, "esme", args, self.options.workdir, min_runtime=5.0
        )
        self._finish(m, system)
        await self._profile_after("scenario2", system)

    async def scenario3(self, system: System, carrier: CarrierProcess) -> None:
        count, seconds = self._count(system)
        count = min(count, self.sizes.batch_count_cap)
        m = await measure(
            "scenario3",
            system,
            carrier,
            "http",
            self._http_load(system, count, seconds, BATCH),
            self.options.workdir,
            min_runtime=5.0,
        )
        self._finish(m, system)

    def _finish(self, m: Measurement, system: System) -> None:
        if system.name == "jasmin" and not m.client.get("receipts_matched"):
            m.notes.append(
                "no receipts: Jasmin 0.11.1 emits none without the upstream fix of its issue "
                "#1236 (its messages.log: AttributeError 'SubmitSM' object has no attribute "
                "'response' on every submit_sm_resp, so no DLR map is stored and dlrlookupd "
                "logs DLRMapNotFound for each receipt); the load client was stopped once the "
                "carrier had delivered every receipt to Jasmin and nothing moved for 10 s"
            )
        if m.client.get("statuses") is not None and not m.client.get("accepted"):
            m.notes.append("nothing accepted; see the client log in the work dir")
        self._record(m.record())

    async def _profile_after(self, scenario: str, system: System) -> None:
        """The py-spy pass, once the scenario it repeats has been measured."""
        o = self.options
        if not o.profile or o.profile_scenario != scenario or self._round > 1:
            return
        if not isinstance(system, SmsrouterSystem):
            return
        count, seconds = self.sizes.count_cap, o.profile_seconds + 4.0
        if scenario == "scenario2":
            tool, args = "esme", self._smpp_load(system, count, seconds)
        else:
            tool, args = "http", self._http_load(system, count, seconds, 1)
        self.result.profile = await profile_router(
            system, tool, args, o.workdir, scenario=scenario, seconds=o.profile_seconds
        )

    async def scenario4(self, system: System, carrier: CarrierProcess) -> None:
        assert isinstance(system, SmsrouterSystem)
        plan = system.senders
        s = self.sizes
        phases = [
            ("long_code", plan.long_codes[: s.lc_senders], s.lc_messages, plan.long_code_rate),
            ("short_code", plan.short_codes[: s.sc_senders], s.sc_messages, plan.short_code_rate),
            (
                "short_code (bucket-bound)",
                plan.short_codes[: s.sc_paced_senders],
                s.sc_paced_messages,
                plan.short_code_rate,
            ),
        ]
        for kind, senders, per_sender, rate in phases:
            record = await self._pacing_phase(system, carrier, kind, senders, per_sender, rate)
            self._record(record)
            # Let every bucket fill up again before the next phase.
            await asyncio.sleep(2.0)

    async def _pacing_phase(
        self,
        system: SmsrouterSystem,
        carrier: CarrierProcess,
        kind: str,
        senders: list[str],
        per_sender: int,
        rate: float,
    ) -> dict[str, Any]:
        await carrier.reset()
        wd = self.options.workdir
        senders_file = wd / f"scenario4-{kind.split()[0]}-senders.txt"
        senders_file.write_text("\n".join(senders) + "\n")
        count = len(senders) * per_sender
        args = [
            *system.http_args(),
            "--concurrency",
            str(HTTP_CONCURRENCY),
            "--batch",
            str(per_sender),
            "--count",
            str(count),
            "--duration",
            "300",
            "--senders",
            f"@{senders_file}",
            "--destinations",
            destinations(count),
        ]
        # Expected egress time: the slower of the buckets and the burst.
        expected = (per_sender - max(1, int(rate))) / rate if per_sender > rate else 1.0
        progress = Progress(carrier)
        progress.start()
        cpu_before = system.cpu.read()
        started = time.monotonic()
        try:
            client, _ = await run_client("http", args, wd / f"scenario4-{kind.split()[0]}.log")
            accepted = int(client.get("accepted") or 0)
            deadline = time.monotonic() + max(120.0, expected * 3)
            while progress.submits < accepted and time.monotonic() < deadline:
                if progress.idle_for() > max(15.0, 2.0 / rate):
                    break
                await asyncio.sleep(0.5)
        finally:
            await progress.stop()
        cpu_after = system.cpu.read()
        window = time.monotonic() - started
        seen = await carrier.senders()
        # The raw arrival times, for a closer look at any figure below.
        (wd / f"scenario4-{kind.split()[0]}-{len(senders)}-arrivals.json").write_text(
            json.dumps(seen)
        )
        summary = pacing_summary(seen["senders"], rate)
        cpu = sum(cpu_after.values()) - sum(cpu_before.values())
        record: dict[str, Any] = {
            "bench": "scenario4",
            "system": system.name,
            "sender_type": kind,
            **summary,
            "offered_per_sender": per_sender,
            "accepted": accepted,
            "ingest_per_s": client.get("messages_per_s"),
            "carrier_submits": summary["messages"],
            "cpu_s": round(cpu, 3),
            "window_s": round(window, 2),
        }
        if summary["messages"] < accepted:
            record["missing"] = accepted - summary["messages"]
        record["limited_by"] = _limited_by(summary, len(senders) * rate)
        return record

    # ------------------------------------------------------------ systems

    async def run_system(self, name: str) -> None:
        opts = self.options
        later = self._round > 1
        wd = opts.workdir / (f"{name}-round{self._round}" if later else name)
        wd.mkdir(parents=True, exist_ok=True)
        system = make_system(
            name, wd, self.sizes, self._site, opts.workers, opts.compliance, opts.account_rules
        )
        self.result.settings[name] = system.settings
        scenarios: list[tuple[str, Callable[[System, CarrierProcess], Awaitable[None]]]] = []
        for scenario in opts.scenarios:
            if later and scenario not in THROUGHPUT_SCENARIOS:
                continue
            reason = UNSUPPORTED.get((name, scenario))
            if reason is not None:
                if not later:
                    self._record({"bench": scenario, "system": name, "skipped": reason})
                continue
            scenarios.append((scenario, getattr(self, scenario)))
        if not scenarios:
            return
        carrier = CarrierProcess(wd)
        await carrier.start()
        try:
            await system.start(carrier.port, SYSTEM_ID, PASSWORD)
            try:
                self.result.versions.update(system.versions())
                await wait_bound(carrier)
                await self._warmup(system, carrier)
                for scenario, run in scenarios:
                    try:
                        await run(system, carrier)
                    except (RuntimeError, OSError, ValueError, KeyError, TimeoutError) as exc:
                        traceback.print_exc(file=sys.stderr)
                        self._record({"bench": scenario, "system": name, "error": repr(exc)})
            finally:
                await system.stop()
        finally:
            await carrier.stop()

    async def run(self) -> SuiteResult:
        started = time.monotonic()
        self.result.installed = await asyncio.to_thread(install.ensure, self.options.systems)
        if "smsrouter" in self.options.systems and self.options.build == "compiled":
            self._site = await asyncio.to_thread(compiled.compiled_site)
            self.result.installed.append(f"smsrouter compiled build: {self._site}")
        for round_ in range(1, self.options.rounds + 1):
            self._round = round_
            for name in self.options.systems:
                try:
                    await self.run_system(name)
                except (RuntimeError, OSError, TimeoutError, install.InstallError) as exc:
                    traceback.print_exc(file=sys.stderr)
                    self._record({"bench": "start", "system": name, "error": repr(exc)})
        self.result.elapsed_s = round(time.monotonic() - started, 1)
        return self.result


async def run_suite(options: SuiteOptions) -> SuiteResult:
    unknown = [s for s in options.scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}")
    return await Runner(options).run()


def dump(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)
