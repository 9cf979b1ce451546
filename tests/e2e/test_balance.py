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
