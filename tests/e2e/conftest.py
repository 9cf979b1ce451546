"""What the end-to-end tests share: a carrier simulator, a webhook receiver,
and a router subprocess started on a config and bound to its carrier."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from sims.carrier import CarrierSimulator
from sims.webhook import WebhookReceiver
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


StartRouter = Callable[[str], Coroutine[Any, Any, RouterProcess]]


@pytest.fixture
async def start_router(tmp_path: Path, database_url: str) -> AsyncIterator[StartRouter]:
    """start_router(config_text): the router on a fresh database, bound to
    its carrier; killed (by PID) when the test ends, its output printed so
    that pytest shows it for a failed test."""
    started: list[RouterProcess] = []

    async def start(config_text: str) -> RouterProcess:
        config = tmp_path / f"router-{len(started)}.toml"
        config.write_text(config_text)
        process = RouterProcess(config, env={"SMSROUTER_DATABASE_URL": database_url})
        started.append(process)
        await process.start()
        await process.wait_for_event("carrier bound")
        return process

    yield start
    for process in started:
        await process.kill()
        print(process.output())
