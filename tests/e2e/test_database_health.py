"""The database goes away under the running daemon (CONTRACT §11).

Embedded: the daemon restarts the PostgreSQL it started when it is killed,
and work resumes. Any database: /readyz turns 503 at once, /healthz after
`[database] liveness_seconds`, and both come back with the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from smsrouter.sims.carrier import CarrierSimulator
from tests.e2e.conftest import BASE_CONFIG, CARRIER_PASSWORD, CARRIER_SYSTEM_ID
from tests.e2e.daemon import RouterProcess
from tests.own_pg import OwnPostgres

SENDER = "12345"  # short code: nothing here waits on a rate bucket
AUTH = {"Authorization": "Bearer db-key"}
RESTART_BOUND = 5.0  # CONTRACT §11: restarted within 5 s
LIVENESS_SECONDS = 2

ACCOUNT = """
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "db"
credit = "1000000"
api_keys = ["db-key"]
[[numbers]]
number = "{sender}"
account = "db"
type = "short_code"
[shutdown]
drain_seconds = 2
"""


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir the embedded PostgreSQL's own user can reach (not under
    pytest's 0700 temp root, which would make the launcher relocate it)."""
    path = Path(tempfile.mkdtemp(prefix="smsrouter-e2e-", dir="/tmp"))
    path.chmod(0o755)
    yield path / "pg"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def _config(path: Path, carrier_port: int, extra: str = "") -> Path:
    base = BASE_CONFIG.format(
        carrier_port=carrier_port, system_id=CARRIER_SYSTEM_ID, password=CARRIER_PASSWORD
    )
    path.write_text(base + ACCOUNT.format(sender=SENDER) + extra)
    return path


def _postmaster_pid(data_dir: Path) -> int | None:
    """The first line of postmaster.pid, once the server says it is ready."""
    try:
        lines = (data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    return int(lines[0])


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its new parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _kill_if_postgres(pid: int | None) -> None:
    """Last-resort cleanup of a server a failed test left behind, by its PID."""
    if pid is None or not _alive(pid):
        return
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"postgres"):
            os.kill(pid, signal.SIGKILL)


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


async def _send(http: aiohttp.ClientSession, base_url: str, text: str) -> tuple[int, dict]:
    body = {"from": SENDER, "to": "+14155550100", "text": text}
    async with http.post(base_url + "/v1/messages", json=body, headers=AUTH) as resp:
        return resp.status, await resp.json(content_type=None)


