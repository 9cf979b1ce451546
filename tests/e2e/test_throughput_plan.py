"""CONTRACT §6 "Throughput plan" against the router subprocess: an
account's `max_tps` counts the messages accepted over all its requests and
binds together; over it HTTP answers 429 with Retry-After and code
`throughput_exceeded`, SMPP ESME_RTHROTTLED (0x58), and nothing refused is
stored or charged.

The plan is a bucket of one second: a burst of `max_tps` passes at once,
then `max_tps` a second. Each test sends its burst within a measured
stretch and allows what that stretch refills, so that a slow machine
cannot make it fail; no test asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp

from smsrouter.connectors.smpp import BindTransceiver, CommandStatus, SubmitSm, SubmitSmResp
from tests.e2e.conftest import StartRouter
from tests.raw_esme import RawEsme

MAX_TPS = 3
SENDER = "12345"
KEY = {"Authorization": "Bearer plan-key"}

CONFIG = f"""
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "plan"
api_keys = ["plan-key"]
smpp = {{ system_id = "plan", password = "plan-pass" }}
credit = "1000"
max_tps = {MAX_TPS}
[[accounts]]
id = "free"
api_keys = ["free-key"]
credit = "1000"
[[numbers]]
number = "{SENDER}"
account = "plan"
type = "short_code"
[[numbers]]
number = "54321"
account = "free"
type = "short_code"
[shutdown]
drain_seconds = 1
"""


def submit_sm(i: int) -> SubmitSm:
    return SubmitSm(
        source_addr_ton=3, source_addr_npi=0, source_addr=SENDER,
        dest_addr_ton=1, dest_addr_npi=1, destination_addr=f"1415555{i:04d}",
        short_message=b"plan %d" % i,
    )  # fmt: skip


def refilled(seconds: float) -> int:
    """Messages the plan lets through beyond its burst over `seconds`."""
    return math.floor(MAX_TPS * seconds)


async def test_the_plan_counts_http_and_smpp_together_and_refuses_over_it_on_both(
    start_router: StartRouter,
) -> None:
    router = await start_router(CONFIG)
    url = router.base_url + "/v1/messages"
    esme = await RawEsme.connect(router.smpp_port)
    try:
        assert await esme.bind(BindTransceiver, "plan", "plan-pass") == CommandStatus.ESME_ROK
        async with aiohttp.ClientSession() as http:

            async def post(i: int) -> tuple[int, dict[str, object], str | None]:
                body = {"from": SENDER, "to": f"+1415666{i:04d}", "text": f"plan {i}"}
                async with http.post(url, json=body, headers=KEY) as resp:
                    return resp.status, await resp.json(), resp.headers.get("Retry-After")

            began = time.monotonic()
            for i in range(8):
                esme.send(submit_sm(i))
            answers = await asyncio.gather(*(post(i) for i in range(8)))
            statuses = []
            while len(statuses) < 8:
                pdu = await esme.read()
                assert pdu is not None
                if isinstance(pdu, SubmitSmResp):
                    statuses.append(pdu.command_status)
            took = time.monotonic() - began

            smpp_ok = statuses.count(CommandStatus.ESME_ROK)
            http_ok = [a for a in answers if a[0] == 202]
            # Nothing is refused for another reason.
            assert set(statuses) <= {CommandStatus.ESME_ROK, CommandStatus.ESME_RTHROTTLED}
            assert {a[0] for a in answers} <= {202, 429}
            accepted = smpp_ok + len(http_ok)
            assert MAX_TPS <= accepted <= MAX_TPS + refilled(took), (accepted, took)
            for status, body, retry_after in answers:
                if status == 429:
                    assert body["code"] == "throughput_exceeded"
                    assert retry_after is not None and int(retry_after) >= 1
                    assert body["rejected"][0]["code"] == "throughput_exceeded"  # type: ignore[index]

            # Another account's sends are its own business.
            body = {"from": "54321", "to": "+14155550100", "text": "free"}
            async with http.post(url, json=body, headers={"Authorization": "Bearer free-key"}) as r:
                assert r.status == 202

            # A second later the plan has room again, on either ingress.
            await asyncio.sleep(1.0)
            status, _, _ = await post(99)
            assert status == 202

            # What was refused was not stored: the account's messages are
            # exactly the ones accepted (and the one sent after the pause).
            stored = [
                m
                for m in (await _metrics(http, router.base_url)).splitlines()
                if m.startswith("smsrouter_messages_received_total{") and 'account="plan"' in m
            ]
            total = sum(float(m.rsplit(" ", 1)[1]) for m in stored)
            assert total == accepted + 1
    finally:
        esme.close()
        await esme.wait_closed()


async def _metrics(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(base + "/metrics") as resp:
        return await resp.text()
