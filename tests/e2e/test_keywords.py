"""STOP, START and HELP (CONTRACT §6 "Opt-out") against the router
subprocess: a subscriber's keyword, sent by the carrier simulator as an MO,
changes the account's list before the carrier hears deliver_sm_resp; later
sends from any number of the account are refused `opted_out` over HTTP
(422) and SMPP (0x65); each keyword is answered from the number written
to, through the normal path; the MO forward carries its keyword. And a
STOP survives a SIGKILL the moment its deliver_sm_resp left.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg

from smsrouter.connectors.smpp import BindTransceiver, CommandStatus, SubmitSm, SubmitSmResp
from smsrouter.sims.carrier import CarrierSimulator
from smsrouter.sims.webhook import Callback, WebhookReceiver
from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess
from tests.raw_esme import RawEsme

KEY_SHOP = {"Authorization": "Bearer shop-key"}
KEY_CLUB = {"Authorization": "Bearer club-key"}
KEY_POOR = {"Authorization": "Bearer poor-key"}
SHOP = "+14155550101"  # the number the subscriber writes to
SHOP_OTHER = "+14155550102"  # another number of the same account
CLUB = "+14155550111"
POOR = "+14155550121"
SUB = "+14155550199"  # the subscriber
SUB2 = "+14155550198"  # a subscriber who never writes
CLUB_STOP = "Club: you left the list. Text START to come back."

CONFIG = """
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "shop"
credit = "100"
api_keys = ["shop-key"]
webhook_secret = "hook-secret"
inbound_url = "{inbound_url}"
smpp = {{ system_id = "shop", password = "shop-pw" }}
[[accounts]]
id = "club"
credit = "100"
api_keys = ["club-key"]
stop_reply = "{club_stop}"
[[accounts]]
id = "poor"
credit = "0"
api_keys = ["poor-key"]
[[numbers]]
number = "{shop}"
account = "shop"
type = "long_code"
[[numbers]]
number = "{shop_other}"
account = "shop"
type = "long_code"
[[numbers]]
number = "{club}"
account = "club"
type = "long_code"
[[numbers]]
number = "{poor}"
account = "poor"
type = "long_code"
[shutdown]
drain_seconds = 1
"""


def _config(webhook: WebhookReceiver) -> str:
    return CONFIG.format(
        inbound_url=webhook.url, club_stop=CLUB_STOP, shop=SHOP, shop_other=SHOP_OTHER,
        club=CLUB, poor=POOR,
    )  # fmt: skip


async def _send(
    http: aiohttp.ClientSession,
    router: RouterProcess,
    sender: str,
    to: str,
    key: dict[str, str] = KEY_SHOP,
) -> tuple[int, dict[str, Any]]:
    body = {"from": sender, "to": to, "text": "Your order shipped"}
    async with http.post(router.base_url + "/v1/messages", json=body, headers=key) as resp:
        return resp.status, await resp.json(content_type=None)


async def _refused_code(http: aiohttp.ClientSession, router: RouterProcess, sender: str) -> str:
    status, body = await _send(http, router, sender, SUB)
    assert status == 422, body
    (rejected,) = body["rejected"]
    assert rejected["to"] == SUB
    return str(rejected["code"])


async def _submit_over_smpp(router: RouterProcess, sender: str, to: str) -> int:
    esme = await RawEsme.connect(router.smpp_port)
    try:
        assert await esme.bind(BindTransceiver, "shop", "shop-pw") == CommandStatus.ESME_ROK
        pdu = SubmitSm(
            source_addr_ton=1, source_addr_npi=1, source_addr=sender.lstrip("+"),
            dest_addr_ton=1, dest_addr_npi=1, destination_addr=to.lstrip("+"),
            short_message=b"Your order shipped",
        )  # fmt: skip
        esme.send(pdu)
        answer = await esme.read()
        assert isinstance(answer, SubmitSmResp), answer
        return answer.command_status
    finally:
        esme.close()
        await esme.wait_closed()


async def _reply_at_carrier(carrier: CarrierSimulator, sender: str, text: str) -> None:
    """Wait until the carrier took `text` from `sender` to SUB."""
    for _ in range(300):
        if any(
            s.source_addr == sender.lstrip("+")
            and s.destination_addr == SUB.lstrip("+")
            and s.text == text
            for s in carrier.submits
        ):
            return
        await asyncio.sleep(0.05)
    seen = [(s.source_addr, s.destination_addr, s.text) for s in carrier.submits]
    raise AssertionError(f"no {text!r} from {sender} at the carrier: {seen}")


def _replies(carrier: CarrierSimulator, sender: str) -> list[str]:
    return [
        s.text
        for s in carrier.submits
        if s.source_addr == sender.lstrip("+")
        and s.destination_addr == SUB.lstrip("+")
        and s.text != "Your order shipped"
    ]


async def _forward(webhook: WebhookReceiver, text: str) -> Callback:
    """The MO forward of `text` (signed, as DLR callbacks are)."""
    for _ in range(300):
        for callback in webhook.callbacks:
            if callback.body.get("type") == "mo" and callback.body.get("text") == text:
                assert callback.signature_ok
                return callback
        await asyncio.sleep(0.05)
    raise AssertionError(f"no MO forward of {text!r}: {[c.body for c in webhook.callbacks]}")


async def test_stop_start_and_help_over_both_ingresses(
    start_router: StartRouter,
    carrier: CarrierSimulator,
    webhook: WebhookReceiver,
    database_url: str,
) -> None:
    router = await start_router(_config(webhook))
    async with aiohttp.ClientSession() as http:
        # Before: the subscriber is sent to like anyone.
        assert (await _send(http, router, SHOP, SUB))[0] == 202

        # STOP (any case, trimmed): committed before the carrier's
        # deliver_sm_resp, so the very next send is refused.
        assert await carrier.send_mo(SUB, SHOP, " Stop ") == [0]
        assert await _refused_code(http, router, SHOP) == "opted_out"
        # From any number of the account, over either ingress.
        assert await _refused_code(http, router, SHOP_OTHER) == "opted_out"
        assert await _submit_over_smpp(router, SHOP, SUB) == CommandStatus.ESME_RX_P_APPN
        assert await _submit_over_smpp(router, SHOP_OTHER, SUB) == CommandStatus.ESME_RX_P_APPN
        # Only that subscriber, only that account.
        assert (await _send(http, router, SHOP, SUB2))[0] == 202
        assert (await _send(http, router, CLUB, SUB, KEY_CLUB))[0] == 202
        # The reply: from the number written to, the default text naming
        # the account, allowed to the subscriber who just opted out.
        await _reply_at_carrier(
            carrier, SHOP, "You are unsubscribed from shop messages. Reply START to resubscribe."
        )
        stop = await _forward(webhook, " Stop ")
        assert stop.body["keyword"] == "opt_out"
        assert (stop.body["from"], stop.body["to"]) == (SUB, SHOP)

        # START lifts it; sends pass again over both ingresses.
        assert await carrier.send_mo(SUB, SHOP, "start") == [0]
        assert (await _send(http, router, SHOP_OTHER, SUB))[0] == 202
        assert await _submit_over_smpp(router, SHOP, SUB) == CommandStatus.ESME_ROK
        await _reply_at_carrier(
            carrier, SHOP, "You are subscribed again to shop messages. Reply STOP to unsubscribe."
        )
        assert (await _forward(webhook, "start")).body["keyword"] == "opt_in"

        # HELP: a reply, no change to the list.
        assert await carrier.send_mo(SUB, SHOP, "HELP") == [0]
        await _reply_at_carrier(
            carrier, SHOP, "shop: reply STOP to unsubscribe, START to resubscribe."
        )
        assert (await _send(http, router, SHOP, SUB))[0] == 202
        assert (await _forward(webhook, "HELP")).body["keyword"] == "help"

        # Any other text is forwarded with keyword null and answered by no one.
        assert await carrier.send_mo(SUB, SHOP, "stop it") == [0]
        assert (await _forward(webhook, "stop it")).body["keyword"] is None
        assert (await _send(http, router, SHOP, SUB))[0] == 202

        # One reply per keyword, each a message of the account: charged
        # like any (six sends and three replies at 0.01), delivered with
        # its receipt handled.
        assert len(_replies(carrier, SHOP)) == 3
        async with http.get(router.base_url + "/v1/balance", headers=KEY_SHOP) as resp:
            assert Decimal((await resp.json())["credit"]) == Decimal("100") - 9 * Decimal("0.01")
    replies = await _replies_delivered(database_url, 3)
    assert {(r["account_id"], r["sender"], r["recipient"]) for r in replies} == {
        ("shop", SHOP, SUB)
    }


async def _replies_delivered(database_url: str, count: int) -> list[asyncpg.Record]:
    """The keyword replies stored, once `count` of them are delivered."""
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(300):
            rows = await conn.fetch(
                "SELECT account_id, sender, recipient, status, price FROM messages"
                " WHERE ingress = 'keyword'"
            )
            if len(rows) >= count and all(r["status"] == "delivered" for r in rows):
                assert len(rows) == count
                return rows
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise AssertionError(f"replies not delivered: {rows}")


async def test_a_configured_stop_reply_is_used(
    start_router: StartRouter, carrier: CarrierSimulator, webhook: WebhookReceiver
) -> None:
    router = await start_router(_config(webhook))
    assert await carrier.send_mo(SUB, CLUB, "UNSUBSCRIBE") == [0]
    await _reply_at_carrier(carrier, CLUB, CLUB_STOP)
    async with aiohttp.ClientSession() as http:
        status, body = await _send(http, router, CLUB, SUB, KEY_CLUB)
        assert status == 422 and body["rejected"][0]["code"] == "opted_out"
        # Another account's list is its own.
        assert (await _send(http, router, SHOP, SUB))[0] == 202


async def test_a_reply_the_balance_cannot_pay_is_not_sent(
    start_router: StartRouter, carrier: CarrierSimulator, webhook: WebhookReceiver
) -> None:
    router = await start_router(_config(webhook))
    assert await carrier.send_mo(SUB, POOR, "STOP") == [0]
    line = await router.wait_for_event("keyword reply not sent: the balance cannot pay for it")
    assert line["account"] == "poor"
    # Never stored, so never sent; the opt-out itself holds.
    assert _replies(carrier, POOR) == []
    async with aiohttp.ClientSession() as http:
        status, body = await _send(http, router, POOR, SUB, KEY_POOR)
        assert status == 422 and body["rejected"][0]["code"] == "opted_out"


async def test_a_stop_survives_a_sigkill_right_after_its_deliver_sm_resp(
    start_router: StartRouter, carrier: CarrierSimulator, webhook: WebhookReceiver
) -> None:
    config = _config(webhook)
    router = await start_router(config)
    assert await carrier.send_mo(SUB, SHOP, "STOP") == [0]
    # SIGKILL by PID the moment the carrier has its answer.
    await router.kill()
    assert router.proc is not None and router.proc.returncode == -9
    restarted = await start_router(config)
    async with aiohttp.ClientSession() as http:
        assert await _refused_code(http, restarted, SHOP) == "opted_out"
        assert (await _send(http, restarted, SHOP, SUB2))[0] == 202
    assert await _submit_over_smpp(restarted, SHOP_OTHER, SUB) == CommandStatus.ESME_RX_P_APPN
