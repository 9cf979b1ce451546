"""The status page's routes on the admin listener (CONTRACT §8), over real
HTTP: the page and its own assets, the JSON it refreshes from, and the
operator token taken as a Bearer token or as an HTTP Basic password, a
refusal challenging for Basic so that a browser asks. The document itself
is router/status.py's (tests/unit/test_status_board.py); the page drawn in
a browser is tests/e2e/test_status_page.py."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from smsrouter.connectors.admin_api import AdminApi
from smsrouter.router.auth_throttle import AuthThrottle

OPS_TOKEN = "ops-token-0123456789abcdefghij"
PATHS = ("/status", "/status/app.js", "/status/style.css", "/admin/v1/status")
CHALLENGE = 'Basic realm="smsrouter"'


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


class Source:
    """A status document that says how often it was asked for."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return {"carriers": [{"name": "sim-a"}], "calls": self.calls}


async def _serve(
    pool: asyncpg.Pool, source: Source | None, throttle: AuthThrottle | None = None
) -> AdminApi:
    api = AdminApi(
        pool, [("ops", OPS_TOKEN)], price_plans=frozenset, status=source, auth_throttle=throttle
    )
    await api.server.start("127.0.0.1", 0)
    return api


@pytest.fixture
async def served(db_pool: asyncpg.Pool) -> AsyncIterator[tuple[aiohttp.ClientSession, Source]]:
    source = Source()
    api = await _serve(db_pool, source)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{api.server.port}") as session:
            yield session, source
    finally:
        await api.server.stop()


@pytest.mark.parametrize(
    "credentials",
    [{"Authorization": f"Bearer {OPS_TOKEN}"}, basic("alice", OPS_TOKEN), basic("", OPS_TOKEN)],
    ids=["bearer", "basic", "basic-without-user"],
)
async def test_the_token_opens_every_route_as_bearer_or_basic_password(
    served: tuple[aiohttp.ClientSession, Source], credentials: dict[str, str]
) -> None:
    session, source = served
    types = {}
    for path in PATHS:
        async with session.get(path, headers=credentials) as response:
            assert response.status == 200, path
            types[path] = response.headers["Content-Type"]
            await response.read()
    assert types == {
        "/status": "text/html; charset=utf-8",
        "/status/app.js": "text/javascript; charset=utf-8",
        "/status/style.css": "text/css; charset=utf-8",
        "/admin/v1/status": "application/json",
    }
    assert source.calls == 1


async def test_the_json_is_built_anew_at_each_look_and_never_cached(
    served: tuple[aiohttp.ClientSession, Source],
) -> None:
    session, _ = served
    looks = []
    for _ in range(2):
        async with session.get("/admin/v1/status", headers=basic("ops", OPS_TOKEN)) as response:
            assert response.headers["Cache-Control"] == "no-store"
            looks.append(await response.json())
    assert looks == [
        {"carriers": [{"name": "sim-a"}], "calls": 1},
        {"carriers": [{"name": "sim-a"}], "calls": 2},
    ]


async def test_the_page_loads_only_its_own_script_and_style(
    served: tuple[aiohttp.ClientSession, Source],
) -> None:
    session, _ = served
    auth = basic("ops", OPS_TOKEN)
    async with session.get("/status", headers=auth) as response:
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "connect-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert re.findall(r'(?:src|href)="([^"]+)"', page) == [
        "data:,",
        "/status/style.css",
        "/status/app.js",
    ]
    assert "<script>" not in page and "<style" not in page and " style=" not in page
    for path in PATHS[:3]:
        async with session.get(path, headers=auth) as response:
            text = await response.text()
        assert not re.search(r"https?://", text), f"{path} refers to another site"
    async with session.get("/status/app.js", headers=auth) as response:
        assert "/admin/v1/status" in await response.text()


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        basic("ops", "not-the-token"),
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Basic " + base64.b64encode(OPS_TOKEN.encode()).decode()},  # no colon
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": f"Digest {OPS_TOKEN}"},
    ],
    ids=["none", "wrong-password", "not-base64", "no-colon", "wrong-bearer", "other-scheme"],
)
async def test_a_refusal_is_a_401_problem_that_asks_a_browser_for_basic(
    served: tuple[aiohttp.ClientSession, Source], credentials: dict[str, str]
) -> None:
    session, source = served
    for path in PATHS:
        async with session.get(path, headers=credentials) as response:
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"] == CHALLENGE
            assert response.content_type == "application/problem+json"
            assert (await response.json())["code"] == "unauthorized"
    assert source.calls == 0


async def test_failed_basic_passwords_are_throttled_the_right_one_too(
    db_pool: asyncpg.Pool,
) -> None:
    api = await _serve(db_pool, Source(), AuthThrottle(limit=3, window=60, cooldown=60))
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{api.server.port}") as session:
            for _ in range(3):
                async with session.get("/status", headers=basic("ops", "guess")) as response:
                    assert response.status == 401
            async with session.get("/status", headers=basic("ops", OPS_TOKEN)) as response:
                assert response.status == 429
                assert (await response.json())["code"] == "auth_throttled"
                assert int(response.headers["Retry-After"]) > 0
    finally:
        await api.server.stop()


async def test_without_a_status_source_there_is_no_page(db_pool: asyncpg.Pool) -> None:
    api = await _serve(db_pool, None)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{api.server.port}") as session:
            for path in PATHS:
                async with session.get(path, headers=basic("ops", OPS_TOKEN)) as response:
                    assert response.status == 404, path
    finally:
        await api.server.stop()
