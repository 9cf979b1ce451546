"""`smsrouter admin ...` (CONTRACT §8) as an operator runs it, against the
router subprocess serving its operator API: an account created, given a
number, a key and credit; a message sent with the new key; the ledger shows
the top-up and the message's reserve row (CONTRACT §6 "Credit")."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from decimal import Decimal
from typing import Any

import aiohttp

from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess

OPS_TOKEN = "ops-token-0123456789abcdefghijkl"  # 32 characters


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
[admin]
listen = "127.0.0.1:{admin_port}"
tokens = [{{ name = "ops", token = "{OPS_TOKEN}" }}]
"""


async def admin(router: RouterProcess, *argv: str) -> tuple[int, str, str]:
    """`python -m smsrouter admin --config <the router's file> ARGV`, the
    token in the environment: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsrouter", "admin", "--config", str(router.config_path), *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SMSROUTER_ADMIN_TOKEN": OPS_TOKEN},
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def admin_json(router: RouterProcess, *argv: str) -> Any:
    code, out, err = await admin(router, *argv)
    assert code == 0, err
    return json.loads(out)


async def wait_for_balance(
    http: aiohttp.ClientSession, router: RouterProcess, key: str, credit: Decimal
) -> None:
    """Until the new key answers with the credit added: a change made through
    the operator API takes effect within 1 s (CONTRACT §8); 3 s allowed."""
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 3.0
    while True:
        async with http.get(router.base_url + "/v1/balance", headers=headers) as resp:
            body = await resp.json()
        if resp.status == 200 and Decimal(body["credit"]) == credit:
            return
        assert time.monotonic() < deadline, (resp.status, body)
        await asyncio.sleep(0.1)


async def send_one(http: aiohttp.ClientSession, router: RouterProcess, key: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    body = {"from": "12345", "to": "+14155550123", "text": "hello from the operator example"}
    async with http.post(router.base_url + "/v1/messages", json=body, headers=headers) as resp:
        answer = await resp.json()
        assert resp.status == 202, answer
    message: dict[str, Any] = answer["messages"][0]
    return message


async def test_the_worked_example_account_key_credit_send_ledger(
    start_router: StartRouter,
) -> None:
    router = await start_router(_config(_free_port()))

    account = await admin_json(router, "accounts", "create", "acme", "--set", "verified=true")
    assert account["id"] == "acme" and account["verified"] is True
    assert account["webhook_secret"]  # shown once, at creation

    number = await admin_json(
        router, "numbers", "put", "12345", "--account", "acme", "--type", "short_code"
    )
    assert (number["number"], number["account"]) == ("12345", "acme")

    key = await admin_json(router, "keys", "create", "acme", "--name", "web shop")
    assert key["key"] and key["name"] == "web shop"

    top_up = await admin_json(router, "credit", "add", "acme", "10.00", "--reference", "invoice 1")
    assert top_up["kind"] == "top_up"
    assert Decimal(top_up["amount"]) == Decimal(top_up["balance"]) == Decimal("10.00")

    async with aiohttp.ClientSession() as http:
        await wait_for_balance(http, router, key["key"], Decimal("10.00"))
        message = await send_one(http, router, key["key"])
    assert Decimal(message["price"]) == Decimal("0.01")

    ledger = await admin_json(router, "ledger", "acme")
    reserve, top = ledger["entries"]  # newest first
    assert (reserve["kind"], reserve["message_id"], reserve["messages"]) == (
        "reserve",
        message["id"],
        1,
    )
    assert Decimal(reserve["amount"]) == Decimal("-0.01")
    assert Decimal(reserve["balance"]) == Decimal("9.99")
    assert top["id"] == top_up["id"]

    code, table, _ = await admin(router, "ledger", "acme", "--output", "table")
    assert code == 0
    assert [line.split()[2] for line in table.splitlines()[1:]] == ["reserve", "top_up"]

    keys = await admin_json(router, "keys", "list", "acme")
    assert key["key"] not in json.dumps(keys)  # the key is shown once, never listed

    audit = await admin_json(router, "audit", "--all")
    actions = {(e["actor"], e["action"], e["target"]) for e in audit["entries"]}
    assert {("ops", "account.create", "acme"), ("ops", "credit.add", "acme")} <= actions


async def test_problems_and_no_answer_as_exit_codes(start_router: StartRouter) -> None:
    router = await start_router(_config(_free_port()))

    code, out, err = await admin(router, "accounts", "show", "nobody")
    assert (code, out) == (1, "")
    assert err.startswith("error 404 not_found:")

    code, _, err = await admin(router, "accounts", "create", "bad id!")
    assert code == 1
    assert err.startswith("error 422 ") and "  id " in err

    await admin_json(router, "accounts", "create", "unverified", "--set", "verified=false")
    code, _, err = await admin(router, "credit", "add", "unverified", "5", "--reference", "r")
    assert code == 1 and err.startswith("error 409 account_unverified:")

    wrong = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsrouter", "admin", "--config", str(router.config_path), "audit",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SMSROUTER_ADMIN_TOKEN": "not-the-operator-token-at-all"},
    )  # fmt: skip
    _, err_bytes = await wrong.communicate()
    assert wrong.returncode == 1
    assert err_bytes.decode().startswith("error 401 unauthorized:")

    await router.terminate()
    code, _, err = await admin(router, "audit")
    assert code == 3 and "cannot reach the operator API" in err
