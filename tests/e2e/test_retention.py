"""CONTRACT §10 from the command line: `smsrouter db retention [--now]` on
the database of a running router drops the expired days' partitions and
prints them, keeps a day that holds a message not ended, and the router
goes on taking messages through it all."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from smsrouter.sims.carrier import CarrierSimulator
from tests.e2e.conftest import KEY_A, SENDER, TWO_ACCOUNTS, StartRouter
from tests.e2e.daemon import RouterProcess
from tests.tools import eventually

ROOT = Path(__file__).resolve().parents[2]
TODAY = datetime.now(UTC).date()


async def _retention(router: RouterProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`smsrouter db retention` on the router's config and database."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "smsrouter", "db", "retention", "--config", str(router.config_path),
         *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
        env=router.env,
    )  # fmt: skip


def _days_later(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat().replace("+00:00", "Z")


async def _send(http: aiohttp.ClientSession, router: RouterProcess, **extra: Any) -> str:
    body = {"from": SENDER, "to": "+14155550100", "text": "retained?", **extra}
    async with http.post(
        router.base_url + "/v1/messages", data=json.dumps(body), headers=KEY_A
    ) as resp:
        assert resp.status == 202, await resp.text()
        message_id: str = (await resp.json())["messages"][0]["id"]
        return message_id


async def _status(http: aiohttp.ClientSession, router: RouterProcess, message_id: str) -> Any:
    async with http.get(f"{router.base_url}/v1/messages/{message_id}", headers=KEY_A) as resp:
        return resp.status, (await resp.json())


async def _delivered(http: aiohttp.ClientSession, router: RouterProcess, message_id: str) -> None:
    for _ in range(500):
        status, body = await _status(http, router, message_id)
        if status == 200 and body["status"] == "delivered":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{message_id} not delivered: {body}")


async def test_retention_drops_expired_days_and_prints_them(
    start_router: StartRouter, carrier: CarrierSimulator
) -> None:
    router = await start_router(TWO_ACCOUNTS)
    async with aiohttp.ClientSession() as http:
        first = await _send(http, router)
        await _delivered(http, router, first)

        # Today's days are not expired: nothing goes.
        now = await _retention(router)
        assert now.returncode == 0, now.stderr
        assert now.stdout == "" and "nothing to drop" in now.stderr

        # Forty days on, with the default 30 days kept: today and the days
        # made ahead are all past.
        later = await _retention(router, "--now", _days_later(40))
        assert later.returncode == 0, later.stderr
        dropped = later.stdout.split()
        for table in ("messages", "carrier_submits", "message_events", "outbox"):
            assert f"{table}_p{TODAY:%Y%m%d}" in dropped, later.stdout
        assert f"idempotency_keys_p{TODAY:%Y%m%d}" in dropped
        assert (await _status(http, router, first))[0] == 404

        # The router goes on: a message of a day without its partition waits
        # in the DEFAULT partition, and is sent and ended like any other.
        second = await _send(http, router)
        await _delivered(http, router, second)
        await eventually(lambda: len(carrier.submits) >= 2, "both messages at the carrier")
        told = await _retention(router, "--now", _days_later(0))
        assert told.returncode == 0, told.stderr
        assert "warning: messages_default holds 1 rows" in told.stderr

        # A run at the real time makes today's partitions again, the
        # DEFAULT partition's rows moved into them.
        again = await _retention(router)
        assert again.returncode == 0, again.stderr
        assert again.stdout == ""
        assert "partition made of rows of the default partition" in again.stderr
        assert "holds" not in again.stderr
        assert (await _status(http, router, second))[1]["status"] == "delivered"


async def test_a_day_with_a_message_not_ended_is_kept(start_router: StartRouter) -> None:
    router = await start_router(TWO_ACCOUNTS)
    async with aiohttp.ClientSession() as http:
        sent = await _send(http, router)
        await _delivered(http, router, sent)
        # Scheduled for tomorrow: not ended until then.
        waiting = await _send(http, router, send_at=_days_later(1))

        run = await _retention(router, "--now", _days_later(40))
        assert run.returncode == 0, run.stderr
        dropped = run.stdout.split()
        for table in ("messages", "carrier_submits", "message_events"):
            assert f"{table}_p{TODAY:%Y%m%d}" not in dropped
        assert f"kept messages_p{TODAY:%Y%m%d}: 1 messages not ended" in run.stderr
        # The days ahead were empty: they went.
        assert f"messages_p{TODAY + timedelta(days=1):%Y%m%d}" in dropped
        for message_id in (sent, waiting):
            assert (await _status(http, router, message_id))[0] == 200
