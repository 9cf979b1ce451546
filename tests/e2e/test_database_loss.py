"""The database lost under load (CONTRACT §11): nothing acknowledged is lost,
none stays queued, and a part goes twice only if it was outstanding at a
carrier when the database went away (at most one window per bind).

The router runs as a subprocess on a PostgreSQL server of the test's own
(killed and restarted by the test) or on the suite's server (whose backends
the test terminates), with the carrier simulator and a webhook receiver in
the test's loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest

from smsrouter.embedded_pg import HOST, ROLE
from smsrouter.sims.carrier import CarrierSimulator
from smsrouter.sims.webhook import WebhookReceiver
from tests.e2e.daemon import RouterProcess
from tests.own_pg import OwnPostgres

WINDOW = 16
WAIT = 120.0

CONFIG = """
[http]
listen = "127.0.0.1:0"
[smpp]
listen = "127.0.0.1:0"
[[carriers]]
name = "sim"
port = {carrier_port}
window = {window}
reconnect_delay = 0.1
reconnect_max_delay = 0.5
[[routes]]
prefix = "1"
carriers = [ {{ name = "sim", cost = "0.004" }} ]
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "acc"
credit = "1000000"
api_keys = ["acc-key"]
callback_url = "{webhook_url}"
webhook_secret = "hook-secret"
{numbers}
[shutdown]
drain_seconds = 2
"""


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSimulator]:
    sim = CarrierSimulator(receipt_delay=0.02, seed=1)
    await sim.start()
    yield sim
    await sim.stop()


def _config(
    tmp_path: Path, carrier: CarrierSimulator, webhook: WebhookReceiver, numbers: dict[str, float]
) -> Path:
    lines = "\n".join(
        f'[[numbers]]\nnumber = "{n}"\naccount = "acc"\ntype = "short_code"\nrate = {rate}'
        for n, rate in numbers.items()
    )
    path = tmp_path / "router.toml"
    path.write_text(
        CONFIG.format(
            carrier_port=carrier.port, webhook_url=webhook.url, window=WINDOW, numbers=lines
        )
    )
    return path


async def _all_final(dsn: str, ids: set[str]) -> Counter[str]:
    """Wait (bounded) until every message is delivered; their statuses."""
    rows: list[asyncpg.Record] = []
    deadline = asyncio.get_running_loop().time() + WAIT
    while asyncio.get_running_loop().time() < deadline:
        try:
            conn = await asyncpg.connect(dsn)
            try:
                rows = await conn.fetch(
                    "SELECT id::text, status FROM messages WHERE id = ANY($1::uuid[])", list(ids)
                )
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError):
            rows = []
        if len(rows) == len(ids) and all(r["status"] == "delivered" for r in rows):
            break
        await asyncio.sleep(0.25)
    return Counter(r["status"] for r in rows)


async def _callbacks_for(webhook: WebhookReceiver, ids: set[str]) -> set[str]:
    called: set[str] = set()
    for _ in range(int(WAIT * 4)):
        called = {c.body["id"] for c in webhook.callbacks if c.body.get("status") == "delivered"}
        if ids <= called:
            break
        await asyncio.sleep(0.25)
    return called


class Database:
    """Where the router under test keeps its data, and how the test kills it:
    a server of the test's own that the test restarts (`external`), or the
    daemon's embedded server, which the daemon itself restarts."""

    def __init__(self, kind: str, own_pg: OwnPostgres | None, data_dir: Path | None) -> None:
        self.kind = kind
        self.own_pg = own_pg
        self.data_dir = data_dir

    @property
    def env(self) -> dict[str, str]:
        if self.own_pg is not None:
            return {"SMSROUTER_DATABASE_URL": self.own_pg.dsn}
        assert self.data_dir is not None
        return {"SMSROUTER_DATABASE_DATA_DIR": str(self.data_dir)}

    @property
    def dsn(self) -> str:
        if self.own_pg is not None:
            return self.own_pg.dsn
        assert self.data_dir is not None
        password = (self.data_dir / "password").read_text().strip()
        port = int((self.data_dir / "port").read_text())
        return f"postgresql://{ROLE}:{quote(password, safe='')}@{HOST}:{port}/smsrouter"

    def postmaster(self) -> int | None:
        if self.own_pg is not None:
            return self.own_pg.server.pid
        assert self.data_dir is not None
        try:
            lines = (self.data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        return int(lines[0]) if len(lines) >= 8 and lines[7].strip() == "ready" else None

    def kill(self) -> int:
        pid = self.postmaster()
        assert pid is not None
        if self.own_pg is not None:
            self.own_pg.kill_postmaster()
        else:
            os.kill(pid, signal.SIGKILL)
        return pid

    async def back(self, killed: int) -> None:
        """The server serves again: restarted by the test, or by the daemon
        within 5 s (CONTRACT §11)."""
        if self.own_pg is not None:
            await self.own_pg.restart()
            return
        async with asyncio.timeout(5.0):
            while self.postmaster() in (None, killed):  # noqa: ASYNC110 (a file, no event)
                await asyncio.sleep(0.05)


@pytest.fixture(params=["external", "embedded"])
async def database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    if request.param == "external":
        server = OwnPostgres.in_temporary_dir()
        try:
            await server.start()
            yield Database("external", server, None)
        finally:
            await server.stop()
            server.remove_files()
        return
    # Not under pytest's 0700 temporary root: the server's own user must
    # reach it, or the launcher would relocate the cluster.
    top = Path(tempfile.mkdtemp(prefix="smsrouter-e2e-"))
    top.chmod(0o755)
    try:
        yield Database("embedded", None, top / "pg")
    finally:
        shutil.rmtree(top, ignore_errors=True)


async def test_postmaster_killed_while_messages_queue(
    tmp_path: Path, database: Database, carrier: CarrierSimulator, webhook: WebhookReceiver
) -> None:
    """1,000 messages queued behind a sender at 50/s; the postmaster SIGKILLed
    mid-way (the router keeps running): every one ends delivered with its
    callback, duplicates stay within one window. A server of the test's own
    is back after 3 s, meanwhile nothing is released and intake answers
    503; the daemon's embedded server is restarted by the daemon."""
    sender = "20001"
    config = _config(tmp_path, carrier, webhook, {sender: 50})
    router = RouterProcess(config, env=database.env)
    try:
        await router.start()
        await router.wait_for_event("carrier bound")
        ids: set[str] = set()
        headers = {"Authorization": "Bearer acc-key"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for batch in range(2):
                to = [f"+1415555{batch * 500 + i:04d}" for i in range(500)]
                body = {"from": sender, "to": to, "text": "queued through an outage"}
                async with http.post(router.base_url + "/v1/messages", json=body) as resp:
                    assert resp.status == 202, await resp.text()
                    answer = await resp.json()
                assert not answer["rejected"]
                ids |= {m["id"] for m in answer["messages"]}
            assert len(ids) == 1000

            async with asyncio.timeout(30):
                while len(carrier.submits) < 100:  # noqa: ASYNC110 (a counter, no event)
                    await asyncio.sleep(0.05)
            killed = database.kill()
            killed_at = datetime.now(UTC)
            if database.kind == "external":
                await asyncio.sleep(1.0)
                async with http.post(
                    router.base_url + "/v1/messages",
                    json={"from": sender, "to": "+14155559999", "text": "while down"},
                ) as resp:
                    assert resp.status == 503, await resp.text()
                    assert resp.headers.get("Retry-After")
                submits_when_held = len(carrier.submits)
                await asyncio.sleep(2.0)
                # Nothing is released while the database cannot record it.
                assert len(carrier.submits) == submits_when_held
            await database.back(killed)

        statuses = await _all_final(database.dsn, ids)
        assert statuses == {"delivered": len(ids)}, statuses
        called = await _callbacks_for(webhook, ids)
        assert ids <= called, f"{len(ids - called)} acknowledged messages had no callback"

        at_carrier = Counter(s.destination_addr for s in carrier.submits)
        assert len(at_carrier) == len(ids)
        duplicates = {to: n for to, n in at_carrier.items() if n > 1}
        assert sum(n - 1 for n in duplicates.values()) <= WINDOW, duplicates
        # A duplicate's first copy was outstanding when the server died.
        first_seen: dict[str, datetime] = {}
        for s in carrier.submits:
            first_seen.setdefault(s.destination_addr, s.at)
        for to in duplicates:
            assert abs(first_seen[to] - killed_at) < timedelta(seconds=2), (to, first_seen[to])
        print(
            f"{database.kind}: at_carrier={sum(at_carrier.values())} duplicates={len(duplicates)}"
        )
        assert await router.terminate() == 0
        if database.kind == "embedded":
            # The daemon stopped the server it restarted.
            assert database.postmaster() is None
    finally:
        await router.kill()
        print(router.output())


async def _terminate_sessions(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


async def test_terminated_backends_during_load_double_nothing(
    tmp_path: Path, database_url: str, carrier: CarrierSimulator, webhook: WebhookReceiver
) -> None:
    """Three rounds of pg_terminate_backend of every router session while
    traffic flows: zero duplicates at the carrier, every acknowledged
    message delivered with its callback."""
    senders = {str(30000 + i): 1000.0 for i in range(10)}
    config = _config(tmp_path, carrier, webhook, senders)
    router = RouterProcess(config, env={"SMSROUTER_DATABASE_URL": database_url})
    acked: set[str] = set()
    stop = asyncio.Event()

    async def load(w: int, http: aiohttp.ClientSession) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            body = {"from": str(30000 + w % 10), "to": f"+1415{w:03d}{n:04d}", "text": "load"}
            try:
                async with http.post(router.base_url + "/v1/messages", json=body) as resp:
                    if resp.status == 202:
                        acked.add((await resp.json())["messages"][0]["id"])
                    else:
                        await asyncio.sleep(0.05)  # 503 while the sessions come back
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.05)

    try:
        await router.start()
        await router.wait_for_event("carrier bound")
        headers = {"Authorization": "Bearer acc-key"}
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
            workers = [asyncio.create_task(load(w, http)) for w in range(8)]
            try:
                for _ in range(3):
                    await asyncio.sleep(1.5)
                    assert await _terminate_sessions(database_url) >= 1
                await asyncio.sleep(1.5)
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*workers), 30)
        assert len(acked) > 200, "the load never got going"

        statuses = await _all_final(database_url, acked)
        assert statuses == {"delivered": len(acked)}, statuses
        called = await _callbacks_for(webhook, acked)
        assert acked <= called, f"{len(acked - called)} acknowledged messages had no callback"
        at_carrier = Counter(s.destination_addr for s in carrier.submits)
        duplicates = {to: n for to, n in at_carrier.items() if n > 1}
        assert not duplicates, duplicates
        print(f"acknowledged={len(acked)} at_carrier={sum(at_carrier.values())}")
        assert await router.terminate() == 0
    finally:
        await router.kill()
        print(router.output())
