"""CONTRACT §6 "Credit" against the router subprocess, over HTTP and SMPP:
a recipient the balance cannot pay for is refused `insufficient_credit`
(HTTP rejected[] or 422, SMPP ESME_RX_P_APPN 0x65) and nothing of it is
stored; with many senders at once on both ingresses exactly as many
messages are accepted as the credit and its limit pay for, and the balance
ends exactly at the floor; the ledger shows every reserve."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import aiohttp

from smsrouter.connectors.smpp import BindTransceiver, CommandStatus, SubmitSm, SubmitSmResp
from tests.e2e.conftest import StartRouter
from tests.raw_esme import RawEsme

SENDER = "12345"
KEY = {"Authorization": "Bearer pay-key"}
PRICE = Decimal("0.01")


def _config(credit: str, credit_limit: str = "0") -> str:
    return f"""
[[prices]]
prefix = "1"
price = "{PRICE}"
[[accounts]]
id = "pay"
api_keys = ["pay-key"]
smpp = {{ system_id = "pay", password = "pay-pass", max_binds = 4 }}
credit = "{credit}"
credit_limit = "{credit_limit}"
[[numbers]]
number = "{SENDER}"
account = "pay"
type = "short_code"
[queues]
max_per_sender = 100000
[shutdown]
drain_seconds = 1
"""


def _submit_sm(i: int) -> SubmitSm:
    return SubmitSm(
        source_addr_ton=3, source_addr_npi=0, source_addr=SENDER,
        dest_addr_ton=1, dest_addr_npi=1, destination_addr=f"1415555{i:04d}",
        short_message=b"pay %d" % i,
    )  # fmt: skip


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, headers=KEY) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_a_batch_is_paid_as_far_as_the_balance_goes_then_refused_on_both_ingresses(
    start_router: StartRouter,
) -> None:
    router = await start_router(_config(credit="0.05"))
    url = router.base_url + "/v1/messages"
    async with aiohttp.ClientSession() as http:
        to = [f"+1415555{i:04d}" for i in range(8)]
        async with http.post(url, json={"from": SENDER, "to": to, "text": "b"}, headers=KEY) as r:
            assert r.status == 202
            body = await r.json()
        # In the order sent: the first five are paid for, the rest refused.
        assert [m["to"] for m in body["messages"]] == to[:5]
        assert [(r["to"], r["code"]) for r in body["rejected"]] == [
            (t, "insufficient_credit") for t in to[5:]
        ]
        assert (await _get(http, router.base_url + "/v1/balance"))["credit"] == "0.00"

        # Nothing left: one recipient is a 422 problem with the code.
        one = {"from": SENDER, "to": "+14155550100", "text": "none"}
        async with http.post(url, json=one, headers=KEY) as r:
            assert r.status == 422
            assert r.content_type == "application/problem+json"
            problem = await r.json()
        assert problem["rejected"][0]["code"] == "insufficient_credit"

        esme = await RawEsme.connect(router.smpp_port)
        try:
            assert await esme.bind(BindTransceiver, "pay", "pay-pass") == CommandStatus.ESME_ROK
            esme.send(_submit_sm(1))
            resp = await esme.read()
            assert isinstance(resp, SubmitSmResp)
            assert resp.command_status == CommandStatus.ESME_RX_P_APPN
        finally:
            esme.close()
            await esme.wait_closed()

        listed = await _get(http, router.base_url + "/v1/messages?limit=50")
        assert sorted(m["to"] for m in listed["messages"]) == sorted(to[:5])
        ledger = await _get(http, router.base_url + "/v1/ledger")
        reserves = [e for e in ledger["entries"] if e["kind"] == "reserve"]
        assert sum(Decimal(e["amount"]) for e in reserves) == -5 * PRICE
        assert sum(e["messages"] for e in reserves) == 5
        assert ledger["entries"][0]["balance"] == "0.00"


async def test_fifty_concurrent_senders_get_exactly_what_the_credit_pays_for(
    start_router: StartRouter,
) -> None:
    # 0.20 of credit and 0.10 below zero: exactly 30 messages at 0.01, sent
    # by 25 HTTP clients and 25 SMPP submit_sm at once, 4 each.
    router = await start_router(_config(credit="0.20", credit_limit="0.10"))
    url = router.base_url + "/v1/messages"
    esmes = [await RawEsme.connect(router.smpp_port) for _ in range(4)]
    try:
        for esme in esmes:
            assert await esme.bind(BindTransceiver, "pay", "pay-pass") == CommandStatus.ESME_ROK
        async with aiohttp.ClientSession() as http:

            async def client(c: int) -> int:
                ok = 0
                for i in range(4):
                    body = {"from": SENDER, "to": f"+1415666{c:02d}{i:02d}", "text": "x"}
                    async with http.post(url, json=body, headers=KEY) as r:
                        assert r.status in (202, 422), await r.text()
                        ok += r.status == 202
                return ok

            async def smpp(esme: RawEsme, first: int, count: int) -> list[int]:
                for i in range(first, first + count):
                    esme.send(_submit_sm(i))
                statuses = []
                while len(statuses) < count:
                    pdu = await esme.read()
                    assert pdu is not None
                    if isinstance(pdu, SubmitSmResp):
                        statuses.append(pdu.command_status)
                return statuses

            http_ok, smpp_statuses = await asyncio.gather(
                asyncio.gather(*(client(c) for c in range(25))),
                asyncio.gather(*(smpp(e, n * 25, 25) for n, e in enumerate(esmes))),
            )
            statuses = [s for group in smpp_statuses for s in group]
            assert set(statuses) <= {CommandStatus.ESME_ROK, CommandStatus.ESME_RX_P_APPN}
            accepted = sum(http_ok) + statuses.count(CommandStatus.ESME_ROK)
            assert accepted == 30
            balance = await _get(http, router.base_url + "/v1/balance")
            assert Decimal(balance["credit"]) == Decimal("-0.10")
    finally:
        for esme in esmes:
            esme.close()
            await esme.wait_closed()
