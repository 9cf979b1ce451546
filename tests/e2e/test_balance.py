"""CONTRACT §3 `GET /v1/balance` against the router subprocess: the
account's credit, currency and credit limit, money as decimal strings."""

from __future__ import annotations

import aiohttp

from tests.e2e.conftest import StartRouter

CONFIG = """
[[accounts]]
id = "a"
api_keys = ["key-a"]
credit = "12.50"
currency = "USD"
credit_limit = "5"
[[accounts]]
id = "b"
api_keys = ["key-b"]
"""


async def test_the_balance_names_credit_currency_and_limit(start_router: StartRouter) -> None:
    router = await start_router(CONFIG)
    async with aiohttp.ClientSession() as http:
        for key, expected in (
            ("key-a", {"credit": "12.50", "currency": "USD", "credit_limit": "5"}),
            ("key-b", {"credit": "0", "currency": "EUR", "credit_limit": "0"}),
        ):
            headers = {"Authorization": f"Bearer {key}"}
            async with http.get(router.base_url + "/v1/balance", headers=headers) as resp:
                assert resp.status == 200
                assert await resp.json() == expected


PLAN_CONFIG = """
[[prices]]
prefix = "1"
price = "0.0062"
[[price_plans]]
name = "wholesale"
prices = [ { prefix = "1415", price = "0.0040" } ]
[[accounts]]
id = "w"
api_keys = ["key-w"]
credit = "100"
price_plan = "wholesale"
[[numbers]]
number = "12345"
account = "w"
type = "short_code"
"""


async def test_the_price_charged_comes_from_the_account_plan_first(
    start_router: StartRouter,
) -> None:
    router = await start_router(PLAN_CONFIG)
    headers = {"Authorization": "Bearer key-w"}
    url = router.base_url + "/v1/messages"
    async with aiohttp.ClientSession() as http:
        for to, price in (("+14155550100", "0.0040"), ("+14165550100", "0.0062")):
            body = {"from": "12345", "to": to, "text": "priced"}
            async with http.post(url, json=body, headers=headers) as resp:
                assert resp.status == 202
                accepted = (await resp.json())["messages"][0]
            assert accepted["price"] == price
            async with http.get(f"{url}/{accepted['id']}", headers=headers) as resp:
                assert (await resp.json())["price"] == price
