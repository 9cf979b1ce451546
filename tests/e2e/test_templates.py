"""CONTRACT §6 "Templates" and §8 against the router subprocess: an account
creates templates over /v1, an operator approves or rejects them over
/admin/v1 or `smsrouter admin templates`, a message sent by template id
reaches the carrier as the rendered text, bad params are named, and an
account with templates_required sends only its approved templates, over
HTTP by id and over SMPP as a text that matches one."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from smsrouter.connectors.smpp import BindTransceiver, CommandStatus, SubmitSm, SubmitSmResp
from smsrouter.sims.carrier import CarrierSimulator
from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess
from tests.raw_esme import RawEsme

OPS_TOKEN = "ops-token-0123456789abcdefghijkl"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
KEY_T = {"Authorization": "Bearer key-t"}
KEY_S = {"Authorization": "Bearer key-s"}
KEY_O = {"Authorization": "Bearer key-o"}
US = "+14155550123"
# How long an approval may take to reach the process (CONTRACT §8: 1 s),
# with room for a loaded test machine.
WITHIN = 5.0


@pytest.fixture
def router_site(each_build: Path | None) -> Path | None:
    """Both builds: the matcher and the API modules are compiled in one."""
    return each_build


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
[[accounts]]
id = "t"
api_keys = ["key-t"]
credit = "100"
[[accounts]]
id = "s"
api_keys = ["key-s"]
smpp = {{ system_id = "strict", password = "strict" }}
credit = "100"
templates_required = true
[[accounts]]
id = "o"
api_keys = ["key-o"]
credit = "100"
[[numbers]]
number = "+14155550101"
account = "t"
type = "long_code"
[[numbers]]
number = "+14155550102"
account = "s"
type = "long_code"
[admin]
listen = "127.0.0.1:{admin_port}"
tokens = [{{ name = "ops", token = "{OPS_TOKEN}" }}]
[shutdown]
drain_seconds = 1
"""


