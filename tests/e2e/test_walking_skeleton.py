"""One message through the real router, both ingresses, end to end.

The router runs as a subprocess (`python -m smsrouter run`) on a fresh
PostgreSQL database; the carrier simulator and the webhook receiver run in
the test over real loopback TCP, so the test sees exactly what a carrier
and an app would see.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions

from smsrouter.daemon import package_version
from smsrouter.sims.carrier import CarrierSimulator
from smsrouter.sims.webhook import WebhookReceiver
from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess
from tests.tools import require_tool

SENDER = "+14155550101"
RECIPIENT = "+14155550123"
AUTH = {"Authorization": "Bearer e2e-key"}

CONFIG = """
[[prices]]
prefix = "1"
price = "0.0062"
[[accounts]]
id = "e2e"
credit = "1000000"
api_keys = ["e2e-key"]
smpp = {{ system_id = "e2e", password = "e2e-pass", max_binds = 2 }}
webhook_secret = "hook-secret"
callback_url = "{webhook_url}"
[[numbers]]
number = "{sender}"
account = "e2e"
type = "short_code"
[shutdown]
drain_seconds = 3
"""


@pytest.fixture
def router_site(each_build: Path | None) -> Path | None:
    """Every test here runs on the interpreted and the compiled build."""
    return each_build


@pytest.fixture
async def router(
    start_router: StartRouter, carrier: CarrierSimulator, webhook: WebhookReceiver
) -> RouterProcess:
    return await start_router(CONFIG.format(webhook_url=webhook.url, sender=SENDER))


async def _eventually(predicate, timeout: float = 15.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_http_message_reaches_carrier_and_receipt_comes_back(
    router: RouterProcess, carrier: CarrierSimulator, webhook: WebhookReceiver
) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.post(
            router.base_url + "/v1/messages",
            json={
                "from": SENDER,
                "to": RECIPIENT,
                "text": "Hello €uro [world]",
                "client_ref": "r-1",
            },
        ) as resp:
            assert resp.status == 202, await resp.text()
            body = await resp.json()
        (accepted,) = body["messages"]
        assert accepted["status"] == "accepted"
        assert accepted["to"] == RECIPIENT
        assert accepted["encoding"] == "gsm7"
        assert accepted["parts"] == 1
        assert accepted["price"] == "0.0062"
        assert body["rejected"] == []

        await _eventually(lambda: len(carrier.submits) == 1, what="submit_sm at the carrier")
        submit = carrier.submits[0]
        assert submit.source_addr == SENDER.lstrip("+")
        assert submit.destination_addr == RECIPIENT.lstrip("+")
        assert submit.dest_addr_ton == 1
        assert submit.text == "Hello €uro [world]"

        callbacks = await webhook.wait_for(1, timeout=15)
        callback = callbacks[0]
        assert callback.signature_ok, callback.signature
        assert callback.body["id"] == accepted["id"]
        assert callback.body["status"] == "delivered"
        assert callback.body["client_ref"] == "r-1"
        assert callback.body["carrier"] == "sim"

        async with http.get(router.base_url + f"/v1/messages/{accepted['id']}") as resp:
            assert resp.status == 200
            message = await resp.json()
        assert message["status"] == "delivered"
        assert message["error_code"] is None
        assert message["carrier"] == "sim"
        assert message["from"] == SENDER
        assert [e["status"] for e in message["events"]] == [
            "accepted", "queued", "sent", "delivered",
        ]  # fmt: skip

        # Another account's key, or an unknown key, cannot see it.
        async with http.get(
            router.base_url + f"/v1/messages/{accepted['id']}",
            headers={"Authorization": "Bearer nope"},
        ) as resp:
            assert resp.status == 401
            assert resp.content_type == "application/problem+json"

        # The callback counter moves once the webhook's answer is read,
        # just after the receiver recorded the call: poll briefly.
        for _ in range(100):
            async with http.get(router.base_url + "/metrics") as resp:
                text = await resp.text()
            if 'smsrouter_callbacks_total{result="ok"} 1.0' in text:
                break
            await asyncio.sleep(0.05)
        assert 'smsrouter_messages_received_total{account="e2e",ingress="http"} 1.0' in text
        assert 'smsrouter_messages_submitted_total{carrier="sim"} 1.0' in text
        assert 'smsrouter_dlr_received_total{carrier="sim",status="delivered"} 1.0' in text
        assert 'smsrouter_callbacks_total{result="ok"} 1.0' in text
        build, version = router.ready["build"], package_version()
        assert f'smsrouter_build_info{{build="{build}",version="{version}"}} 1.0' in text
        for kind in ("webhook", "smpp_receipt", "mo"):
            assert re.search(rf'^smsrouter_outbox_backlog{{kind="{kind}"}} [01]\.0$', text, re.M)
        promtool = require_tool("promtool", "prometheus")
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text.encode(), capture_output=True, check=False
        )
        assert check.returncode == 0, check.stdout + check.stderr


def _smpp_round_trip(port: int) -> tuple[str, list[smpplib.command.Command]]:
    """A partner ESME (smpplib, third-party): bind, submit, wait for the receipt."""
    client = smpplib.client.Client("127.0.0.1", port, timeout=15, allow_unknown_opt_params=True)
    sent: list[smpplib.command.Command] = []
    received: list[smpplib.command.Command] = []
    client.set_message_sent_handler(lambda pdu: sent.append(pdu))
    client.set_message_received_handler(lambda pdu: received.append(pdu))
    client.connect()
    try:
        client.bind_transceiver(system_id="e2e", password="e2e-pass")
        client.send_message(
            source_addr_ton=smpplib.consts.SMPP_TON_INTL,
            source_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
            source_addr=SENDER.lstrip("+"),
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
            destination_addr=RECIPIENT.lstrip("+"),
            short_message=b"via smpp",
            data_coding=0,
            registered_delivery=1,
        )
        deadline = time.monotonic() + 15
        while not received and time.monotonic() < deadline:
            client.read_once()
        client.unbind()
    finally:
        client.disconnect()
    message_id = sent[0].message_id.decode() if sent else ""
    return message_id, received


async def test_smpp_partner_submits_and_gets_its_receipt(
    router: RouterProcess, carrier: CarrierSimulator
) -> None:
    message_id, received = await asyncio.to_thread(_smpp_round_trip, router.smpp_port)
    assert message_id, "no submit_sm_resp message id"
    assert len(received) == 1
    receipt = received[0]
    assert receipt.esm_class & 0x04
    text = receipt.short_message.decode()
    assert text.startswith(f"id:{message_id} ")
    assert "stat:DELIVRD" in text
    assert receipt.receipted_message_id.decode() == message_id
    assert receipt.message_state == 2  # DELIVERED
    assert carrier.submits[-1].text == "via smpp"

    # The same id is known to the HTTP API, in the same id space.
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.get(router.base_url + f"/v1/messages/{message_id}") as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["status"] == "delivered"


def _bind_status(port: int, password: str) -> int:
    client = smpplib.client.Client("127.0.0.1", port, timeout=10, allow_unknown_opt_params=True)
    client.connect()
    try:
        client.bind_transmitter(system_id="e2e", password=password)
        return 0
    except smpplib.exceptions.PDUError as exc:
        return exc.args[1]
    finally:
        client.disconnect()


def _garbage(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # command_length 7: shorter than a header, a framing error.
        sock.sendall(b"\x00\x00\x00\x07garbage-bytes-that-are-no-pdu")
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except TimeoutError:
            pass
    return data


async def test_bad_input_gets_its_error_and_the_router_keeps_serving(
    router: RouterProcess, carrier: CarrierSimulator
) -> None:
    url = router.base_url + "/v1/messages"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"from": SENDER, "to": RECIPIENT, "text": "x"}) as resp:
            assert resp.status == 401
        async with http.post(
            url, json={"from": SENDER, "to": RECIPIENT, "text": "x"},
            headers={"Authorization": "Bearer wrong"},
        ) as resp:  # fmt: skip
            assert resp.status == 401
            problem = await resp.json(content_type=None)
            assert problem["status"] == 401 and problem["type"] and problem["title"]
        async with http.post(url, data=b"{not json", headers=AUTH) as resp:
            assert resp.status == 400
            assert resp.content_type == "application/problem+json"
        async with http.post(
            url, json={"from": SENDER, "to": "+1 not a number", "text": "x"}, headers=AUTH
        ) as resp:
            assert resp.status == 422
            problem = await resp.json(content_type=None)
            assert problem["errors"][0]["field"] == "to"
        async with http.post(
            url, json={"from": "+19995550000", "to": RECIPIENT, "text": "x"}, headers=AUTH
        ) as resp:
            assert resp.status == 422
            problem = await resp.json(content_type=None)
            assert [e["field"] for e in problem["errors"]] == ["from"]
        async with http.post(url, json={"from": SENDER, "to": RECIPIENT}, headers=AUTH) as resp:
            assert resp.status == 422
            problem = await resp.json(content_type=None)
            assert problem["errors"][0]["field"] == "text"
        async with http.post(
            url,
            json={"from": SENDER, "to": RECIPIENT, "text": "x", "send_at": "2099-01-01T00:00:00Z"},
            headers=AUTH,
        ) as resp:
            assert resp.status == 422
            problem = await resp.json(content_type=None)
            assert [(e["field"], e["code"]) for e in problem["errors"]] == [("send_at", "too_far")]

    assert await asyncio.to_thread(_bind_status, router.smpp_port, "wrong") == 0x0E
    reply = await asyncio.to_thread(_garbage, router.smpp_port)
    # generic_nack (0x80000000) with ESME_RINVCMDLEN (0x02), then closed.
    assert reply[4:8] == b"\x80\x00\x00\x00"
    assert reply[8:12] == b"\x00\x00\x00\x02"

    # Still serving, on both ingresses.
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(router.base_url + "/healthz") as resp:
            assert resp.status == 200
        async with http.post(url, json={"from": SENDER, "to": RECIPIENT, "text": "ok"}) as resp:
            assert resp.status == 202
    assert await asyncio.to_thread(_bind_status, router.smpp_port, "e2e-pass") == 0


async def test_sigterm_drains_and_exits_zero(router: RouterProcess) -> None:
    code = await router.terminate()
    assert code == 0, router.output()
    assert any(line.get("event") == "stopped" for line in router.lines)


async def test_batch_gives_per_recipient_results(
    router: RouterProcess, carrier: CarrierSimulator
) -> None:
    to = ["+14155550111", "+1 415 555 0112", "not-a-number", "+447700900123", "+14155550113"]
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.post(
            router.base_url + "/v1/messages", json={"from": SENDER, "to": to, "text": "batch"}
        ) as resp,
    ):
        assert resp.status == 202
        body = await resp.json()
    assert [m["to"] for m in body["messages"]] == [to[0], to[1], to[4]]
    assert len({m["id"] for m in body["messages"]}) == 3
    assert [(r["to"], r["code"]) for r in body["rejected"]] == [
        ("not-a-number", "invalid_number"),
        ("+447700900123", "no_route"),
    ]
    await _eventually(lambda: len(carrier.submits) == 3, what="three submits")
    assert sorted(s.destination_addr for s in carrier.submits) == [
        "14155550111", "14155550112", "14155550113",
    ]  # fmt: skip
