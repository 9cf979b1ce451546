"""The operator's status page (CONTRACT §8) in a real browser: headless
Chromium (Debian's `chromium`) driven by Playwright, signed in with the
operator token as an HTTP Basic password, on the router subprocess with
three carriers: "sim" (the test's simulator), "sim-b" (one the daemon runs)
and "offline" (nobody listens). The page shows every carrier; the
messages-out rate it shows rises while messages are sent over HTTP, and
falls back to 0 once they stop.

With SMSROUTER_STATUS_SCREENSHOT=<path> the test also saves a screenshot
of the page under traffic (README's docs/status.png is made so).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import CARRIER_PASSWORD, CARRIER_SYSTEM_ID, StartRouter
from tests.e2e.daemon import RouterProcess

OPS_TOKEN = "ops-token-status-0123456789abcdef"
KEY = {"Authorization": "Bearer status-key"}
SENDER = "12345"  # a short code: 100 parts/s, more than the test sends
CARRIERS = ("sim", "sim-b", "offline")
SCREENSHOT = os.environ.get("SMSROUTER_STATUS_SCREENSHOT", "")
# Seconds the whole test may take; each wait below is bounded by less.
BOUND = 150.0
WAIT_MS = 40_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _config(admin_port: int, sim_b_port: int, dead_port: int) -> str:
    return f"""
[admin]
listen = "127.0.0.1:{admin_port}"
tokens = [ {{ name = "ops", token = "{OPS_TOKEN}" }} ]
[[simulators]]
name = "sim-b"
port = {sim_b_port}
system_id = "{CARRIER_SYSTEM_ID}"
password = "{CARRIER_PASSWORD}"
receipt_delay = 0.05
[[carriers]]
name = "sim-b"
port = {sim_b_port}
system_id = "{CARRIER_SYSTEM_ID}"
password = "{CARRIER_PASSWORD}"
reconnect_delay = 0.2
[[carriers]]
name = "offline"
port = {dead_port}
system_id = "{CARRIER_SYSTEM_ID}"
password = "{CARRIER_PASSWORD}"
reconnect_delay = 0.5
reconnect_max_delay = 2
[[routes]]
prefix = "44"
carriers = [ {{ name = "sim-b", cost = "0.005" }}, {{ name = "offline", cost = "0.006" }} ]
[[prices]]
prefix = "1"
price = "0.01"
[[prices]]
prefix = "44"
price = "0.03"
[[accounts]]
id = "a"
api_keys = ["status-key"]
credit = "100000"
[[numbers]]
number = "{SENDER}"
account = "a"
type = "short_code"
[[numbers]]
number = "+14155550101"
account = "a"
type = "long_code"
[shutdown]
drain_seconds = 1
"""


def chromium_path() -> str:
    """Debian's chromium, and Playwright to drive it: the test is skipped
    without them on a developer's machine, and fails without them in CI
    (.ci/run installs both)."""
    missing = []
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing.append("chromium (Debian package chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing.append("playwright (the test extra)")
    if missing:
        message = " and ".join(missing) + " not installed"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run should have installed it")
        pytest.skip(message)
    assert path is not None
    return path


class Traffic:
    """Messages sent over HTTP while it runs: a batch of 5 every `pause`
    seconds (four to +1 numbers by "sim", one to a +44 number by "sim-b")."""

    def __init__(self, http: aiohttp.ClientSession, router: RouterProcess) -> None:
        self.http = http
        self.url = router.base_url + "/v1/messages"
        self.sent = 0
        self.tasks: list[asyncio.Task[None]] = []
        self._numbers = itertools.count(100)

    async def _run(self, sender: str, pause: float) -> None:
        while True:
            n = next(self._numbers) % 1000
            to = [f"+1415555{n:04d}", f"+1415556{n:04d}", f"+1415557{n:04d}"]
            to += [f"+1415558{n:04d}", f"+447700900{n:03d}"]
            body: dict[str, Any] = {"from": sender, "to": to, "text": "status page"}
            async with self.http.post(self.url, json=body, headers=KEY) as response:
                answer = await response.json()
                assert response.status == 202, answer
                assert not answer["rejected"], answer
            self.sent += len(to)
            await asyncio.sleep(pause)

    def start(self, sender: str = SENDER, pause: float = 0.1) -> None:
        self.tasks.append(asyncio.create_task(self._run(sender, pause)))

    async def stop(self) -> None:
        """Stops sending; raises what made a sender fail, if one did."""
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Page:
    """The status page in the browser, and the traffic beside it."""

    def __init__(self, page: Any, traffic: Traffic) -> None:
        self.page = page
        self.traffic = traffic

    async def until(self, predicate: str, what: str) -> None:
        """Until the JavaScript `predicate` holds on the page; fails naming
        `what` with the page's text after WAIT_MS, or at once with the
        error of a sender that failed meanwhile."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        waiting = asyncio.ensure_future(self.page.wait_for_function(predicate, timeout=WAIT_MS))
        await asyncio.wait([waiting, *self.traffic.tasks], return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError, PlaywrightTimeout):
                await waiting
            await self.traffic.stop()  # raises the sender's error
            pytest.fail(f"the traffic stopped while waiting for {what}")
        try:
            await waiting
        except PlaywrightTimeout:
            shown = await self.page.inner_text("body")
            pytest.fail(f"timed out waiting for {what}; the page shows:\n{shown}")

    async def text(self, selector: str) -> str:
        text: str = await self.page.locator(selector).first.inner_text()
        return text


