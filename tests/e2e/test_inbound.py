"""Inbound messages (MO): from the carrier, reassembled, to the account that
owns the number — by signed webhook, or on its receiving SMPP bind."""

from __future__ import annotations

import asyncio
import time

import pytest
import smpplib.client

from smsrouter.sims.carrier import CarrierSimulator
from smsrouter.sims.webhook import WebhookReceiver
from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess

CONFIG = """
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "app"
credit = "1000000"
api_keys = ["app-key"]
webhook_secret = "hook-secret"
inbound_url = "{inbound_url}"
[[accounts]]
id = "partner"
credit = "1000000"
smpp = {{ system_id = "partner", password = "pw-1", max_binds = 2 }}
[[numbers]]
number = "+14155550101"
account = "app"
[[numbers]]
number = "12345"
account = "partner"
type = "short_code"
"""


@pytest.fixture
async def router(
    start_router: StartRouter, carrier: CarrierSimulator, webhook: WebhookReceiver
) -> RouterProcess:
    return await start_router(CONFIG.format(inbound_url=webhook.url))


async def test_long_mo_is_reassembled_and_posted_signed(
    router: RouterProcess, carrier: CarrierSimulator, webhook: WebhookReceiver
) -> None:
    text = "Reply from the handset, long enough to need two parts. " * 4
    statuses = await carrier.send_mo("+14155550199", "+14155550101", text)
    assert statuses == [0, 0], "the router acknowledges every part"
    (callback,) = await webhook.wait_for(1, timeout=15)
    assert callback.signature_ok
    assert callback.body == {
        "type": "mo",
        "carrier": "sim",
        "from": "+14155550199",
        "to": "+14155550101",
        "text": text,
        "parts": 2,
        "complete": True,
        "received_at": callback.body["received_at"],
        "keyword": None,
    }


def _receive_mo(port: int, expected: int) -> list:
    client = smpplib.client.Client("127.0.0.1", port, timeout=10, allow_unknown_opt_params=True)
    received: list = []
    client.set_message_received_handler(lambda pdu: received.append(pdu))
    client.connect()
    try:
        client.bind_receiver(system_id="partner", password="pw-1")
        deadline = time.monotonic() + 15
        while len(received) < expected and time.monotonic() < deadline:
            client.read_once()
        client.unbind()
    finally:
        client.disconnect()
    return received


async def test_mo_for_a_partner_goes_to_its_receiver_bind(
    router: RouterProcess, carrier: CarrierSimulator
) -> None:
    # Sent before the partner binds: it waits in the outbox for the bind.
    assert await carrier.send_mo("+14155550199", "12345", "STOP") == [0]
    received = await asyncio.to_thread(_receive_mo, router.smpp_port, 1)
    assert len(received) == 1
    mo = received[0]
    assert mo.esm_class == 0
    assert mo.short_message == b"STOP"
    assert (mo.source_addr, mo.source_addr_ton) == (b"14155550199", 1)
    assert (mo.destination_addr, mo.dest_addr_ton) == (b"12345", 3)
