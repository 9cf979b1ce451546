"""What the end-to-end tests share: a carrier simulator, a webhook receiver,
and a router subprocess started on a config and bound to its carrier."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, Protocol

import pytest

from bench import compiled
from smsrouter.sims.carrier import CarrierSimulator
from smsrouter.sims.webhook import WebhookReceiver
from tests.e2e.daemon import RouterProcess

# The carrier credentials every e2e config uses for its [[carriers]] entry.
CARRIER_SYSTEM_ID = "router"
CARRIER_PASSWORD = "secret"
WEBHOOK_SECRET = "hook-secret"


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSimulator]:
    sim = CarrierSimulator(
        system_id=CARRIER_SYSTEM_ID, password=CARRIER_PASSWORD, receipt_delay=0.05
    )
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret=WEBHOOK_SECRET)
    await receiver.start()
    yield receiver
    await receiver.stop()


# Two accounts, each with a key and a short code: a's "12345", b's "54321".
SENDER = "12345"
KEY_A = {"Authorization": "Bearer key-a"}
KEY_B = {"Authorization": "Bearer key-b"}
TWO_ACCOUNTS = f"""
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "a"
api_keys = ["key-a"]
credit = "1000"
[[accounts]]
id = "b"
api_keys = ["key-b"]
credit = "1000"
[[numbers]]
number = "{SENDER}"
account = "a"
type = "short_code"
[[numbers]]
number = "54321"
account = "b"
type = "short_code"
[shutdown]
drain_seconds = 1
"""


# What every start_router config has: ports chosen by the OS, and the
# `carrier` fixture's simulator as carrier "sim" for every +1 number.
BASE_CONFIG = """
[http]
listen = "127.0.0.1:0"
[smpp]
listen = "127.0.0.1:0"
[[carriers]]
name = "sim"
port = {carrier_port}
system_id = "{system_id}"
password = "{password}"
window = 16
reconnect_delay = 0.2
[[routes]]
prefix = "1"
carriers = [ {{ name = "sim", cost = "0.004" }} ]
"""


class StartRouter(Protocol):
    """start_router(config_text, env=...): `env` adds to (or overrides) the
    router's environment, e.g. SMSROUTER_DATABASE_URL for a database of the
    test's own or SMSROUTER_HTTP_HEADER_TIMEOUT."""

    def __call__(
        self, config_text: str, *, env: dict[str, str] | None = None
    ) -> Coroutine[Any, Any, RouterProcess]: ...


@pytest.fixture(scope="session")
def compiled_site() -> Path:
    """Where the compiled build of this checkout is unpacked (built once)."""
    return compiled.compiled_site()


@pytest.fixture
def router_site() -> Path | None:
    """Where start_router's router imports its packages from: None for this
    checkout as installed. A module that overrides this fixture with
    `each_build` runs its tests on the compiled build too."""
    return None


@pytest.fixture(params=["interpreted", "compiled"])
def each_build(request: pytest.FixtureRequest) -> Path | None:
    if request.param == "interpreted":
        return None
    site: Path = request.getfixturevalue("compiled_site")
    return site


@pytest.fixture
async def start_router(
    tmp_path: Path, database_url: str, carrier: CarrierSimulator, router_site: Path | None
) -> AsyncIterator[StartRouter]:
    """start_router(config): the router on a fresh database with BASE_CONFIG
    plus the test's own sections (prices, accounts, numbers ...), bound to
    its carrier; killed (by PID) when the test ends, its output printed so
    that pytest shows it for a failed test. With a `router_site`, the router
    runs from there, away from the checkout, and must say it is compiled."""
    started: list[RouterProcess] = []
    base_env = {"SMSROUTER_DATABASE_URL": database_url}
    if router_site is not None:
        base_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(router_site), os.environ.get("PYTHONPATH", "")) if p
        )

    async def start(config_text: str, *, env: dict[str, str] | None = None) -> RouterProcess:
        config = tmp_path / f"router-{len(started)}.toml"
        base = BASE_CONFIG.format(
            carrier_port=carrier.port, system_id=CARRIER_SYSTEM_ID, password=CARRIER_PASSWORD
        )
        config.write_text(base + config_text)
        process = RouterProcess(
            config, env={**base_env, **(env or {})}, cwd=None if router_site is None else tmp_path
        )
        started.append(process)
        await process.start()
        if router_site is not None:
            assert process.ready.get("build") == "compiled", process.ready
        await process.wait_for_event("carrier bound")
        return process

    yield start
    for process in started:
        await process.kill()
        print(process.output())
