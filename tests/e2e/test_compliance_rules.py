"""CONTRACT §6 against the router subprocess, over HTTP and SMPP alike:
sender-ID rules per destination country, protected sender IDs, an
account's allowed countries, content rules (built in and the operator's,
on a linear-time engine), and the recipient velocity cap. Each refusal
carries its stable code (HTTP `rejected[].code`, SMPP command_status of
§4), nothing refused is stored, and a message's `kind` is stored with it.
"""

from __future__ import annotations

import aiohttp
import asyncpg

from smsrouter.connectors.smpp import BindTransceiver, CommandStatus, SubmitSm, SubmitSmResp
from tests.e2e.conftest import StartRouter
from tests.raw_esme import RawEsme

KEY_C = {"Authorization": "Bearer key-c"}
KEY_O = {"Authorization": "Bearer key-o"}
LONG_CODE = "+14155550101"
TOLL_FREE = "+18005550100"
US = "+14155550123"
US2 = "+14155550124"  # max_per_recipient_per_hour = 2: another subscriber
AE = "+971501234567"
GB = "+447700900123"

CONFIG = """
[compliance]
protected_sender_ids = ["PAYPAL"]
max_per_recipient_per_hour = 2
[[sender_rules]]
country = "US"
alphanumeric = "refused"
[[sender_rules]]
country = "AE"
alphanumeric = "registered"
[[content_rules]]
name = "public URL shortener"
pattern = "(?i)\\\\b(bit\\\\.ly|tinyurl\\\\.com)/"
[[content_rules]]
name = "crypto"
pattern = "(?i)crypto"
action = "flag"
[[content_rules]]
name = "nested"
pattern = "(a+)+$"
kinds = ["promotional"]
[[routes]]
prefix = "971"
carriers = [ { name = "sim", cost = "0.004" } ]
[[routes]]
prefix = "44"
carriers = [ { name = "sim", cost = "0.004" } ]
[[prices]]
prefix = ""
price = "0.01"
[[accounts]]
id = "c"
api_keys = ["key-c"]
smpp = { system_id = "comp", password = "comp-pw" }
credit = "1000"
allowed_countries = ["US", "AE"]
sender_ids = [ { id = "ACME", countries = ["AE"] } ]
[[accounts]]
id = "o"
api_keys = ["key-o"]
credit = "1000"
[[numbers]]
number = "ACME"
account = "c"
type = "alphanumeric"
[[numbers]]
number = "BRAND"
account = "c"
type = "alphanumeric"
[[numbers]]
number = "+14155550101"
account = "c"
type = "long_code"
[[numbers]]
number = "+18005550100"
account = "c"
type = "toll_free"
[[numbers]]
number = "PAYPAL"
account = "o"
type = "alphanumeric"
[shutdown]
drain_seconds = 1
"""


async def _send(
    http: aiohttp.ClientSession, base: str, body: dict[str, object], key: dict[str, str] = KEY_C
) -> tuple[int, dict[str, object]]:
    async with http.post(base + "/v1/messages", json=body, headers=key) as resp:
        return resp.status, await resp.json(content_type=None)


def _refused(answer: tuple[int, dict[str, object]]) -> tuple[int, str, str]:
    status, body = answer
    rejected = body["rejected"]
    assert isinstance(rejected, list) and len(rejected) == 1, body
    return status, rejected[0]["code"], rejected[0]["detail"]


async def test_sender_ids_countries_and_content_are_refused_with_their_codes_over_http(
    start_router: StartRouter, database_url: str
) -> None:
    router = await start_router(CONFIG)
    base = router.base_url
    async with aiohttp.ClientSession() as http:
        # An alphanumeric sender to the US: the country refuses them.
        status, code, detail = _refused(
            await _send(http, base, {"from": "ACME", "to": US, "text": "hi"})
        )
        assert (status, code) == (422, "sender_id_not_allowed")
        assert "US" in detail and "alphanumeric" in detail
        # To AE only registered IDs: ACME is, BRAND is not.
        status, body = await _send(http, base, {"from": "ACME", "to": AE, "text": "hi"})
        assert status == 202, body
        status, code, detail = _refused(
            await _send(http, base, {"from": "BRAND", "to": AE, "text": "hi"})
        )
        assert (status, code) == (422, "sender_id_not_allowed")
        assert "registered for AE" in detail
        # A protected brand, not registered by this account.
        status, code, _ = _refused(
            await _send(http, base, {"from": "PAYPAL", "to": US, "text": "hi"}, KEY_O)
        )
        assert (status, code) == (422, "sender_id_protected")
        # A country outside the account's list.
        status, code, detail = _refused(
            await _send(http, base, {"from": LONG_CODE, "to": GB, "text": "hi"})
        )
        assert (status, code) == (422, "country_not_allowed")
        assert "GB" in detail
        # In a batch, each recipient on its own: one passes, one is refused.
        status, body = await _send(http, base, {"from": LONG_CODE, "to": [US, GB], "text": "hi"})
        assert status == 202
        assert [m["to"] for m in body["messages"]] == [US]  # type: ignore[union-attr]
        assert [r["code"] for r in body["rejected"]] == ["country_not_allowed"]  # type: ignore[union-attr]

        # Content: an operator's blocking rule names itself.
        status, code, detail = _refused(
            await _send(http, base, {"from": LONG_CODE, "to": US, "text": "go to bit.ly/x1"})
        )
        assert (status, code) == (422, "content_blocked")
        assert "public URL shortener" in detail
        # Promotional from a toll-free number is refused; transactional passes.
        promo = {"from": TOLL_FREE, "to": US, "text": "50% off", "kind": "promotional"}
        assert _refused(await _send(http, base, promo))[:2] == (422, "content_blocked")
        status, _ = await _send(http, base, {**promo, "kind": "transactional"})
        assert status == 202
        # A flagging rule lets the message through and counts it.
        crypto = {"from": LONG_CODE, "to": US2, "text": "crypto news"}
        status, _ = await _send(http, base, crypto)
        assert status == 202
        async with http.get(base + "/metrics") as resp:
            metrics = await resp.text()
        assert 'smsrouter_content_flagged_total{rule="crypto"} 1.0' in metrics
        # A pattern that would backtrack for ever in a backtracking engine:
        # the answer comes, the text does not match (it ends in "b").
        stall = {"from": LONG_CODE, "to": AE, "text": "a" * 1500 + "b", "kind": "promotional"}
        status, body = await _send(http, base, stall)
        assert status == 202, body
        blocked = {**stall, "text": "a" * 1500}
        assert _refused(await _send(http, base, blocked))[:2] == (422, "content_blocked")

    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetch(
            "SELECT sender, recipient, kind FROM messages WHERE account_id = 'c' ORDER BY created_at"
        )
    finally:
        await conn.close()
    # Exactly the accepted ones, each with its kind.
    assert [(r["sender"], r["recipient"], r["kind"]) for r in stored] == [
        ("ACME", AE, "transactional"),
        (LONG_CODE, US, "transactional"),
        (TOLL_FREE, US, "transactional"),
        (LONG_CODE, US2, "transactional"),
        (LONG_CODE, AE, "promotional"),
    ]


