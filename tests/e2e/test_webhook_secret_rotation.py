"""A webhook secret rotation against the router subprocess (CONTRACT §3,
§8): through the operator API and through `smsrouter admin accounts
webhook-secret`, callbacks to the webhook receiver carry one Standard
Webhooks signature, then both during the rotation, then the new one's only,
each checked with the specification's own library (`standardwebhooks`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from smsrouter.sims.webhook import Callback, WebhookReceiver
from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess

OPS_TOKEN = "ops-token-0123456789abcdefghijkl"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
FILE_SECRET = "file-secret-0123456789"
NEXT = "whsec-next-0123456789abcdef"
# Messages sent, each waited for, until a change has reached the router
# (CONTRACT §8: within 1 s; each try takes a message's round trip).
TRIES = 40

CONFIG = f"""
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "filed"
api_keys = ["filed-key"]
credit = "10"
webhook_secret = "{FILE_SECRET}"
[admin]
listen = "127.0.0.1:0"
tokens = [{{ name = "ops", token = "{OPS_TOKEN}" }}]
[shutdown]
drain_seconds = 1
"""


@pytest.fixture
def router_site(each_build: Path | None) -> Path | None:
    """Every test here runs on the interpreted and the compiled build."""
    return each_build


def _verifies(secret: str, callback: Callback) -> bool:
    # The specification's libraries take the key base64-encoded (CONTRACT §3).
    hook = Webhook(base64.b64encode(secret.encode()).decode())
    try:
        hook.verify(callback.raw, callback.headers)
    except WebhookVerificationError:
        return False
    return True


def _signatures(callback: Callback) -> list[str]:
    return callback.headers["webhook-signature"].split(" ")


class Shop:
    """An account made through the operator API: a number, a key, and its
    callbacks to the webhook receiver."""

    def __init__(
        self, http: aiohttp.ClientSession, router: RouterProcess, webhook: WebhookReceiver
    ) -> None:
        self.http = http
        self.router = router
        self.webhook = webhook
        self.admin = f"http://127.0.0.1:{router.admin_port}/admin/v1"
        self.key = ""

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.admin + path, json=body, headers=OPS) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None

    async def create(self) -> str:
        status, account = await self.call(
            "POST", "/accounts", {"id": "shop", "credit": "10", "callback_url": self.webhook.url}
        )
        assert status == 201, account
        status, _ = await self.call(
            "PUT", "/numbers/12345", {"account": "shop", "type": "short_code"}
        )
        assert status == 200
        status, key = await self.call("POST", "/accounts/shop/api-keys", {"name": "app"})
        assert status == 201
        self.key = key["key"]
        secret: str = account["webhook_secret"]
        return secret

    async def send(self) -> str:
        """One message, retried while the new key is not known yet (401);
        its id."""
        headers = {"Authorization": f"Bearer {self.key}"}
        body = {"from": "12345", "to": "+14155550123", "text": "rotation"}
        for _ in range(TRIES):
            async with self.http.post(
                self.router.base_url + "/v1/messages", json=body, headers=headers
            ) as resp:
                answer = await resp.json()
            if resp.status == 202:
                message_id: str = answer["messages"][0]["id"]
                return message_id
            assert resp.status == 401, answer
            await asyncio.sleep(0.1)
        raise AssertionError("the new key never worked")

    async def callback(self) -> Callback:
        """The final callback of a message sent now."""
        message_id = await self.send()
        while True:
            callbacks = list(self.webhook.callbacks)
            for callback in callbacks:
                if callback.body.get("id") == message_id:
                    return callback
            await self.webhook.wait_for(len(callbacks) + 1, timeout=15)

    async def callback_signed(self, count: int) -> Callback:
        """The callback of the first message sent after the router took a
        change: one with `count` signatures."""
        for _ in range(TRIES):
            callback = await self.callback()
            if len(_signatures(callback)) == count:
                return callback
        raise AssertionError(f"no callback with {count} signatures")


async def test_a_rotation_through_the_operator_api(
    start_router: StartRouter, webhook: WebhookReceiver
) -> None:
    router = await start_router(CONFIG)
    async with aiohttp.ClientSession() as http:
        shop = Shop(http, router, webhook)
        first = await shop.create()
        webhook.secret = first  # X-Smsrouter-Signature stays on the current secret

        before = await shop.callback()
        assert _verifies(first, before) and not _verifies(NEXT, before)
        assert len(_signatures(before)) == 1 and before.signature_ok

        status, state = await shop.call("PUT", "/accounts/shop/webhook-secret", {"next": NEXT})
        assert (status, state["next"]) == (
            200,
            "sha256:" + hashlib.sha256(NEXT.encode()).hexdigest()[:16],
        )
        during = await shop.callback_signed(2)
        assert _verifies(first, during) and _verifies(NEXT, during)
        assert during.signature_ok

        status, state = await shop.call("POST", "/accounts/shop/webhook-secret/promote")
        assert status == 200 and state["next"] is None
        webhook.secret = NEXT
        after = await shop.callback_signed(1)
        assert _verifies(NEXT, after) and not _verifies(first, after)
        assert after.signature_ok

        # The file's secret is the file's (CONTRACT §8).
        status, problem = await shop.call("PUT", "/accounts/filed/webhook-secret", {"next": NEXT})
        assert (status, problem["code"]) == (409, "managed_by_config")

        status, audit = await shop.call("GET", "/audit")
        actions = [e["action"] for e in audit["entries"] if e["target"] == "shop"]
        assert actions[:2] == ["webhook_secret.promote", "webhook_secret.put_next"]
        assert first not in json.dumps(audit) and NEXT not in json.dumps(audit)
    assert webhook.signature_failures == 0
    assert first not in router.output() and NEXT not in router.output()


async def _admin(router: RouterProcess, *argv: str) -> tuple[int, str, str]:
    """`python -m smsrouter admin --url <the router's> ARGV`, the token in
    the environment: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsrouter", "admin",
        "--url", f"http://127.0.0.1:{router.admin_port}", *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SMSROUTER_ADMIN_TOKEN": OPS_TOKEN},
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_rotation_with_the_admin_command(
    start_router: StartRouter, webhook: WebhookReceiver
) -> None:
    router = await start_router(CONFIG)
    async with aiohttp.ClientSession() as http:
        shop = Shop(http, router, webhook)
        first = await shop.create()

        code, out, err = await _admin(
            router, "accounts", "webhook-secret", "set-next", "shop", "--generate"
        )
        assert code == 0, err
        shown = json.loads(out)
        generated = shown["next_secret"]  # made by the command, printed this once
        fingerprint = "sha256:" + hashlib.sha256(generated.encode()).hexdigest()[:16]
        assert shown["next"] == fingerprint

        code, out, _ = await _admin(router, "accounts", "webhook-secret", "show", "shop")
        assert code == 0 and json.loads(out)["next"] == fingerprint
        assert generated not in out
        during = await shop.callback_signed(2)
        assert _verifies(first, during) and _verifies(generated, during)

        code, out, _ = await _admin(router, "accounts", "webhook-secret", "promote", "shop")
        assert code == 0 and json.loads(out)["current"] == fingerprint
        after = await shop.callback_signed(1)
        assert _verifies(generated, after) and not _verifies(first, after)

        code, out, err = await _admin(router, "accounts", "webhook-secret", "promote", "shop")
        assert code == 1 and "no_next_secret" in err

        code, out, err = await _admin(router, "accounts", "webhook-secret", "set-next", "filed",
                                      "--generate")  # fmt: skip
        assert code == 1 and "managed_by_config" in err and out == ""
