"""smsrouter against Kannel and Jasmin, on this machine, in one run.

    python -m bench [all] [--full] [--rounds 3] [--systems smsrouter,kannel,jasmin]
    python -m bench scenario1 --systems smsrouter,kannel
    python -m bench profile            # scenario 1 on smsrouter under py-spy
    python -m bench profile --profile-scenario scenario2   # the SMPP load
    python -m bench install            # only install what the peers need
    python -m bench codec|scheduler|sim   # the component benchmarks

Each system runs against its own carrier simulator process with the same
load clients; the bench prints one JSON line per scenario and system as it
goes, then a table per scenario, the ratios smsrouter/peer and issue 4's
targets. ``all`` also writes bench/RESULTS.md (``--results PATH`` elsewhere,
or for a partial run). The default sizes keep ``all`` to a few minutes;
``--full`` runs each throughput scenario for 30 s. smsrouter runs its
compiled build (bench/compiled.py builds it once with mypyc and keeps it
under ~/.cache/smsrouter/compiled); ``--build interpreted`` runs this
checkout's sources instead. Root is needed the first
time (apt-get for kannel, rabbitmq-server, redis-server; a venv for Jasmin
under /var/cache/smsrouter-bench). Every process started is stopped by PID
at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.scenarios import SCENARIOS, Sizes

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = {
    "codec": ["bench.smpp_codec"],
    "scheduler": ["bench.scheduler"],
    "sim": ["bench.sim_carrier", "--seconds", "3"],
}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )  # fmt: skip
    p.add_argument(
        "target",
        nargs="?",
        default="all",
        choices=["all", *SCENARIOS, "profile", "install", *COMPONENTS],
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the default sizes (minutes)")
    size.add_argument("--full", action="store_true", help="30 s per throughput run")
    p.add_argument("--systems", default="smsrouter,kannel,jasmin")
    p.add_argument("--seconds", type=float, help="sending time of each throughput run")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="cap the load of scenarios 1-3 (requests or submit_sm per second)",
    )
    p.add_argument(
        "--build",
        choices=["compiled", "interpreted"],
        default="compiled",
        help="smsrouter's build: compiled with mypyc (built once, cached) or this checkout",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="smsrouter's processes (`smsrouter run --workers N`, default 1)",
    )
    p.add_argument(
        "--without-compliance",
        action="store_true",
        help="smsrouter without issue 18's compliance rules (opt-out list, content and"
        " sender rules, velocity cap): to hold another issue's CPU budget against a"
        " build older than them",
    )
    p.add_argument(
        "--without-account-rules",
        action="store_true",
        help="smsrouter without issue 17's account rules: a price of 0 (no debit), no credit"
        " limit, max_tps or daily thresholds, and no Idempotency-Key on HTTP requests; to"
        " measure what they cost on one tree",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the throughput scenarios this many times, the systems taking turns;"
        " tables, ratios and targets use each system's median run",
    )
    p.add_argument("--no-profile", action="store_true", help="all: skip the py-spy pass")
    p.add_argument("--profile-seconds", type=float, default=10.0)
    p.add_argument(
        "--profile-scenario",
        choices=["scenario1", "scenario2"],
        default="scenario1",
        help="the load the py-spy pass repeats (HTTP or SMPP ingress)",
    )
    p.add_argument("--results", help="write the markdown results here")
    p.add_argument("--no-results", action="store_true", help="all: do not write RESULTS.md")
    p.add_argument("--workdir", help="configs and logs (default: a temp dir, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    return p.parse_args(argv)


def run_component(name: str, site: Path | None = None) -> dict[str, Any] | None:
    """One of the other benchmarks in its own process; its JSON line."""
    argv = [sys.executable, "-m", *COMPONENTS[name]]
    env, cwd = dict(os.environ), ROOT
    if site is not None:
        # The build's packages before the checkout's, run away from it (`-m`
        # puts the working directory first); bench/ itself from the checkout.
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
        cwd = site
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=600, check=False, env=env, cwd=cwd
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        print(f"{' '.join(argv[1:])} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    record: dict[str, Any] = {"bench": name, **json.loads(lines[-1])}
    record["build"] = "interpreted" if site is None else "compiled"
    return record


async def _main(args: argparse.Namespace, argv: list[str]) -> int:
    from bench import install, report
    from bench.suite import SYSTEMS, SuiteOptions, dump, run_suite

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        print(f"unknown systems {unknown}; one of {', '.join(SYSTEMS)}", file=sys.stderr)
        return 2
    if args.target == "install":
        for line in await asyncio.to_thread(install.ensure, systems):
            print(line)
        print("installed: everything the bench needs is in place")
        return 0
    sizes = Sizes.full() if args.full else Sizes.quick()
    if args.seconds:
        sizes = Sizes(**{**sizes.__dict__, "seconds": args.seconds})
    if args.rate:
        sizes = Sizes(**{**sizes.__dict__, "rate": args.rate})
    if args.target == "all":
        scenarios = list(SCENARIOS)
    elif args.target == "profile":
        scenarios, systems = [args.profile_scenario], ["smsrouter"]
    else:
        scenarios = [args.target]
    profile = args.target == "profile" or (args.target == "all" and not args.no_profile)
    profile = profile and "smsrouter" in systems

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"bench: {', '.join(scenarios)} on {', '.join(systems)}; work dir {workdir}",
          file=sys.stderr)  # fmt: skip
    options = SuiteOptions(
        scenarios=scenarios,
        systems=systems,
        sizes=sizes,
        workdir=workdir,
        profile=profile,
        profile_seconds=args.profile_seconds,
        profile_scenario=args.profile_scenario,
        rounds=max(1, args.rounds),
        build=args.build,
        workers=max(1, args.workers),
        compliance=not args.without_compliance,
        account_rules=not args.without_account_rules,
        emit=lambda record: print(dump(record), flush=True),
    )
    try:
        result = await run_suite(options)
        if args.target == "all":
            sim = await asyncio.to_thread(run_component, "sim")
            if sim is not None:
                result.records.append(sim)
                print(dump(sim), flush=True)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    for row in report.ratios(result.records):
        print(dump(row), flush=True)
    report.print_summary(result)
    results_path = args.results or (
        str(ROOT / "bench" / "RESULTS.md") if args.target == "all" and not args.no_results else None
    )
    if results_path:
        report.write_results(result, argv, Path(results_path))
        print(f"\nwrote {results_path}", file=sys.stderr)
    failed = [r for r in result.records if "error" in r]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.target in COMPONENTS:
        from bench import compiled

        site = compiled.compiled_site() if args.build == "compiled" else None
        record = run_component(args.target, site)
        if record is None:
            return 1
        print(json.dumps(record, separators=(",", ":")))
        return 0
    os.chdir(ROOT)  # the daemon and the load clients run from the repository root

    async def guarded() -> int:
        # SIGTERM as Ctrl-C: cancel, so that every `finally` stops its processes.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await _main(args, argv)

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; every process it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