def _submit(sender: str, ton: int, to: str, text: bytes) -> SubmitSm:
    return SubmitSm(
        source_addr_ton=ton, source_addr_npi=0 if ton == 5 else 1, source_addr=sender,
        dest_addr_ton=1, dest_addr_npi=1, destination_addr=to.lstrip("+"), short_message=text,
    )  # fmt: skip


async def test_the_same_rules_hold_over_smpp_with_their_command_status(
    start_router: StartRouter,
) -> None:
    router = await start_router(CONFIG)
    esme = await RawEsme.connect(router.smpp_port)
    try:
        assert await esme.bind(BindTransceiver, "comp", "comp-pw") == CommandStatus.ESME_ROK
        long_code = LONG_CODE.lstrip("+")
        cases = [
            (_submit("ACME", 5, US, b"hi"), CommandStatus.ESME_RINVSRCADR),
            (_submit("ACME", 5, AE, b"hi"), CommandStatus.ESME_ROK),
            (_submit("BRAND", 5, AE, b"hi"), CommandStatus.ESME_RINVSRCADR),
            (_submit(long_code, 1, GB, b"hi"), CommandStatus.ESME_RINVDSTADR),
            (_submit(long_code, 1, US, b"see tinyurl.com/abc"), CommandStatus.ESME_RX_P_APPN),
            (_submit(long_code, 1, US, b"hello"), CommandStatus.ESME_ROK),
        ]
        for pdu, expected in cases:
            esme.send(pdu)
            answer = await esme.read()
            assert isinstance(answer, SubmitSmResp), answer
            assert answer.command_status == expected, (pdu.source_addr, pdu.destination_addr)
    finally:
        esme.close()
        await esme.wait_closed()


async def test_recipient_velocity_caps_one_subscriber_per_hour_over_both_ingresses(
    start_router: StartRouter,
) -> None:
    """`max_per_recipient_per_hour = 2`: two messages to a subscriber pass,
    whichever ingress they came by; the third is refused (HTTP 429 with
    Retry-After, SMPP ESME_RTHROTTLED); another subscriber is not affected."""
    router = await start_router(CONFIG)
    esme = await RawEsme.connect(router.smpp_port)
    try:
        assert await esme.bind(BindTransceiver, "comp", "comp-pw") == CommandStatus.ESME_ROK
        async with aiohttp.ClientSession() as http:
            body = {"from": LONG_CODE, "to": US, "text": "code 1"}
            assert (await _send(http, router.base_url, body))[0] == 202
            esme.send(_submit(LONG_CODE.lstrip("+"), 1, US, b"code 2"))
            answer = await esme.read()
            assert isinstance(answer, SubmitSmResp)
            assert answer.command_status == CommandStatus.ESME_ROK
            esme.send(_submit(LONG_CODE.lstrip("+"), 1, US, b"code 3"))
            answer = await esme.read()
            assert isinstance(answer, SubmitSmResp)
            assert answer.command_status == CommandStatus.ESME_RTHROTTLED
            async with http.post(
                router.base_url + "/v1/messages", json={**body, "text": "code 4"}, headers=KEY_C
            ) as resp:
                assert resp.status == 429
                problem = await resp.json(content_type=None)
                assert problem["code"] == "recipient_velocity"
                # Nearly an hour: the first of the two leaves the window then.
                assert 3000 < int(resp.headers["Retry-After"]) <= 3600
            other = {"from": LONG_CODE, "to": "+14155550199", "text": "code"}
            assert (await _send(http, router.base_url, other))[0] == 202
    finally:
        esme.close()
        await esme.wait_closed()
