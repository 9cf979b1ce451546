"""CONTRACT §8 against the router subprocess: a change through the operator
API takes effect within 1 s without a restart — a revoked key stops
working, a locked account's keys answer 403 and its open bind is unbound, a
raised daily limit lets the next message through — and what the config
file sets stays the file's (409 managed_by_config) while its credit may be
topped up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from smsrouter.connectors.smpp import BindTransceiver, CommandStatus, Unbind
from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess
from tests.raw_esme import RawEsme

OPS = {"Authorization": "Bearer ops-token-0123456789abcdef"}
# How long a change may take to reach the process (CONTRACT §8: 1 s).
WITHIN = 1.0

CONFIG = """
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "filed"
api_keys = ["filed-key"]
credit = "1"
max_tps = 50
[admin]
listen = "127.0.0.1:0"
tokens = [{ name = "ops", token = "ops-token-0123456789abcdef" }]
[shutdown]
drain_seconds = 1
"""


class Admin:
    def __init__(self, http: aiohttp.ClientSession, router: RouterProcess) -> None:
        self.http = http
        self.base = f"http://127.0.0.1:{router.admin_port}/admin/v1"

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        async with self.http.request(method, self.base + path, json=body, headers=OPS) as resp:
            answer = await resp.json() if resp.status != 204 else None
            assert resp.status == expect, answer
            return answer


async def _send(
    http: aiohttp.ClientSession, router: RouterProcess, key: str, sender: str = "12345"
) -> tuple[int, Any]:
    body = {"from": sender, "to": "+14155550123", "text": "hi"}
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(router.base_url + "/v1/messages", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def _took(check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Seconds until `check` holds, polled every 20 ms, failing past WITHIN."""
    began = time.monotonic()
    while not await check():
        took = time.monotonic() - began
        assert took < WITHIN, f"{what} took longer than {WITHIN} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - began


async def _new_account(admin: Admin, account: str, **fields: Any) -> str:
    await admin.call("POST", "/accounts", {"id": account, "credit": "5", **fields}, expect=201)
    await admin.call("PUT", "/numbers/12345", {"account": account, "type": "short_code"})
    key = await admin.call("POST", f"/accounts/{account}/api-keys", {"name": "app"}, expect=201)
    return str(key["key"])


async def test_a_revoked_key_stops_working_within_a_second(start_router: StartRouter) -> None:
    router = await start_router(CONFIG)
    async with aiohttp.ClientSession() as http:
        admin = Admin(http, router)
        key = await _new_account(admin, "shop")
        await _took(lambda: _accepted(http, router, key), "a new key to work")
        # Rotation: a second key, then the first revoked; the second goes on.
        second = await admin.call("POST", "/accounts/shop/api-keys", {"name": "v2"}, expect=201)
        keys = await admin.call("GET", "/accounts/shop/api-keys")
        first_id = next(k["key_id"] for k in keys["api_keys"] if k["name"] == "app")
        await admin.call("DELETE", f"/accounts/shop/api-keys/{first_id}", expect=204)

        async def refused() -> bool:
            status, body = await _send(http, router, key)
            return status == 401 and body["code"] == "unauthorized"

        await _took(refused, "revocation")
        assert (await _send(http, router, second["key"]))[0] == 202
        # The key's use is recorded (a few seconds late, in the sweep).
        deadline = time.monotonic() + 10
        while True:
            listed = await admin.call("GET", "/accounts/shop/api-keys")
            (v2,) = listed["api_keys"]
            if v2["last_used_at"] is not None:
                break
            assert time.monotonic() < deadline, "last_used_at never recorded"
            await asyncio.sleep(0.5)


async def _accepted(http: aiohttp.ClientSession, router: RouterProcess, key: str) -> bool:
    return (await _send(http, router, key))[0] == 202