def _rate(element_id: str) -> str:
    return f"parseFloat(document.getElementById('{element_id}').textContent)"


def _carrier(name: str, selector: str) -> str:
    return f"document.querySelector('tr[data-carrier=\"{name}\"] {selector}')"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_the_page_shows_every_carrier_and_a_rate_that_moves_with_traffic(
    start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    executable = chromium_path()
    from playwright.async_api import async_playwright

    admin_port, sim_b_port, dead_port = _free_port(), _free_port(), _free_port()
    router = await start_router(_config(admin_port, sim_b_port, dead_port))
    page_url = f"http://127.0.0.1:{router.admin_port}/status"
    traffic = Traffic(http, router)
    # Without the token, a browser is asked for it.
    async with http.get(page_url) as refused:
        assert refused.status == 401
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="smsrouter"'
    async with asyncio.timeout(BOUND), async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            context = await browser.new_context(
                http_credentials={"username": "ops", "password": OPS_TOKEN},
                viewport={"width": 1100, "height": 780},
            )
            page = Page(await context.new_page(), traffic)
            opened = await page.page.goto(page_url)
            assert opened is not None and opened.status == 200
            # Every carrier, the live ones bound, the dead one not, and its
            # failures among the latest errors.
            for name in ("sim", "sim-b"):
                await page.until(
                    f"() => {_carrier(name, '.badge')}?.textContent === '1/1'", f"{name} bound"
                )
            for name in CARRIERS:
                assert await page.text(f'tr[data-carrier="{name}"] .name') == name
            assert await page.text('tr[data-carrier="offline"] .badge') == "0/1"
            await page.until(
                "() => document.getElementById('errors').textContent"
                ".includes('carrier bind failed')",
                "the offline carrier's bind failures",
            )

            # Nothing sent yet: 0 once the page has two looks to compare.
            idle = "() => document.getElementById('rate-out').textContent === '0.00'"
            await page.until(idle, "an out rate of 0 before any traffic")
            traffic.start()
            await page.until(f"() => {_rate('rate-out')} > 0", "the out rate to rise")
            await page.until(
                "() => ['sim', 'sim-b'].every(name => parseFloat(document.querySelector("
                '`tr[data-carrier="${name}"] .submit-rate`).textContent) > 0)',
                "both live carriers' submit rates to rise",
            )
            await traffic.stop()
            assert traffic.sent > 0
            await page.until(idle, "the out rate to fall back to 0 once traffic stopped")
            assert await page.page.locator("#problem").is_hidden()
            if SCREENSHOT:
                await screenshot(page, Path(SCREENSHOT))
        finally:
            await traffic.stop()
            await browser.close()


async def screenshot(page: Page, path: Path) -> None:
    """The page under traffic again, with a long code's queue waiting at
    1 part per 4 s among the busiest sender queues."""
    page.traffic.start()
    page.traffic.start(sender="+14155550101", pause=0.5)
    await page.until(
        "() => parseInt(document.getElementById('queue-depth').textContent) >= 40",
        "a long code's queue",
    )
    await asyncio.sleep(6.0)  # every rate over a full window
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.page.screenshot(path=str(path), full_page=True)
    await page.traffic.stop()
