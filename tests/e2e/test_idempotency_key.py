"""CONTRACT §3 `Idempotency-Key` against the router subprocess: a retry of
POST /v1/messages (after a timeout, a dropped connection) answers what the
first answered and creates nothing: no second message, no second send at
the carrier. The same key with another body is a 422
`idempotency_key_reused`; keys are per account.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from smsrouter.sims.carrier import CarrierSimulator
from tests.e2e.conftest import KEY_A, KEY_B, SENDER, TWO_ACCOUNTS, StartRouter
from tests.tools import eventually


async def _post(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, bytes, dict[str, str]]:
    async with http.post(url, data=json.dumps(body), headers=headers) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_a_repeated_request_answers_the_same_and_sends_nothing_twice(
    start_router: StartRouter, carrier: CarrierSimulator
) -> None:
    router = await start_router(TWO_ACCOUNTS)
    url = router.base_url + "/v1/messages"
    otp = {"from": SENDER, "to": ["+14155550100", "+14155550101"], "text": "Your code is 4321"}
    async with aiohttp.ClientSession() as http:
        keyed = {**KEY_A, "Idempotency-Key": "otp-4321"}
        status, first, _ = await _post(http, url, otp, keyed)
        assert status == 202
        ids = [m["id"] for m in json.loads(first)["messages"]]
        assert len(ids) == 2

        # Retried, one after another and ten at once: the same answer.
        status, again, headers = await _post(http, url, otp, keyed)
        assert (status, again, headers.get("Idempotent-Replayed")) == (202, first, "true")
        storm = await asyncio.gather(*(_post(http, url, otp, keyed) for _ in range(10)))
        assert {(s, b) for s, b, _ in storm} == {(202, first)}

        # Another body under the same key: refused, nothing created.
        other = {**otp, "text": "Your code is 9999"}
        status, refused, _ = await _post(http, url, other, keyed)
        problem = json.loads(refused)
        assert status == 422 and problem["code"] == "idempotency_key_reused"
        assert problem["errors"][0]["field"] == "Idempotency-Key"

        # Keys are per account: account b's "otp-4321" is its own.
        b_body = {"from": "54321", "to": "+14155550102", "text": "b's code"}
        status, b_first, _ = await _post(
            http, url, b_body, {**KEY_B, "Idempotency-Key": "otp-4321"}
        )
        assert status == 202 and b_first != first
        # A one-recipient 202 is made again from its stored message (not
        # stored itself): the same bytes, at once and ten at once.
        b_keyed = {**KEY_B, "Idempotency-Key": "otp-4321"}
        status, b_again, headers = await _post(http, url, b_body, b_keyed)
        assert (status, b_again, headers.get("Idempotent-Replayed")) == (202, b_first, "true")
        storm = await asyncio.gather(*(_post(http, url, b_body, b_keyed) for _ in range(10)))
        assert {(s, b) for s, b, _ in storm} == {(202, b_first)}

        # A key over 255 characters names the header.
        status, long_key, _ = await _post(http, url, otp, {**KEY_A, "Idempotency-Key": "k" * 256})
        assert status == 422
        assert json.loads(long_key)["errors"][0]["field"] == "Idempotency-Key"

        # Nothing was sent twice: the carrier saw each recipient once.
        await eventually(lambda: len(carrier.submits) >= 3, "the three messages at the carrier")
        await asyncio.sleep(0.5)  # a duplicate, if any, would be on its way by now
        recipients = sorted(s.destination_addr for s in carrier.submits)
        assert recipients == ["14155550100", "14155550101", "14155550102"]
        for message_id in ids:
            async with http.get(f"{url}/{message_id}", headers=KEY_A) as resp:
                assert resp.status == 200
