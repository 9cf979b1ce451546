"""kill -9 under load, several times, then restart: nothing acknowledged is lost.

The router runs as a subprocess and takes HTTP traffic from many senders;
it is SIGKILLed at random moments and restarted. At the end, every message
that got a 202 must have reached the carrier, ended `delivered` and had its
callback; the only duplicates allowed at the carrier are requests that
were outstanding at a crash: sent, but not yet recorded as taken.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from smsrouter.sims.carrier import CarrierSimulator
from smsrouter.sims.webhook import WebhookReceiver
from tests.e2e.daemon import RouterProcess

SENDERS = [str(20000 + i) for i in range(20)]  # short codes
WINDOW = 16
KILLS = 3
WORKERS = 16

CONFIG = """
[http]
listen = "127.0.0.1:0"
[smpp]
listen = "127.0.0.1:0"
[log]
level = "info"
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
id = "load"
credit = "1000000"
api_keys = ["load-key"]
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


async def _load(
    router: RouterProcess, acked: dict[str, str], stop: asyncio.Event, round_no: int
) -> None:
    """POST until told to stop; record what was acknowledged (token → id)."""
    counter = iter(range(10**9))

    async def worker(w: int, http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            # Unique over the whole test: texts are how the carrier's record
            # is matched to what was acknowledged.
            token = f"r{round_no}-w{w}-{next(counter)}"
            body = {
                "from": random.choice(SENDERS),
                "to": f"+1415555{random.randrange(10000):04d}",
                "text": token,
            }
            try:
                async with http.post(router.base_url + "/v1/messages", json=body) as resp:
                    if resp.status == 202:
                        acked[token] = (await resp.json())["messages"][0]["id"]
            except (TimeoutError, aiohttp.ClientError):
                return  # the router died under us: that request is unknown

    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(
        headers={"Authorization": "Bearer load-key"}, timeout=timeout
    ) as http:
        await asyncio.gather(*(worker(w, http) for w in range(WORKERS)))


async def test_sigkill_under_load_loses_nothing_acknowledged(
    tmp_path: Path, database_url: str, carrier: CarrierSimulator, webhook: WebhookReceiver
) -> None:
    rng = random.Random(7)
    numbers = "\n".join(
        f'[[numbers]]\nnumber = "{s}"\naccount = "load"\ntype = "short_code"\nrate = 1000'
        for s in SENDERS
    )
    config = tmp_path / "router.toml"
    config.write_text(
        CONFIG.format(
            carrier_port=carrier.port, webhook_url=webhook.url, window=WINDOW, numbers=numbers
        )
    )
    env = {"SMSROUTER_DATABASE_URL": database_url}
    acked: dict[str, str] = {}
    kills: list[datetime] = []
    for round_no in range(KILLS):
        router = RouterProcess(config, env=env)
        try:
            await router.start()
            stop = asyncio.Event()
            load = asyncio.create_task(_load(router, acked, stop, round_no))
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            assert router.proc is not None
            router.proc.send_signal(signal.SIGKILL)
            kills.append(datetime.now(UTC))
            await router.proc.wait()
            stop.set()
            await asyncio.wait_for(load, 10)
        finally:
            await router.kill()

    assert len(acked) > 100, "the load never got going"
    final = RouterProcess(config, env=env)
    try:
        await final.start()
        ids = set(acked.values())
        conn = await asyncpg.connect(database_url)
        try:
            for _ in range(300):
                rows = await conn.fetch(
                    "SELECT id::text, status FROM messages WHERE id = ANY($1::uuid[])", list(ids)
                )
                if len(rows) == len(ids) and all(r["status"] == "delivered" for r in rows):
                    break
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        statuses = Counter(r["status"] for r in rows)
        assert len(rows) == len(ids), "acknowledged messages missing from the store"
        assert statuses == {"delivered": len(ids)}, statuses

        for _ in range(300):
            called = {
                c.body["id"] for c in webhook.callbacks if c.body.get("status") == "delivered"
            }
            if ids <= called:
                break
            await asyncio.sleep(0.1)
        assert ids <= called, f"{len(ids - called)} acknowledged messages had no callback"
        assert all(c.signature_ok for c in webhook.callbacks)

        at_carrier = Counter(s.text for s in carrier.submits)
        missing = [t for t in acked if at_carrier[t] == 0]
        assert not missing, f"{len(missing)} acknowledged messages never reached the carrier"
        duplicates = sum(n - 1 for n in at_carrier.values() if n > 1)
        # Only requests outstanding at a crash may go twice: a part the
        # carrier took whose record had not committed when the router died.
        # So every duplicate's first copy reached the carrier shortly before
        # a kill (within a commit's latency; 5 s is generous on a loaded
        # machine), and no message goes more than once per kill.
        first_seen: dict[str, datetime] = {}
        for submit in carrier.submits:
            first_seen.setdefault(submit.text, submit.at)
        for token, n in at_carrier.items():
            if n == 1:
                continue
            assert n <= KILLS + 1, (token, n)
            at = first_seen[token]
            # The simulator shares the test's event loop and stamps a submit
            # when it reads it: bytes the router wrote just before it died
            # may be read (and stamped) a moment after the kill.
            assert any(-timedelta(seconds=1) <= k - at < timedelta(seconds=5) for k in kills), (
                f"{token} went twice but its first copy ({at}) was not outstanding at a"
                f" crash ({kills})"
            )
        print(f"acknowledged={len(acked)} at_carrier={len(at_carrier)} duplicates={duplicates}")
        assert await final.terminate() == 0
    finally:
        await final.kill()
