"""The opt-out rate per sender number (CONTRACT §6 "Opt-out rate") against
the router subprocess: one long code sends to 20 subscribers at a slow rate
(so that most stay queued), the carrier simulator brings their STOPs; past
the flag rate the number is flagged (gauge, operator list), past the
suspend rate it is suspended: new sends refused `sender_suspended` over
HTTP (422) and SMPP (0x65), its queued messages end `rejected` and are
refunded, and the reply to the STOP that suspended it is still sent. An
operator resumes it and sends pass again, with the window started afresh.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from typing import Any

import aiohttp
import asyncpg

from smsrouter.connectors.smpp import BindTransmitter, CommandStatus, SubmitSm, SubmitSmResp
from smsrouter.router.opt_out_rate import OptOutRates
from smsrouter.sims.carrier import CarrierSimulator
from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess
from tests.raw_esme import RawEsme

KEY = {"Authorization": "Bearer shop-key"}
OPS_TOKEN = "ops-token-for-senders"
SHOP = "+14155550101"
OTHER = "+14155550102"  # another number of the account: never suspended
SUBS = [f"+1415556{i:04d}" for i in range(20)]
STOP_REPLY = "You are unsubscribed from shop messages. Reply START to resubscribe."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _config(admin_port: int) -> str:
    return f"""
[[prices]]
prefix = "1"
price = "0.01"
[compliance]
opt_out_min_recipients = 10
opt_out_flag_rate = 0.1
opt_out_suspend_rate = 0.2
[admin]
listen = "127.0.0.1:{admin_port}"
tokens = [{{ name = "ops", token = "{OPS_TOKEN}" }}]
[[accounts]]
id = "shop"
credit = "100"
api_keys = ["shop-key"]
smpp = {{ system_id = "shop", password = "shop-pw" }}
[[numbers]]
number = "{SHOP}"
account = "shop"
type = "long_code"
rate = 0.5
[[numbers]]
number = "{OTHER}"
account = "shop"
type = "long_code"
[shutdown]
drain_seconds = 1
"""


async def _send(http: aiohttp.ClientSession, router: RouterProcess, sender: str, to: str) -> Any:
    body = {"from": sender, "to": to, "text": "Big sale today"}
    async with http.post(router.base_url + "/v1/messages", json=body, headers=KEY) as resp:
        return resp.status, await resp.json(content_type=None)


async def _submit_over_smpp(router: RouterProcess, sender: str, to: str) -> int:
    esme = await RawEsme.connect(router.smpp_port)
    try:
        # A transmitter: the STOPs forwarded to the account (deliver_sm) go to
        # receiving binds only, and this one reads just its submit_sm_resp.
        assert await esme.bind(BindTransmitter, "shop", "shop-pw") == CommandStatus.ESME_ROK
        esme.send(
            SubmitSm(
                source_addr_ton=1, source_addr_npi=1, source_addr=sender.lstrip("+"),
                dest_addr_ton=1, dest_addr_npi=1, destination_addr=to.lstrip("+"),
                short_message=b"Big sale today",
            )
        )  # fmt: skip
        answer = await esme.read()
        assert isinstance(answer, SubmitSmResp), answer
        return answer.command_status
    finally:
        esme.close()
        await esme.wait_closed()


async def _admin(router: RouterProcess, *argv: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsrouter", "admin", "--config", str(router.config_path), *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SMSROUTER_ADMIN_TOKEN": OPS_TOKEN},
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def _flag_gauge(http: aiohttp.ClientSession, router: RouterProcess) -> str | None:
    async with http.get(router.base_url + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(f'smsrouter_sender_flagged{{sender="{SHOP}"}}'):
            return line.rsplit(" ", 1)[1]
    return None


async def _stop(carrier: CarrierSimulator, subscriber: str) -> None:
    assert await carrier.send_mo(subscriber, SHOP, "STOP") == [0]


async def _reply_at_carrier(carrier: CarrierSimulator, subscriber: str) -> None:
    for _ in range(600):
        if any(
            s.source_addr == SHOP.lstrip("+")
            and s.destination_addr == subscriber.lstrip("+")
            and s.text == STOP_REPLY
            for s in carrier.submits
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no STOP reply to {subscriber} at the carrier")


async def _ended(database_url: str) -> list[asyncpg.Record]:
    """The campaign's messages once none is queued any more."""
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(200):
            rows = await conn.fetch(
                "SELECT id, status, error_code FROM messages WHERE sender = $1"
                " AND ingress = 'http'",
                SHOP,
            )
            if all(r["status"] not in ("accepted", "queued") for r in rows):
                return rows
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError(f"messages still queued: {rows}")