async def _until_status(
    http: aiohttp.ClientSession, url: str, status: int, within: float
) -> tuple[float, dict[str, Any]]:
    """Poll ``url`` until it answers ``status``; (seconds it took, body)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(within):
        while True:
            got, body = await _get(http, url)
            if got == status:
                return loop.time() - began, body
            await asyncio.sleep(0.1)


async def _message_status(
    http: aiohttp.ClientSession, base_url: str, message_id: str, wanted: str, within: float
) -> str:
    """Poll the message until its status is ``wanted``; fail with what it is."""
    body: dict[str, Any] = {}
    try:
        async with asyncio.timeout(within):
            while body.get("status") != wanted:
                async with http.get(f"{base_url}/v1/messages/{message_id}", headers=AUTH) as resp:
                    if resp.status == 200:
                        body = await resp.json()
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not {wanted} after {within} s: {body}") from None
    return wanted


async def _carrier_got(carrier: CarrierSimulator, text: str, within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            if any(s.text == text for s in carrier.submits):
                return
            await asyncio.sleep(0.05)


async def test_a_killed_embedded_postgres_is_restarted_and_work_resumes(
    tmp_path: Path, data_dir: Path, http: aiohttp.ClientSession
) -> None:
    # Receipts a second after each submit: the one of the message sent
    # before the kill comes while the database is down or just back.
    carrier = CarrierSimulator(
        system_id=CARRIER_SYSTEM_ID, password=CARRIER_PASSWORD, receipt_delay=1.0
    )
    await carrier.start()
    config = _config(tmp_path / "r.toml", carrier.port, f'[database]\ndata_dir = "{data_dir}"\n')
    # No database URL: the daemon runs its embedded PostgreSQL.
    router = RouterProcess(config, env={"SMSROUTER_DATABASE_URL": ""})
    old: int | None = None
    new: int | None = None
    try:
        await router.start()
        await router.wait_for_event("carrier bound")
        await _until_status(http, router.base_url + "/readyz", 200, within=10)
        status, body = await _send(http, router.base_url, "before the kill")
        assert status == 202, body
        before = body["messages"][0]["id"]
        await _carrier_got(carrier, "before the kill", within=10)

        old = _postmaster_pid(data_dir)
        assert old is not None and _alive(old)
        os.kill(old, signal.SIGKILL)  # as the OOM killer does
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        async with asyncio.timeout(RESTART_BOUND):
            while True:
                new = _postmaster_pid(data_dir)
                if new is not None and new != old and _alive(new):
                    break
                await asyncio.sleep(0.05)
        assert loop.time() - killed_at < RESTART_BOUND
        died = await router.wait_for_event("embedded postgresql died", timeout=5)
        assert died["exit_status"] == -signal.SIGKILL and died["level"] == "error", died
        restarted = await router.wait_for_event("embedded postgresql restarted", timeout=5)
        assert restarted["pid"] == new and restarted["seconds"] < RESTART_BOUND, restarted
        assert not _alive(old)

        # Work resumes: a new message is taken and sent, the old one ends.
        await _until_status(http, router.base_url + "/readyz", 200, within=10)
        status, body = await _send(http, router.base_url, "after the restart")
        assert status == 202, body
        after = body["messages"][0]["id"]
        await _carrier_got(carrier, "after the restart", within=10)
        assert await _message_status(http, router.base_url, before, "delivered", 30)
        assert await _message_status(http, router.base_url, after, "delivered", 30)

        code = await router.terminate()
        assert code == 0, router.output()
        # SIGTERM stops the restarted PostgreSQL too.
        assert not _alive(new)
        assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    finally:
        await router.kill()
        print(router.output())
        await carrier.stop()
        _kill_if_postgres(old)
        _kill_if_postgres(new)
        _kill_if_postgres(_postmaster_pid(data_dir))


async def test_health_follows_an_external_database_that_goes_away_and_comes_back(
    tmp_path: Path, own_pg: OwnPostgres, carrier: CarrierSimulator, http: aiohttp.ClientSession
) -> None:
    config = _config(tmp_path / "r.toml", carrier.port)
    router = RouterProcess(
        config,
        env={
            "SMSROUTER_DATABASE_URL": own_pg.dsn,
            "SMSROUTER_DATABASE_LIVENESS_SECONDS": str(LIVENESS_SECONDS),
        },
    )
    frozen: list[int] = []
    try:
        await router.start()
        await router.wait_for_event("carrier bound")
        readyz, healthz = router.base_url + "/readyz", router.base_url + "/healthz"
        _, body = await _until_status(http, readyz, 200, within=10)
        assert body["database"] is True and body["carriers"] == {"sim": True}
        assert (await _get(http, healthz))[0] == 200

        # A hung database: every process of the server stopped.
        frozen = own_pg.freeze()
        loop = asyncio.get_running_loop()
        frozen_at = loop.time()
        _, body = await _until_status(http, readyz, 503, within=6)
        assert body["ready"] is False and body["database"] is False, body
        assert body["carriers"] == {"sim": True}  # only the database is the matter
        _, problem = await _until_status(http, healthz, 503, within=LIVENESS_SECONDS + 6)
        down_for = loop.time() - frozen_at
        # Not before the database has been away for about liveness_seconds.
        assert down_for >= LIVENESS_SECONDS - 1, (down_for, problem)
        assert problem["code"] == "database_unreachable", problem
        assert problem["status"] == 503 and problem["unreachable_seconds"] >= LIVENESS_SECONDS

        own_pg.thaw(frozen)
        frozen = []
        await _until_status(http, readyz, 200, within=10)
        await _until_status(http, healthz, 200, within=5)

        # A database that is gone (connections refused), then back.
        own_pg.kill_postmaster()
        _, body = await _until_status(http, readyz, 503, within=6)
        assert body["database"] is False
        await _until_status(http, healthz, 503, within=LIVENESS_SECONDS + 6)
        await own_pg.restart()
        await _until_status(http, readyz, 200, within=10)
        await _until_status(http, healthz, 200, within=5)
        assert await router.wait_for_event("database reachable again", timeout=1)

        code = await router.terminate()
        assert code == 0, router.output()
    finally:
        own_pg.thaw(frozen)
        await router.kill()
        print(router.output())
