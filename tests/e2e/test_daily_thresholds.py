"""CONTRACT §6 "Daily thresholds" against the router subprocess: with the
limit at L, 50 concurrent senders get exactly L accepted, the rest refused
`limit_reached` (SMPP 0x65 too); the alarm is raised once that day, as a
signed POST to the account's alert_url; a restart neither reopens the day
nor raises the alarm again.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiohttp

from smsrouter.connectors.smpp import BindTransceiver, CommandStatus, SubmitSm, SubmitSmResp
from smsrouter.sims.webhook import WebhookReceiver
from tests.e2e.conftest import WEBHOOK_SECRET, StartRouter
from tests.raw_esme import RawEsme

LIMIT, ALARM = 5, 3
SENDER = "12345"
KEY = {"Authorization": "Bearer day-key"}

CONFIG = """
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "day"
api_keys = ["day-key"]
smpp = {{ system_id = "day", password = "day-pass" }}
credit = "1000"
daily_limit = {limit}
daily_alarm = {alarm}
alert_url = "{alert_url}"
webhook_secret = "{secret}"
[[numbers]]
number = "{sender}"
account = "day"
type = "short_code"
[shutdown]
drain_seconds = 1
"""


async def _submit(port: int) -> int:
    esme = await RawEsme.connect(port)
    try:
        assert await esme.bind(BindTransceiver, "day", "day-pass") == CommandStatus.ESME_ROK
        esme.send(
            SubmitSm(
                source_addr_ton=3, source_addr_npi=0, source_addr=SENDER, dest_addr_ton=1,
                dest_addr_npi=1, destination_addr="14155559999", short_message=b"over",
            )
        )  # fmt: skip
        while True:
            pdu = await esme.read()
            assert pdu is not None
            if isinstance(pdu, SubmitSmResp):
                return pdu.command_status
    finally:
        esme.close()
        await esme.wait_closed()


async def test_exactly_the_limit_is_accepted_the_alarm_comes_once_and_a_restart_keeps_the_day(
    start_router: StartRouter, webhook: WebhookReceiver
) -> None:
    config = CONFIG.format(
        limit=LIMIT, alarm=ALARM, alert_url=webhook.url, secret=WEBHOOK_SECRET, sender=SENDER
    )
    router = await start_router(config)
    url = router.base_url + "/v1/messages"
    async with aiohttp.ClientSession() as http:

        async def post(i: int) -> tuple[int, dict[str, object]]:
            body = {"from": SENDER, "to": f"+1415777{i:04d}", "text": f"day {i}"}
            async with http.post(url, json=body, headers=KEY) as resp:
                return resp.status, await resp.json()

        answers = await asyncio.gather(*(post(i) for i in range(50)))
        assert sum(1 for status, _ in answers if status == 202) == LIMIT
        for status, body in answers:
            if status != 202:
                assert status == 422
                assert body["rejected"][0]["code"] == "limit_reached"  # type: ignore[index]
        assert await _submit(router.smpp_port) == CommandStatus.ESME_RX_P_APPN  # 0x65

        (alarm,) = await webhook.wait_for(1, timeout=15)
        today = datetime.now(UTC).date().isoformat()
        # The count when the alarm was raised: that of the insert that got
        # there (migration 0014), which may have stored several at once.
        count = alarm.body.pop("count")
        assert alarm.body == {"account": "day", "kind": "daily_alarm", "day": today}
        assert isinstance(count, int) and ALARM <= count <= LIMIT
        assert alarm.signature_ok
        # The gauge is set when the alarm's NOTIFY reaches the process
        # (router/store/alarm_watch.py), which may be just after the POST.
        gauge = 'smsrouter_account_alarm{account="day"} 1.0'
        async with asyncio.timeout(10):
            while True:
                async with http.get(router.base_url + "/metrics") as resp:
                    if gauge in await resp.text():
                        break
                await asyncio.sleep(0.05)

        # A restart on the same database: the day's count comes back with it.
        assert await router.terminate() == 0
        again = await start_router(config)
        url = again.base_url + "/v1/messages"
        status, body = await post(99)
        assert status == 422 and body["rejected"][0]["code"] == "limit_reached"  # type: ignore[index]
        await asyncio.sleep(1.0)  # a second alarm, if any, would be on its way
        assert len(webhook.callbacks) == 1