async def _refunds(database_url: str) -> set[Any]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT message_id FROM ledger WHERE account_id = 'shop' AND kind = 'refund'"
        )
    finally:
        await conn.close()
    return {r["message_id"] for r in rows}


def test_the_subscribers_count_as_twenty() -> None:
    # The sketch's estimate for these very numbers: the thresholds below
    # (2 STOPs of 20, 5 of 21) are crossed at the STOP meant to cross them.
    rates = OptOutRates()
    for s in SUBS:
        rates.sent(SHOP, s)
    assert rates.recipients(SHOP) == 20
    rates.sent(SHOP, "+14155569999")
    assert rates.recipients(SHOP) == 21


async def test_flag_suspend_and_resume(
    start_router: StartRouter, carrier: CarrierSimulator, database_url: str
) -> None:
    router = await start_router(_config(_free_port()))
    async with aiohttp.ClientSession() as http:
        for s in SUBS:
            status, body = await _send(http, router, SHOP, s)
            assert status == 202, body

        # 1 STOP of 20: 0.05, below the flag rate.
        await _stop(carrier, SUBS[0])
        assert await _admin(router, "senders", "list") == {"senders": [], "next": None}
        # 2 of 20: 0.1, flagged.
        await _stop(carrier, SUBS[1])
        line = await router.wait_for_event("sender flagged: its opt-out rate passed the threshold")
        assert (line["sender"], line["opt_outs"], line["recipients"]) == (SHOP, 2, 20)
        assert await _flag_gauge(http, router) == "1.0"
        (flagged,) = (await _admin(router, "senders", "list", "--state", "flagged"))["senders"]
        assert flagged["number"] == SHOP and flagged["account"] == "shop"
        assert (flagged["opt_outs"], flagged["recipients"], flagged["rate"]) == (2, 20, 0.1)
        # Flagged only: sends still pass.
        assert (await _send(http, router, SHOP, "+14155569999"))[0] == 202

        # 21 sent to now: 4 STOPs are 0.19, the fifth (0.24) suspends it.
        await _stop(carrier, SUBS[2])
        await _stop(carrier, SUBS[3])
        await _stop(carrier, SUBS[4])
        line = await router.wait_for_event(
            "sender suspended: its opt-out rate passed the threshold"
        )
        assert (line["sender"], line["opt_outs"]) == (SHOP, 5)

        # New sends refused over both ingresses; the account's other number passes.
        status, body = await _send(http, router, SHOP, "+14155568888")
        assert status == 422 and body["rejected"][0]["code"] == "sender_suspended", body
        assert await _submit_over_smpp(router, SHOP, "+14155568888") == CommandStatus.ESME_RX_P_APPN
        assert (await _send(http, router, OTHER, "+14155568888"))[0] == 202
        (suspended,) = (await _admin(router, "senders", "list", "--state", "suspended"))["senders"]
        assert suspended["number"] == SHOP
        assert await _admin(router, "senders", "list", "--state", "flagged") == {
            "senders": [],
            "next": None,
        }

        # The queued campaign ended rejected, each one refunded.
        rows = await _ended(database_url)
        rejected = {r["id"] for r in rows if r["status"] == "rejected"}
        assert rejected, rows
        assert all(r["error_code"] == "sender_suspended" for r in rows if r["status"] == "rejected")
        assert rejected <= await _refunds(database_url)
        # The reply to the STOP that suspended the number still went out.
        await _reply_at_carrier(carrier, SUBS[4])

        # The operator resumes it: sends pass again within a second or so.
        resumed = await _admin(router, "senders", "resume", SHOP)
        assert resumed["number"] == SHOP and resumed["state"] == "active"
        for _ in range(60):
            status, body = await _send(http, router, SHOP, "+14155567777")
            if status == 202:
                break
            await asyncio.sleep(0.05)
        assert status == 202, body
        assert await _admin(router, "senders", "list") == {"senders": [], "next": None}
        assert await _flag_gauge(http, router) is None
        # The window started afresh: a later STOP does not suspend it again.
        await _stop(carrier, SUBS[5])
        assert (await _send(http, router, SHOP, "+14155567776"))[0] == 202
        assert await _admin(router, "senders", "list") == {"senders": [], "next": None}
