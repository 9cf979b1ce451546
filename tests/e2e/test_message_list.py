"""CONTRACT §3 `GET /v1/messages` against the router subprocess: an
account's messages newest first, page by page with an opaque cursor,
filtered by status, client_ref and since; another account's are never
listed; a bad parameter is a 422 naming it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from tests.e2e.conftest import KEY_A, KEY_B, SENDER, TWO_ACCOUNTS, StartRouter
from tests.tools import BOUND


async def _get(http: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, Any]:
    async with http.get(url, params=params, headers=KEY_A) as resp:
        return resp.status, await resp.json()


async def test_pages_follow_each_other_newest_first_and_filters_hold(
    start_router: StartRouter,
) -> None:
    router = await start_router(TWO_ACCOUNTS)
    url = router.base_url + "/v1/messages"
    async with aiohttp.ClientSession() as http:
        sent: list[str] = []
        for i in range(7):
            body = {
                "from": SENDER,
                "to": f"+1415555{i:04d}",
                "text": f"n{i}",
                "client_ref": f"r{i % 2}",
            }
            async with http.post(url, json=body, headers=KEY_A) as resp:
                assert resp.status == 202
                sent.append((await resp.json())["messages"][0]["id"])
        async with http.post(
            url, json={"from": "54321", "to": "+14155550999", "text": "b"}, headers=KEY_B
        ) as resp:
            assert resp.status == 202

        # Page by page, three at a time: every message once, newest first.
        listed: list[dict[str, Any]] = []
        params = {"limit": "3"}
        pages = 0
        while True:
            status, page = await _get(http, url, **params)
            assert status == 200 and len(page["messages"]) <= 3
            listed += page["messages"]
            pages += 1
            if page["next"] is None:
                break
            params = {"limit": "3", "after": page["next"]}
        assert pages == 3
        assert [m["id"] for m in listed] == sent[::-1]
        created = [m["created_at"] for m in listed]
        assert created == sorted(created, reverse=True)
        assert listed[0]["from"] == SENDER and listed[0]["to"] == "+14155550006"
        assert listed[0]["price"] == "0.01" and listed[0]["client_ref"] == "r0"

        _, refs = await _get(http, url, client_ref="r1")
        assert [m["id"] for m in refs["messages"]] == [sent[5], sent[3], sent[1]]

        # Once their receipts are in, the delivered ones are listed as such.
        async with asyncio.timeout(BOUND):
            while True:
                _, delivered = await _get(http, url, status="delivered")
                if len(delivered["messages"]) == 7:
                    break
                await asyncio.sleep(0.05)
        _, queued = await _get(http, url, status="queued")
        assert queued["messages"] == []

        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        _, none_yet = await _get(http, url, since=future)
        assert none_yet == {"messages": [], "next": None}

        status, bad = await _get(
            http, url, limit="0", status="lost", since="yesterday", after="!!", sort="up"
        )
        assert status == 422
        assert {e["field"] for e in bad["errors"]} == {"limit", "status", "since", "after", "sort"}
