"""The daemon's life: embedded PostgreSQL, crash and restart, reload, drain."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from smsrouter.sims.carrier import CarrierSimulator
from smsrouter.sims.webhook import WebhookReceiver
from tests.e2e.daemon import RouterProcess

SENDER = "12345"  # short code: 100 parts/s, so nothing here waits on a bucket
AUTH = {"Authorization": "Bearer life-key"}
OTHER = {"Authorization": "Bearer other-key"}

CONFIG = """
[http]
listen = "127.0.0.1:0"
[smpp]
listen = "127.0.0.1:0"
[database]
data_dir = "{data_dir}"
[[carriers]]
name = "sim"
port = {carrier_port}
system_id = "router"
password = "secret"
reconnect_delay = 0.2
reconnect_max_delay = 0.5
[[routes]]
prefix = "1"
carriers = [ {{ name = "sim", cost = "0.004" }} ]
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "life"
credit = "1000000"
api_keys = ["life-key"]
webhook_secret = "hook-secret"
callback_url = "{webhook_url}"
[[accounts]]
id = "other"
credit = "1000000"
api_keys = ["other-key"]
[[numbers]]
number = "{sender}"
account = "life"
type = "short_code"
{extra}
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


def _write_config(
    path: Path, data_dir: Path, carrier_port: int, webhook: WebhookReceiver, extra: str = ""
) -> Path:
    path.write_text(
        CONFIG.format(
            data_dir=data_dir,
            carrier_port=carrier_port,
            webhook_url=webhook.url,
            sender=SENDER,
            extra=extra,
        )
    )
    return path


def _postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return None
    return int(pid_file.read_text().split()[0])


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its new parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _post(
    base_url: str, to: str, text: str, headers: dict[str, str] = AUTH
) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(base_url + "/v1/messages", json={"from": SENDER, "to": to, "text": text}) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_acknowledged_messages_survive_sigkill_with_embedded_postgres(
    tmp_path: Path, data_dir: Path, webhook: WebhookReceiver
) -> None:
    # The carrier is down at first: acknowledged messages wait in their queue.
    carrier = CarrierSimulator(system_id="router", password="secret", receipt_delay=0.05)
    await carrier.start()
    port = carrier.port
    await carrier.stop()
    config = _write_config(tmp_path / "r.toml", data_dir, port, webhook)
    env = {"SMSROUTER_DATABASE_URL": ""}  # the embedded PostgreSQL, as in the quick start
    first = RouterProcess(config, env=env)
    await first.start()
    try:
        ids = []
        for i in range(5):
            status, body = await _post(first.base_url, f"+1415555{i:04d}", f"crash {i}")
            assert status == 202, body
            ids.append(body["messages"][0]["id"])
        orphan = _postmaster_pid(data_dir)
        assert orphan is not None and _alive(orphan)
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        await first.proc.wait()
    finally:
        await first.kill()
    # Killed without a word: its PostgreSQL is still running, orphaned.
    assert _alive(orphan)

    carrier = CarrierSimulator(system_id="router", password="secret", receipt_delay=0.05)
    await carrier.start(port=port)
    second = RouterProcess(config, env=env)
    try:
        await second.start()
        # The new daemon stopped the orphan (by its verified PID) and runs its own.
        assert not _alive(orphan)
        callbacks = await webhook.wait_for(5, timeout=30)
        assert sorted(c.body["id"] for c in callbacks) == sorted(ids)
        assert {c.body["status"] for c in callbacks} == {"delivered"}
        assert sorted(s.text for s in carrier.submits) == [f"crash {i}" for i in range(5)]
        pg = _postmaster_pid(data_dir)
        assert pg is not None
        code = await second.terminate()
        assert code == 0, second.output()
        # SIGTERM stops everything the daemon started, PostgreSQL included.
        assert not _alive(pg)
        assert _postmaster_pid(data_dir) is None
    finally:
        await second.kill()
        await carrier.stop()
        with contextlib.suppress(Exception):
            pid = _postmaster_pid(data_dir)
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_sighup_reloads_numbers_and_other_accounts_see_nothing(
    tmp_path: Path, database_url: str, webhook: WebhookReceiver
) -> None:
    carrier = CarrierSimulator(system_id="router", password="secret", receipt_delay=0.05)
    await carrier.start()
    config = _write_config(tmp_path / "r.toml", tmp_path / "unused", carrier.port, webhook)
    router = RouterProcess(config, env={"SMSROUTER_DATABASE_URL": database_url})
    try:
        await router.start()
        status, body = await _post(router.base_url, "+14155550100", "mine")
        assert status == 202, body
        message_id = body["messages"][0]["id"]
        async with (
            aiohttp.ClientSession(headers=OTHER) as http,
            http.get(router.base_url + f"/v1/messages/{message_id}") as resp,
        ):
            assert resp.status == 404
            assert resp.content_type == "application/problem+json"

        # "other" has no sender yet; after the reload it owns one.
        async with (
            aiohttp.ClientSession(headers=OTHER) as http,
            http.post(
                router.base_url + "/v1/messages",
                json={"from": "54321", "to": "+14155550100", "text": "x"},
            ) as resp,
        ):
            assert resp.status == 422
        _write_config(
            config, tmp_path / "unused", carrier.port, webhook,
            extra='[[numbers]]\nnumber = "54321"\naccount = "other"\ntype = "short_code"\n',
        )  # fmt: skip
        assert router.proc is not None
        router.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            async with (
                aiohttp.ClientSession(headers=OTHER) as http,
                http.post(
                    router.base_url + "/v1/messages",
                    json={"from": "54321", "to": "+14155550100", "text": "after reload"},
                ) as resp,
            ):
                if resp.status == 202:
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("reload did not take effect:\n" + router.output())
        assert any(line.get("event") == "config reloaded" for line in router.lines)
        # The carrier bind survived the reload: the new sender's message goes out.
        for _ in range(100):
            if any(s.text == "after reload" for s in carrier.submits):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("message after reload never reached the carrier")
        assert await router.terminate() == 0
    finally:
        await router.kill()
        await carrier.stop()
