"""A full sender queue refuses, clearly, on both ingresses: HTTP 429 with
Retry-After, SMPP ESME_RMSGQFUL. Nothing queued is dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import smpplib.client
import smpplib.exceptions

from smsrouter.sims.carrier import CarrierSimulator
from tests.e2e.conftest import StartRouter

LONG_CODE = "+14155550101"  # 1 part per 4 s: its queue fills at once

CONFIG = """
[queues]
max_per_sender = 2
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "q"
credit = "1000000"
api_keys = ["q-key"]
smpp = {{ system_id = "q", password = "q-pw" }}
[[numbers]]
number = "{sender}"
account = "q"
type = "long_code"
"""


@pytest.fixture
def router_site(each_build: Path | None) -> Path | None:
    """Every test here runs on the interpreted and the compiled build."""
    return each_build


def _smpp_submit_status(port: int) -> int:
    client = smpplib.client.Client("127.0.0.1", port, timeout=10, allow_unknown_opt_params=True)
    client.connect()
    try:
        client.bind_transmitter(system_id="q", password="q-pw")
        statuses: list[int] = []
        client.set_message_sent_handler(lambda pdu: statuses.append(pdu.status))
        client.set_error_pdu_handler(lambda pdu: statuses.append(pdu.status))
        client.send_message(
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr=LONG_CODE.lstrip("+"),
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="14155550123",
            short_message=b"one too many",
        )
        client.read_once()
        client.unbind()
        return statuses[0]
    finally:
        client.disconnect()


async def test_full_sender_queue_refuses_on_both_ingresses(
    start_router: StartRouter, carrier: CarrierSimulator
) -> None:
    router = await start_router(CONFIG.format(sender=LONG_CODE))
    url = router.base_url + "/v1/messages"
    statuses = []
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer q-key"}) as http:
        for i in range(4):
            body = {"from": LONG_CODE, "to": "+14155550123", "text": f"queued {i}"}
            async with http.post(url, json=body) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    retry_after = resp.headers.get("Retry-After")
                    problem = await resp.json(content_type=None)
    # The first leaves at once on the bucket's token, two wait, the fourth
    # finds the queue full.
    assert statuses == [202, 202, 202, 429]
    assert retry_after is not None and int(retry_after) > 0
    assert problem["status"] == 429 and "queue" in problem["title"].lower()
    assert await asyncio.to_thread(_smpp_submit_status, router.smpp_port) == 0x14  # RMSGQFUL
    # What was accepted is still queued, not dropped: the first is out.
    assert [s.text for s in carrier.submits] == ["queued 0"]
