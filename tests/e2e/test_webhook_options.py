"""Webhook options against the router subprocess (README "Webhooks"): the
optional `sent` callback of an account that asks for it (config or the
operator's PATCH), signed as the DLR callback is, once per message, none
for an account that does not; and callbacks leaving through a
plain-HTTP proxy named by HTTP_PROXY, asked in absolute form."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook

from smsrouter.sims.webhook import Callback, WebhookReceiver
from tests.e2e.conftest import WEBHOOK_SECRET, StartRouter
from tests.e2e.daemon import RouterProcess
from tests.web_proxy import WebProxy, web_proxy

OPS_TOKEN = "ops-token-0123456789abcdefghijkl"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
# Messages sent, each waited for, until an operator's change has reached
# the router (CONTRACT §8: within 1 s; each try takes a message's round trip).
TRIES = 40
LONG_TEXT = "two parts " * 20  # 200 GSM-7 characters: 2 parts


@pytest.fixture
def router_site(each_build: Path | None) -> Path | None:
    """Every test here runs on the interpreted and the compiled build."""
    return each_build


def _config(webhook_url: str) -> str:
    return f"""
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "a"
api_keys = ["key-a"]
credit = "100"
callback_url = "{webhook_url}"
webhook_secret = "{WEBHOOK_SECRET}"
callback_sent = true
[[accounts]]
id = "b"
api_keys = ["key-b"]
credit = "100"
callback_url = "{webhook_url}"
webhook_secret = "{WEBHOOK_SECRET}"
[[numbers]]
number = "12345"
account = "a"
type = "short_code"
[[numbers]]
number = "54321"
account = "b"
type = "short_code"
[admin]
listen = "127.0.0.1:0"
tokens = [{{ name = "ops", token = "{OPS_TOKEN}" }}]
[shutdown]
drain_seconds = 1
"""


async def _send(
    http: aiohttp.ClientSession, router: RouterProcess, key: str, sender: str, text: str = "hi"
) -> str:
    body = {"from": sender, "to": "+14155550123", "text": text}
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(router.base_url + "/v1/messages", json=body, headers=headers) as resp:
        answer = await resp.json()
        assert resp.status == 202, answer
    message_id: str = answer["messages"][0]["id"]
    return message_id


async def _callbacks_of(
    webhook: WebhookReceiver, message_id: str, statuses: set[str]
) -> dict[str, Callback]:
    """The message's callbacks by status, once those of `statuses` came."""
    while True:
        callbacks = list(webhook.callbacks)
        mine = {c.body["status"]: c for c in callbacks if c.body.get("id") == message_id}
        if statuses <= mine.keys():
            return mine
        await webhook.wait_for(len(callbacks) + 1, timeout=15)


async def _outbox_settled(http: aiohttp.ClientSession, router: RouterProcess) -> None:
    """Until every webhook row is done (smsrouter_outbox_backlog, CONTRACT
    §5): a sent callback, written before its message's receipt, has then
    reached the receiver, if there was one."""
    line = 'smsrouter_outbox_backlog{kind="webhook"} '
    for _ in range(200):
        async with http.get(router.base_url + "/metrics") as resp:
            text = await resp.text()
        values = [float(x.removeprefix(line)) for x in text.splitlines() if x.startswith(line)]
        if values == [0.0]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the webhook backlog never emptied")


def _statuses(webhook: WebhookReceiver, message_id: str) -> list[str]:
    return [c.body["status"] for c in webhook.callbacks if c.body.get("id") == message_id]


def _verifies(callback: Callback) -> None:
    hook = Webhook(base64.b64encode(WEBHOOK_SECRET.encode()).decode())
    hook.verify(callback.raw, callback.headers)  # raises if not
    assert callback.signature_ok


async def test_a_sent_callback_for_an_account_that_asks_none_for_another(
    start_router: StartRouter, webhook: WebhookReceiver
) -> None:
    router = await start_router(_config(webhook.url))
    async with aiohttp.ClientSession() as http:
        asked = await _send(http, router, "key-a", "12345", LONG_TEXT)
        mine = await _callbacks_of(webhook, asked, {"sent", "delivered"})
        sent = mine["sent"]
        assert sent.body["status"] == "sent"
        assert (sent.body["from"], sent.body["to"]) == ("12345", "+14155550123")
        assert (sent.body["carrier"], sent.body["parts"]) == ("sim", 2)
        assert sent.body["error_code"] is None and sent.body["done_at"] is None
        assert datetime.fromisoformat(sent.body["sent_at"]).tzinfo is not None
        _verifies(sent)
        _verifies(mine["delivered"])
        assert sent.headers["webhook-id"] != mine["delivered"].headers["webhook-id"]
        # One sent callback per message, not per part.
        await _outbox_settled(http, router)
        assert sorted(_statuses(webhook, asked)) == ["delivered", "sent"]

        # Account b does not ask: its final callback only.
        plain = await _send(http, router, "key-b", "54321")
        await _callbacks_of(webhook, plain, {"delivered"})
        await _outbox_settled(http, router)
        assert _statuses(webhook, plain) == ["delivered"]

        # An operator turns it on for b; a field the file sets is the file's.
        admin = f"http://127.0.0.1:{router.admin_port}/admin/v1/accounts"
        async with http.patch(admin + "/b", json={"callback_sent": True}, headers=OPS) as resp:
            assert resp.status == 200 and (await resp.json())["callback_sent"] is True
        async with http.patch(admin + "/a", json={"callback_sent": False}, headers=OPS) as resp:
            assert resp.status == 409 and (await resp.json())["code"] == "managed_by_config"
        for _ in range(TRIES):
            later = await _send(http, router, "key-b", "54321")
            await _callbacks_of(webhook, later, {"delivered"})
            await _outbox_settled(http, router)
            if "sent" in _statuses(webhook, later):
                break
        else:
            raise AssertionError("no sent callback after the PATCH")
        _verifies(
            next(
                c for c in webhook.callbacks if c.body["id"] == later and c.body["status"] == "sent"
            )
        )


@pytest.fixture
async def proxy() -> AsyncIterator[WebProxy]:
    async with web_proxy() as p:
        yield p


async def test_callbacks_leave_through_http_proxy_in_absolute_form(
    start_router: StartRouter, webhook: WebhookReceiver, proxy: WebProxy
) -> None:
    # Both spellings set, so that none inherited from the test's own
    # environment decides; NO_PROXY empty: 127.0.0.1 goes through it too.
    env = {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "NO_PROXY": "", "no_proxy": ""}
    router = await start_router(_config(webhook.url), env=env)
    async with aiohttp.ClientSession() as http:
        message_id = await _send(http, router, "key-b", "54321")
        mine = await _callbacks_of(webhook, message_id, {"delivered"})
    _verifies(mine["delivered"])
    assert f"POST {webhook.url} HTTP/1.1" in proxy.request_lines
    assert all(line.startswith("POST http://") for line in proxy.request_lines)
