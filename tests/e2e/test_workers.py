"""`smsrouter run --workers N` (CONTRACT §1, §9): one parent, N routers
sharing the ports, the embedded PostgreSQL and the simulators started once.

Which worker answered is read from `/metrics`:
`smsrouter_instance_info{instance,pid} 1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from smsrouter.sims.carrier import CarrierSimulator
from tests.e2e.conftest import CARRIER_PASSWORD, CARRIER_SYSTEM_ID
from tests.e2e.daemon import RouterProcess
from tests.tools import BOUND, eventually

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Bearer key-w"}
INSTANCE_INFO = re.compile(
    r'^smsrouter_instance_info\{instance="([^"]+)",pid="(\d+)"\} 1\.0$', re.M
)
# New connections opened at most to meet every worker: the kernel spreads
# them by a hash of the client's port, so two workers are met within a few.
CONNECTIONS = 200

CONFIG = """
[http]
listen = "127.0.0.1:0"
[smpp]
listen = "127.0.0.1:0"
{database}
[[carriers]]
name = "sim"
port = {carrier_port}
system_id = "{system_id}"
password = "{password}"
reconnect_delay = 0.2
[[routes]]
prefix = "1"
carriers = [ {{ name = "sim", cost = "0.004" }} ]
[[prices]]
prefix = "1"
price = "{price}"
[[accounts]]
id = "w"
api_keys = ["key-w"]
credit = "1000"
[[numbers]]
number = "12345"
account = "w"
type = "short_code"
[shutdown]
drain_seconds = 1
{extra}
"""


def _config(path: Path, carrier_port: int, *, database: str = "", price: str = "0.01",
            extra: str = "") -> Path:  # fmt: skip
    path.write_text(
        CONFIG.format(
            database=database,
            carrier_port=carrier_port,
            system_id=CARRIER_SYSTEM_ID,
            password=CARRIER_PASSWORD,
            price=price,
            extra=extra,
        )
    )
    return path


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir the embedded PostgreSQL's own user can reach."""
    path = Path(tempfile.mkdtemp(prefix="smsrouter-workers-", dir="/tmp"))
    path.chmod(0o755)
    yield path / "pg"
    shutil.rmtree(path, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its new parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return None
    return int(pid_file.read_text().split()[0])


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def _pid_behind(http: aiohttp.ClientSession, base_url: str) -> int:
    """The PID of the worker that answers this session's connection."""
    async with http.get(base_url + "/metrics") as resp:
        assert resp.status == 200
        found = INSTANCE_INFO.findall(await resp.text())
    assert len(found) == 1, found
    return int(found[0][1])


async def _reach(base_url: str, want: set[int]) -> set[int]:
    """The workers met over new connections, until all of `want` were."""
    seen: set[int] = set()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(CONNECTIONS):
            seen.add(await _pid_behind(http, base_url))
            if want <= seen:
                break
    return seen


async def _line(router: RouterProcess, what: str, match: Callable[[dict[str, Any]], bool]) -> dict:
    """The first log line that matches, waiting for it."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found.extend(line for line in router.lines if match(line))
        return bool(found)

    await eventually(seen, what)
    return found[0]


async def test_two_workers_on_the_embedded_postgresql_share_the_ports_restart_and_stop(
    tmp_path: Path, data_dir: Path
) -> None:
    sim_port = _free_port()
    # The simulator is the parent's to run, once: a worker starting it too
    # could not bind its port and would fail the start.
    simulator = (
        f'[[simulators]]\nname = "sim"\nport = {sim_port}\nsystem_id = "{CARRIER_SYSTEM_ID}"\n'
        f'password = "{CARRIER_PASSWORD}"\nreceipt_delay = 0.05\n'
        '[admin]\nlisten = "127.0.0.1:0"\ntokens = [ { name = "ops", token = "'
        + "t" * 32
        + '" } ]\n'
    )
    config = _config(
        tmp_path / "workers.toml", sim_port, database=f'[database]\ndata_dir = "{data_dir}"',
        extra=simulator,
    )  # fmt: skip
    router = RouterProcess(config, env={"SMSROUTER_DATABASE_URL": ""}, args=("--workers", "2"))
    started: set[int] = set()
    postmaster = None
    try:
        await router.start()
        assert router.proc is not None
        ready = router.ready
        assert ready["workers"] == 2, ready
        workers = [int(pid) for pid in ready["pids"]]
        started |= set(workers)
        assert len(set(workers)) == 2
        assert all(_parent_of(pid) == router.proc.pid for pid in workers)
        postmaster = _postmaster_pid(data_dir)
        assert postmaster is not None and _parent_of(postmaster) == router.proc.pid
        sims = [line for line in router.lines if line.get("event") == "carrier simulator listening"]
        assert len(sims) == 1 and "worker" not in sims[0], sims

        # The kernel spreads connections over both: each answers with its PID,
        # on the HTTP port and on the operator API's.
        assert await _reach(router.base_url, set(workers)) == set(workers)
        admin_url = f"http://127.0.0.1:{router.admin_port}"
        async with (
            aiohttp.ClientSession(headers={"Authorization": "Bearer " + "t" * 32}) as http,
            http.get(admin_url + "/admin/v1/accounts") as resp,
        ):
            assert resp.status == 200

        # SIGKILL of one worker: logged with how it ended, started again, serving.
        killed, kept = workers
        os.kill(killed, signal.SIGKILL)
        exited = await _line(
            router, "the killed worker's end",
            lambda line: line.get("event") == "worker exited; restarting"
            and line.get("pid") == killed,
        )  # fmt: skip
        assert exited["signal"] == "SIGKILL" and exited["worker"] == 0
        again = await _line(
            router, "the killed worker's successor ready",
            lambda line: line.get("event") == "worker ready"
            and line.get("worker") == 0
            and line.get("pid") != killed,
        )  # fmt: skip
        successor = int(again["pid"])
        started.add(successor)
        assert _alive(kept)
        assert again["instance"] == ready["instances"][0]  # the same instance id
        assert await _reach(router.base_url, {successor, kept}) == {successor, kept}

        # SIGTERM: every worker drains, PostgreSQL stops, the parent exits 0.
        assert await router.terminate() == 0, router.output()
        assert not any(_alive(pid) for pid in (*started, postmaster))
        assert _postmaster_pid(data_dir) is None
    finally:
        await router.kill()
        _kill_all(started | ({postmaster} if postmaster else set()))
        print(router.output())


async def _price(http: aiohttp.ClientSession, base_url: str) -> Decimal:
    body = {"from": "12345", "to": "+14155550100", "text": "which price"}
    async with http.post(base_url + "/v1/messages", json=body, headers=AUTH) as resp:
        answer = await resp.json()
        assert resp.status == 202, answer
    return Decimal(answer["messages"][0]["price"])


async def test_sighup_reaches_every_worker(
    tmp_path: Path, database_url: str, carrier: CarrierSimulator
) -> None:
    config = _config(tmp_path / "workers.toml", carrier.port, price="0.01")
    router = RouterProcess(
        config, env={"SMSROUTER_DATABASE_URL": database_url}, args=("--workers", "2")
    )
    sessions: dict[int, aiohttp.ClientSession] = {}
    try:
        await router.start()
        workers = {int(pid) for pid in router.ready["pids"]}
        # One kept-alive connection to each worker: what it answers is that
        # worker's own reading of the config.
        for _ in range(CONNECTIONS):
            http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            pid = await _pid_behind(http, router.base_url)
            if pid in sessions:
                await http.close()
                continue
            sessions[pid] = http
            if len(sessions) == len(workers):
                break
        assert set(sessions) == workers
        for http in sessions.values():
            assert await _price(http, router.base_url) == Decimal("0.01")

        _config(config, carrier.port, price="0.02")
        assert router.proc is not None
        router.proc.send_signal(signal.SIGHUP)
        for pid, http in sessions.items():
            async with asyncio.timeout(BOUND):
                while True:
                    if await _price(http, router.base_url) == Decimal("0.02"):
                        break
                    await asyncio.sleep(0.1)
            assert await _pid_behind(http, router.base_url) == pid  # still that worker
        reloaded = {
            line["worker"] for line in router.lines if line.get("event") == "config reloaded"
        }
        assert reloaded == {0, 1}
        assert await router.terminate() == 0, router.output()
        assert not any(_alive(pid) for pid in workers)
    finally:
        for http in sessions.values():
            await http.close()
        await router.kill()
        _kill_all(set(sessions))
        print(router.output())


async def test_workers_drain_and_exit_when_their_parent_is_killed(
    tmp_path: Path, database_url: str, carrier: CarrierSimulator
) -> None:
    config = _config(tmp_path / "workers.toml", carrier.port)
    router = RouterProcess(
        config, env={"SMSROUTER_DATABASE_URL": database_url}, args=("--workers", "2")
    )
    workers: set[int] = set()
    try:
        await router.start()
        workers = {int(pid) for pid in router.ready["pids"]}
        assert router.proc is not None
        router.proc.send_signal(signal.SIGKILL)
        await router.proc.wait()
        await eventually(
            lambda: not any(_alive(pid) for pid in workers), "the orphaned workers to exit"
        )
        gone = [line for line in router.lines if line.get("event") == "parent gone; draining"]
        assert {line["worker"] for line in gone} == {0, 1}
    finally:
        await router.kill()
        _kill_all(workers)
        print(router.output())


@pytest.mark.parametrize("count", ["0", "-1"])
def test_run_refuses_fewer_than_one_worker(count: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "smsrouter", "run", "--workers", count],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert f"argument --workers: must be at least 1, got {count}" in run.stderr


async def test_a_worker_that_cannot_start_fails_the_start_with_exit_1(
    tmp_path: Path, carrier: CarrierSimulator
) -> None:
    # No server on this port: every worker's start fails, as a lone daemon's would.
    nowhere = f"postgresql://smsrouter:x@127.0.0.1:{_free_port()}/smsrouter"
    config = _config(tmp_path / "workers.toml", carrier.port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsrouter", "run", "--config", str(config), "--workers", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SMSROUTER_DATABASE_URL": nowhere},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        output = await asyncio.wait_for(proc.stdout.read(), 60)
        assert await proc.wait() == 1, output.decode()
        assert b'"event": "worker ended during start-up"' in output
        assert b'"smsrouter ready"' not in output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
