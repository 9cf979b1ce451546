"""CONTRACT §11 against the real router: one account's dead webhook receiver
does not delay another account's callbacks, and private callback addresses
are refused at the API in every spelling.

The dead receiver is a TCP server in this test that accepts connections
and reads requests but never answers, as in the contract's scenario, with
`[webhooks] timeout` at its default 10 s: each of its callbacks holds a
dispatcher slot for the whole 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from smsrouter.sims.carrier import CarrierSimulator
from smsrouter.sims.webhook import WebhookReceiver
from tests.e2e.conftest import StartRouter

NOISY_KEY = {"Authorization": "Bearer noisy-key"}
QUIET_KEY = {"Authorization": "Bearer quiet-key"}
NOISY_SENDER = "12345"
QUIET_SENDER = "+14155550101"

ISOLATION_CONFIG = """
[[prices]]
prefix = "1"
price = "0.001"
[[accounts]]
id = "noisy"
api_keys = ["noisy-key"]
credit = "100000"
callback_url = "{dead_url}"
[[accounts]]
id = "quiet"
api_keys = ["quiet-key"]
credit = "100000"
webhook_secret = "hook-secret"
callback_url = "{webhook_url}"
[[numbers]]
number = "{noisy_sender}"
account = "noisy"
type = "short_code"
rate = 250
[[numbers]]
number = "{quiet_sender}"
account = "quiet"
type = "short_code"
[shutdown]
drain_seconds = 1
"""

# The noisy account: batches of NOISY_BATCH every NOISY_EVERY seconds for
# NOISY_SECONDS (150 messages a second, 1,500 in all).
NOISY_BATCH = 15
NOISY_EVERY = 0.1
NOISY_SECONDS = 10.0
# The quiet account: one message every QUIET_EVERY seconds.
QUIET_EVERY = 0.25
BASELINE_MESSAGES = 16
# CONTRACT §11: "another account's callbacks keep a p99 within 2 s of normal".
P99_MARGIN = 2.0


@dataclass
class DeadReceiver:
    """Accepts connections and reads requests; never answers."""

    accepted: int = 0
    bytes_read: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                self.bytes_read += len(chunk)

    def close(self) -> None:
        for w in self._writers:
            w.close()


@pytest.fixture
async def dead_receiver() -> AsyncIterator[tuple[str, DeadReceiver]]:
    dead = DeadReceiver()
    server = await asyncio.start_server(dead.hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/dlr", dead
    finally:
        dead.close()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _send(http: aiohttp.ClientSession, url: str, sender: str, to: list[str]) -> list[str]:
    body = {"from": sender, "to": to if len(to) > 1 else to[0], "text": "isolation"}
    async with http.post(url, json=body) as resp:
        assert resp.status == 202, await resp.text()
        reply = await resp.json()
    assert reply["rejected"] == []
    return [m["id"] for m in reply["messages"]]


async def _quiet_trickle(
    http: aiohttp.ClientSession, url: str, count: int, accepted: dict[str, float]
) -> None:
    """`count` messages, one every QUIET_EVERY s; notes when each was accepted."""
    for i in range(count):
        started = time.monotonic()
        (message_id,) = await _send(http, url, QUIET_SENDER, [f"+1415555{1000 + i:04d}"])
        accepted[message_id] = time.monotonic()
        await asyncio.sleep(max(0.0, QUIET_EVERY - (time.monotonic() - started)))


async def _noisy_load(http: aiohttp.ClientSession, url: str) -> int:
    sent = 0
    batches = int(NOISY_SECONDS / NOISY_EVERY)
    for b in range(batches):
        started = time.monotonic()
        to = [f"+1202555{(b * NOISY_BATCH + i) % 10000:04d}" for i in range(NOISY_BATCH)]
        sent += len(await _send(http, url, NOISY_SENDER, to))
        await asyncio.sleep(max(0.0, NOISY_EVERY - (time.monotonic() - started)))
    return sent


async def _latencies(
    webhook: WebhookReceiver, accepted: dict[str, float], timeout: float
) -> list[float]:
    """Accepted → callback received, for each message in `accepted`, once
    all of their callbacks have arrived."""
    async with asyncio.timeout(timeout):
        while True:
            arrived = {cb.body["id"]: cb.at for cb in webhook.callbacks}
            if all(message_id in arrived for message_id in accepted):
                return [arrived[m] - at for m, at in accepted.items()]
            await asyncio.sleep(0.05)


async def test_a_dead_receiver_does_not_delay_another_accounts_callbacks(
    start_router: StartRouter,
    carrier: CarrierSimulator,
    webhook: WebhookReceiver,
    dead_receiver: tuple[str, DeadReceiver],
) -> None:
    dead_url, dead = dead_receiver
    async with asyncio.timeout(75):
        router = await start_router(
            ISOLATION_CONFIG.format(
                dead_url=dead_url,
                webhook_url=webhook.url,
                noisy_sender=NOISY_SENDER,
                quiet_sender=QUIET_SENDER,
            )
        )
        url = router.base_url + "/v1/messages"
        async with (
            aiohttp.ClientSession(headers=NOISY_KEY) as noisy,
            aiohttp.ClientSession(headers=QUIET_KEY) as quiet,
        ):
            # Normal: the quiet account alone.
            baseline: dict[str, float] = {}
            await _quiet_trickle(quiet, url, BASELINE_MESSAGES, baseline)
            normal = await _latencies(webhook, baseline, timeout=10)

            # The same trickle while the noisy account's callbacks all hang.
            loaded: dict[str, float] = {}
            quiet_count = int(NOISY_SECONDS / QUIET_EVERY)
            sent, _ = await asyncio.gather(
                _noisy_load(noisy, url), _quiet_trickle(quiet, url, quiet_count, loaded)
            )
            under_load = await _latencies(webhook, loaded, timeout=15)
        # The noisy account's first callbacks time out 10 s after they went:
        # it is backed off, and its failures are logged once per interval.
        backing_off = await router.wait_for_event("account callbacks backing off", timeout=15)

    # The scenario happened: the noisy account's messages ended and their
    # callbacks went to the dead receiver and hung there.
    assert sent == NOISY_BATCH * int(NOISY_SECONDS / NOISY_EVERY)
    assert len(carrier.submits) >= sent // 2
    assert dead.accepted >= 1 and dead.bytes_read > 0
    assert all(cb.signature_ok for cb in webhook.callbacks)
    assert len(under_load) == quiet_count
    assert backing_off["account"] == "noisy"
    retry_lines = [
        line
        for line in router.lines
        if line.get("event") == "notification failed, will retry" and line["account"] == "noisy"
    ]
    assert 1 <= len(retry_lines) <= 2, retry_lines
    print(
        f"quiet callbacks: normal p99 {_p99(normal):.3f} s, under load p99 {_p99(under_load):.3f} s"
    )
    assert _p99(under_load) <= _p99(normal) + P99_MARGIN, (normal, under_load)


PRIVATE_CONFIG = """
[[prices]]
prefix = "1"
price = "0.001"
[[accounts]]
id = "app"
credit = "1000000"
api_keys = ["app-key"]
[[numbers]]
number = "{sender}"
account = "app"
type = "short_code"
[webhooks]
deny_private_networks = true
"""

PRIVATE_CALLBACKS = [
    "http://2130706433/dlr",
    "http://127.1/dlr",
    "http://0x7f.1/dlr",
    "http://0177.0.0.1/dlr",
    "http://0x7f000001/dlr",
    "http://localhost./dlr",
    "http://LOCALHOST/dlr",
    "http://foo.localhost/dlr",
    "http://[::1]/dlr",
    "http://[0:0:0:0:0:0:0:1]/dlr",
    "http://[::ffff:127.0.0.1]/dlr",
    "http://[::ffff:7f00:1]/dlr",
    "http://[::127.0.0.1]/dlr",
    "http://0.0.0.0/dlr",
    "http://[::]/dlr",
    "http://10.1.2.3/dlr",
    "http://172.20.0.1/dlr",
    "http://192.168.1.1/dlr",
    "http://169.254.169.254/latest",
    "http://100.64.0.1/dlr",
    "http://[fc00::1]/dlr",
    "http://[fe80::1]/dlr",
]


async def test_every_spelling_of_a_private_callback_is_refused_at_the_api(
    start_router: StartRouter,
) -> None:
    async with asyncio.timeout(45):
        router = await start_router(PRIVATE_CONFIG.format(sender=QUIET_SENDER))
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer app-key"}) as http:
            for callback_url in PRIVATE_CALLBACKS:
                body = {
                    "from": QUIET_SENDER,
                    "to": "+14155550123",
                    "text": "hi",
                    "callback_url": callback_url,
                }
                async with http.post(router.base_url + "/v1/messages", json=body) as resp:
                    problem = await resp.json(content_type=None)
                    assert resp.status == 422, (callback_url, problem)
                assert {(e["field"], e["code"]) for e in problem["errors"]} == {
                    ("callback_url", "private_network")
                }, (callback_url, problem)
            # A public address is taken.
            body["callback_url"] = "https://example.com/dlr"
            async with http.post(router.base_url + "/v1/messages", json=body) as resp:
                assert resp.status == 202, await resp.text()