async def test_locking_an_account_refuses_its_keys_and_unbinds_its_binds(
    start_router: StartRouter,
) -> None:
    router = await start_router(CONFIG)
    async with aiohttp.ClientSession() as http:
        admin = Admin(http, router)
        key = await _new_account(admin, "lockme")
        smpp = {"system_id": "lockme", "password": "pw123456", "max_binds": 2}
        assert (await admin.call("PUT", "/accounts/lockme/smpp", smpp))["system_id"] == "lockme"
        await _took(lambda: _accepted(http, router, key), "a new key to work")
        esme = await RawEsme.connect(router.smpp_port)

        async def bound() -> bool:
            status = await esme.bind(BindTransceiver, "lockme", "pw123456")
            assert status in (CommandStatus.ESME_ROK, CommandStatus.ESME_RINVSYSID)
            return status == CommandStatus.ESME_ROK

        try:
            await _took(bound, "new SMPP credentials")
            await admin.call("PATCH", "/accounts/lockme", {"locked": True, "lock_reason": "unpaid"})

            async def locked() -> bool:
                status, body = await _send(http, router, key)
                return status == 403 and body["code"] == "account_locked"

            await _took(locked, "the lock")
            began = time.monotonic()
            pdu = await esme.read(timeout=WITHIN)
            assert isinstance(pdu, Unbind), pdu
            assert time.monotonic() - began < WITHIN
        finally:
            esme.close()
            await esme.wait_closed()
        again = await RawEsme.connect(router.smpp_port)
        try:
            status = await again.bind(BindTransceiver, "lockme", "pw123456")
            assert status == CommandStatus.ESME_RBINDFAIL
        finally:
            again.close()
            await again.wait_closed()
        await admin.call("PATCH", "/accounts/lockme", {"locked": False})
        await _took(lambda: _accepted(http, router, key), "the unlock")


async def test_a_raised_daily_limit_takes_effect_at_once(start_router: StartRouter) -> None:
    router = await start_router(CONFIG)
    async with aiohttp.ClientSession() as http:
        admin = Admin(http, router)
        key = await _new_account(admin, "daily", daily_limit=2)
        await _took(lambda: _accepted(http, router, key), "a new key to work")
        assert (await _send(http, router, key))[0] == 202
        status, body = await _send(http, router, key)
        assert (status, body["rejected"][0]["code"]) == (422, "limit_reached")
        await admin.call("PATCH", "/accounts/daily", {"daily_limit": 3})
        await _took(lambda: _accepted(http, router, key), "the raised limit")


async def test_what_the_file_sets_is_the_files_but_its_credit_may_be_topped_up(
    start_router: StartRouter,
) -> None:
    router = await start_router(CONFIG)
    async with aiohttp.ClientSession() as http:
        admin = Admin(http, router)
        refused = await admin.call("PATCH", "/accounts/filed", {"max_tps": 5}, expect=409)
        assert refused["code"] == "managed_by_config"
        # A field the file does not set is the operator's.
        patched = await admin.call("PATCH", "/accounts/filed", {"daily_alarm": 100})
        assert patched["daily_alarm"] == 100
        entry = await admin.call(
            "POST", "/accounts/filed/credit", {"amount": "2.50", "reference": "inv-7"}, expect=201
        )
        assert (entry["kind"], entry["balance"]) == ("top_up", "3.50")
        float_money = {"amount": 2.5, "reference": "x"}
        invalid = await admin.call("POST", "/accounts/filed/credit", float_money, expect=422)
        assert invalid["errors"][0]["field"] == "amount"
        headers = {"Authorization": "Bearer filed-key"}
        async with http.get(router.base_url + "/v1/balance", headers=headers) as resp:
            assert (await resp.json())["credit"] == "3.50"
        audit = await admin.call("GET", "/audit")
        actions = [(e["actor"], e["action"]) for e in audit["entries"]]
        assert ("ops", "credit.add") in actions and ("ops", "account.patch") in actions
        assert ("config", "account.create") in actions


async def test_a_limit_set_at_run_time_counts_what_the_day_stored_already(
    start_router: StartRouter,
) -> None:
    router = await start_router(CONFIG)
    async with aiohttp.ClientSession() as http:
        admin = Admin(http, router)
        key = await _new_account(admin, "later")
        await _took(lambda: _accepted(http, router, key), "a new key to work")
        assert (await _send(http, router, key))[0] == 202  # two stored today
        await admin.call("PATCH", "/accounts/later", {"daily_limit": 3})
        # Nothing sent while the change travels (CONTRACT §8: within 1 s): a
        # message accepted meanwhile would count before the limit came.
        await asyncio.sleep(WITHIN)
        # The third of the day passes, the fourth is refused: the count did
        # not start again from zero when the limit came.
        assert (await _send(http, router, key))[0] == 202
        status, body = await _send(http, router, key)
        assert (status, body["rejected"][0]["code"]) == (422, "limit_reached")
        headers = {"Authorization": f"Bearer {key}"}
        async with http.get(router.base_url + "/v1/messages", headers=headers) as resp:
            assert len((await resp.json())["messages"]) == 3