class Api:
    def __init__(self, http: aiohttp.ClientSession, router: RouterProcess) -> None:
        self.http = http
        self.base = router.base_url
        self.admin = f"http://127.0.0.1:{router.admin_port}/admin/v1"

    async def call(
        self, method: str, url: str, headers: dict[str, str], body: Any = None
    ) -> tuple[int, Any]:
        async with self.http.request(method, url, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def v1(
        self, method: str, path: str, body: Any = None, key: dict[str, str] = KEY_T
    ) -> tuple[int, Any]:
        return await self.call(method, self.base + path, key, body)

    async def ops(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.call(method, self.admin + path, OPS, body)

    async def sent_once_approved(self, body: dict[str, Any], key: dict[str, str]) -> Any:
        """POST /v1/messages until the approval has reached the process."""
        deadline = time.monotonic() + WITHIN
        while True:
            status, answer = await self.v1("POST", "/v1/messages", body, key)
            if status == 202:
                return answer
            assert answer["errors"][0]["code"] == "template_not_approved", answer
            assert time.monotonic() < deadline, "the approval did not reach the router"
            await asyncio.sleep(0.05)


async def _at_carrier(carrier: CarrierSimulator, text: str) -> None:
    deadline = time.monotonic() + 10
    while not any(s.text == text for s in carrier.submits):
        assert time.monotonic() < deadline, [s.text for s in carrier.submits]
        await asyncio.sleep(0.05)


def _fields(answer: Any) -> list[tuple[str, str]]:
    return [(e["field"], e["code"]) for e in answer["errors"]]


async def test_create_approve_and_send_by_template_over_http(
    start_router: StartRouter, carrier: CarrierSimulator
) -> None:
    router = await start_router(_config(_free_port()))
    async with aiohttp.ClientSession() as http:
        api = Api(http, router)
        otp = {"name": "otp", "text": "Your code is {code}. Valid {minutes} min.", "kind": None}
        status, created = await api.v1("POST", "/v1/templates", otp)
        assert status == 201, created
        assert {k: created[k] for k in ("name", "text", "kind", "status")} == {
            **otp,
            "status": "pending",
        }
        tpl = created["id"]
        # Its name is taken; a bad text and a bad kind are named.
        status, taken = await api.v1("POST", "/v1/templates", otp)
        assert (status, taken["code"], taken["field"]) == (409, "template_exists", "name")
        bad = {"name": "bad", "text": "Hi {Name", "kind": "marketing", "extra": 1}
        status, invalid = await api.v1("POST", "/v1/templates", bad)
        assert status == 422
        assert sorted(_fields(invalid)) == [
            ("extra", "unknown_field"),
            ("kind", "invalid"),
            ("text", "invalid_template"),
        ]
        # The account reads its own; another account gets 404.
        status, listed = await api.v1("GET", "/v1/templates?status=pending")
        assert status == 200 and [t["id"] for t in listed["templates"]] == [tpl]
        assert listed["next"] is None
        assert (await api.v1("GET", f"/v1/templates/{tpl}"))[0] == 200
        assert (await api.v1("GET", f"/v1/templates/{tpl}", key=KEY_O))[0] == 404

        send = {"from": "+14155550101", "to": US, "template": tpl}
        # Pending: not sendable yet.
        status, refused = await api.v1(
            "POST", "/v1/messages", {**send, "params": {"code": "1", "minutes": 5}}
        )
        assert (status, _fields(refused)) == (422, [("template", "template_not_approved")])

        # The operator's queue, the approval, and a second decision refused.
        status, pending = await api.ops("GET", "/templates?status=pending&account=t")
        assert status == 200 and [t["id"] for t in pending["templates"]] == [tpl]
        status, approved = await api.ops("POST", f"/templates/{tpl}/approve")
        assert (status, approved["status"], approved["decided_by"]) == (200, "approved", "ops")
        status, again = await api.ops("POST", f"/templates/{tpl}/approve")
        assert (status, again["code"]) == (409, "template_not_pending")
        assert (await api.ops("POST", "/templates/tpl_nope/approve"))[0] == 404
        status, audit = await api.ops("GET", "/audit?limit=1")
        assert (audit["entries"][0]["action"], audit["entries"][0]["target"]) == (
            "template.approve",
            tpl,
        )

        # Sent by template: the carrier gets the rendered text.
        answer = await api.sent_once_approved(
            {**send, "params": {"code": "482913", "minutes": 10}}, KEY_T
        )
        assert answer["messages"][0]["to"] == US
        await _at_carrier(carrier, "Your code is 482913. Valid 10 min.")

        # A missing and an unknown param are named; text and template together refused.
        status, refused = await api.v1(
            "POST", "/v1/messages", {**send, "params": {"minutes": 5, "coupon": "X"}}
        )
        assert (status, _fields(refused)) == (
            422,
            [("params.code", "required"), ("params.coupon", "unknown")],
        )
        status, refused = await api.v1(
            "POST", "/v1/messages", {**send, "text": "hi", "params": {"code": "1", "minutes": 1}}
        )
        assert (status, _fields(refused)) == (422, [("template", "invalid")])
        long_value = {"code": "9" * 101, "minutes": 1}
        status, refused = await api.v1("POST", "/v1/messages", {**send, "params": long_value})
        assert (status, _fields(refused)) == (422, [("params.code", "too_long")])
        # Another account cannot send it.
        other = {**send, "from": "+14155550101", "params": {"code": "1", "minutes": 1}}
        status, refused = await api.v1("POST", "/v1/messages", other, key=KEY_O)
        assert status == 422 and ("template", "template_not_approved") in _fields(refused)

        # A rejection needs a reason and keeps it.
        status, promo = await api.v1(
            "POST", "/v1/templates", {"name": "promo", "text": "Sale {pct}% off"}
        )
        assert status == 201
        status, refused = await api.ops("POST", f"/templates/{promo['id']}/reject", {})
        assert (status, _fields(refused)) == (422, [("reason", "required")])
        status, rejected = await api.ops(
            "POST", f"/templates/{promo['id']}/reject", {"reason": "promotional"}
        )
        assert (status, rejected["status"], rejected["reason"]) == (200, "rejected", "promotional")
        status, shown = await api.v1("GET", f"/v1/templates/{promo['id']}")
        assert (shown["status"], shown["reason"]) == ("rejected", "promotional")


async def admin_cli(router: RouterProcess, *argv: str) -> tuple[int, Any, str]:
    """`smsrouter admin --config FILE ARGV`: (exit code, JSON out, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsrouter", "admin", "--config", str(router.config_path), *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SMSROUTER_ADMIN_TOKEN": OPS_TOKEN},
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else None, err.decode()


def _submit(text: str) -> SubmitSm:
    return SubmitSm(
        source_addr_ton=1, source_addr_npi=1, source_addr="14155550102",
        dest_addr_ton=1, dest_addr_npi=1, destination_addr=US.lstrip("+"),
        short_message=text.encode(),
    )  # fmt: skip


async def test_a_templates_required_account_sends_only_approved_templates(
    start_router: StartRouter, carrier: CarrierSimulator
) -> None:
    router = await start_router(_config(_free_port()))
    async with aiohttp.ClientSession() as http:
        api = Api(http, router)
        ship = {"name": "ship", "text": "Order {order} ships {day}."}
        status, created = await api.v1("POST", "/v1/templates", ship, KEY_S)
        assert status == 201
        status, spam = await api.v1(
            "POST", "/v1/templates", {"name": "spam", "text": "Win {prize} now"}, KEY_S
        )
        assert status == 201

        # The operator's CLI: the pending list, an approval, a rejection.
        code, listed, err = await admin_cli(
            router, "templates", "list", "--status", "pending", "--account", "s"
        )
        assert code == 0, err
        assert sorted(t["id"] for t in listed["templates"]) == sorted([created["id"], spam["id"]])
        code, approved, err = await admin_cli(router, "templates", "approve", created["id"])
        assert (code, approved["status"]) == (0, "approved"), err
        code, rejected, err = await admin_cli(
            router, "templates", "reject", spam["id"], "--reason", "lottery"
        )
        assert (code, rejected["status"], rejected["reason"]) == (0, "rejected", "lottery"), err
        code, _, err = await admin_cli(router, "templates", "approve", spam["id"])
        assert code == 1 and "template_not_pending" in err

        by_template = {
            "from": "+14155550102", "to": US, "template": created["id"],
            "params": {"order": "A-17", "day": "tomorrow"},
        }  # fmt: skip
        await api.sent_once_approved(by_template, KEY_S)
        await _at_carrier(carrier, "Order A-17 ships tomorrow.")
        # Free text, even one a template would render, is refused over HTTP.
        free = {"from": "+14155550102", "to": US, "text": "Order A-17 ships tomorrow."}
        status, refused = await api.v1("POST", "/v1/messages", free, KEY_S)
        assert status == 422
        assert [r["code"] for r in refused["rejected"]] == ["template_required"]
        # The rejected template cannot be sent.
        status, refused = await api.v1(
            "POST", "/v1/messages",
            {**by_template, "template": spam["id"], "params": {"prize": "a car"}}, KEY_S,
        )  # fmt: skip
        assert (status, _fields(refused)) == (422, [("template", "template_not_approved")])

    # Over SMPP the text must match an approved template.
    esme = await RawEsme.connect(router.smpp_port)
    try:
        assert await esme.bind(BindTransceiver, "strict", "strict") == CommandStatus.ESME_ROK
        cases = [
            ("Order B-2 ships Monday.", CommandStatus.ESME_ROK),
            ("Order B-2 ships Monday. Also: 50% off!", CommandStatus.ESME_RX_P_APPN),
            ("Win a car now", CommandStatus.ESME_RX_P_APPN),  # the rejected one
            ("Order  ships Monday.", CommandStatus.ESME_RX_P_APPN),  # an empty variable
            ("hello", CommandStatus.ESME_RX_P_APPN),
        ]
        for text, expected in cases:
            esme.send(_submit(text))
            answer = await esme.read()
            assert isinstance(answer, SubmitSmResp), answer
            assert answer.command_status == expected, text
    finally:
        esme.close()
        await esme.wait_closed()
    await _at_carrier(carrier, "Order B-2 ships Monday.")
