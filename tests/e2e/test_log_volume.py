"""Logs stay readable (CONTRACT §11): a fault that every message meets is
logged once per interval with a count, not once per message. Before, a
10 s carrier stall wrote 34,802 "retrying later" lines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from smsrouter.sims.carrier import CarrierSimulator
from tests.e2e.conftest import CARRIER_PASSWORD, CARRIER_SYSTEM_ID, StartRouter

MESSAGES = 300

CONFIG = """
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "acc"
credit = "1000000"
api_keys = ["acc-key"]
[[numbers]]
number = "12345"
account = "acc"
type = "short_code"
rate = 1000
"""


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSimulator]:
    """A carrier that answers every submit_sm ESME_RSYSERR: a temporary
    error, so every message is retried, again and again."""
    sim = CarrierSimulator(
        system_id=CARRIER_SYSTEM_ID, password=CARRIER_PASSWORD, errors={"0x08": 1.0}
    )
    await sim.start()
    yield sim
    await sim.stop()


async def test_a_fault_every_message_meets_is_logged_once_per_interval(
    start_router: StartRouter, carrier: CarrierSimulator
) -> None:
    router = await start_router(CONFIG)
    headers = {"Authorization": "Bearer acc-key"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for batch in range(MESSAGES // 100):
            to = [f"+1415555{batch * 100 + i:04d}" for i in range(100)]
            body = {"from": "12345", "to": to, "text": "meets a failing carrier"}
            async with http.post(router.base_url + "/v1/messages", json=body) as resp:
                assert resp.status == 202, await resp.text()
    # Every message fails (at the carrier, then at its open breaker) and is
    # retried after 1, 2 and 5 s: over a thousand failures in 9 s.
    await asyncio.sleep(9.0)
    assert carrier.received >= 1
    assert carrier.accepted == 0
    noisy = ("retrying later", "carrier failed temporarily")
    lines = [line for line in router.lines if line.get("event") in noisy]
    # Each (event, reason) at most once per 10 s.
    assert 1 <= len(lines) <= 6, [(line["event"], line.get("error")) for line in lines]
    assert {line["event"] for line in lines} == set(noisy)
