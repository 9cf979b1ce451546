"""The router's own lifecycle (smsrouter.daemon.Router, in this process, on a
real PostgreSQL): every part registers its stop as it starts, and both a
stop and a start that fails half-way unwind them all, in reverse, awaiting
every task they started. A reload reaches every part through apply_config.
"""

from __future__ import annotations

import asyncio
import socket
import tomllib
from collections.abc import Iterator
from decimal import Decimal

import pytest

from smsrouter.daemon import Router
from smsrouter.router.admission import Draft, Refusal
from smsrouter.router.config import Config, parse_config
from smsrouter.router.messages import Message, utcnow
from tests.tools import bounded

CONFIG = """
[http]
listen = "127.0.0.1:{http_port}"
[smpp]
listen = "127.0.0.1:{smpp_port}"
[database]
url = "{dsn}"
[shutdown]
drain_seconds = 1
[[simulators]]
name = "sim"
port = {sim_port}
system_id = "router"
password = "secret"
[[carriers]]
name = "sim"
port = {sim_port}
system_id = "router"
password = "secret"
reconnect_delay = 0.2
[[routes]]
prefix = "1"
carriers = [ {{ name = "sim", cost = "0.004" }} ]
[[prices]]
prefix = "{price_prefix}"
price = "0.01"
[[accounts]]
id = "p"
credit = "1000000"
api_keys = ["p-key"]
smpp = {{ system_id = "p", password = "p-pass", max_binds = 8 }}
[[numbers]]
number = "{sender}"
account = "p"
type = "short_code"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(
    dsn: str, *, http_port: int = 0, sender: str = "12345", price_prefix: str = "1"
) -> tuple[Config, dict[str, int]]:
    ports = {"http_port": http_port, "smpp_port": _free_port(), "sim_port": _free_port()}
    text = CONFIG.format(dsn=dsn, sender=sender, price_prefix=price_prefix, **ports)
    return parse_config(tomllib.loads(text), environ={}), ports


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        yield squatter.getsockname()[1]


async def test_a_start_that_fails_half_way_stops_everything_it_started(
    database_url: str, taken_port: int
) -> None:
    before = _other_tasks()
    # The HTTP listener starts last: by then the pool, the writers, the
    # simulator, the carrier binds, the engine, the dispatcher, the chores
    # and the SMPP listener are all running.
    config, ports = _config(database_url, http_port=taken_port)
    router = Router(config)
    with pytest.raises(OSError):
        await bounded(router.start(), 30)
    assert router.smpp_port == ports["smpp_port"]  # it got that far
    assert router.pool.is_closing()
    assert _bindable(ports["smpp_port"]) and _bindable(ports["sim_port"])
    left = _other_tasks() - before
    assert not left, sorted(t.get_name() for t in left)


async def test_a_stop_ends_every_task_the_router_started(database_url: str) -> None:
    before = _other_tasks()
    config, ports = _config(database_url)
    router = Router(config)
    await bounded(router.start(), 30)
    try:
        assert router.http_port and router.smpp_port == ports["smpp_port"]
        assert _other_tasks() - before  # the engine, the writers, the binds ...
    finally:
        await bounded(router.stop(), 30)
    assert router.pool.is_closing()
    assert _bindable(router.http_port) and _bindable(ports["smpp_port"])
    left = _other_tasks() - before
    assert not left, sorted(t.get_name() for t in left)


async def test_a_reload_reaches_both_ingresses_and_the_engine(database_url: str) -> None:
    config, _ = _config(database_url, sender="12345")
    router = Router(config)
    await bounded(router.start(), 30)
    try:
        account = router.accounts.get("p")
        assert account is not None

        def admit(sender: str) -> Message | Refusal:
            draft = Draft(
                ingress="smpp", sender=sender, to="+14155550100", body="x",
                encoding="gsm7", data_coding=0, parts=1,
            )  # fmt: skip
            # What the SMPP server asks is what the HTTP API asks.
            assert router.smsc._admission is router.api.services.admission
            return router.smsc._admission.admit(account, draft, utcnow())

        assert isinstance(admit("12345"), Message)
        reloaded, _ = _config(database_url, sender="54321", price_prefix="14")
        await router.apply_config(reloaded)
        refused = admit("12345")
        assert isinstance(refused, Refusal) and refused.code == "unknown_sender"
        admitted = admit("54321")
        assert isinstance(admitted, Message) and admitted.price == Decimal("0.01")
        assert router.engine.routes is router.admission.routes
        assert router.accounts.by_system_id("p") is router.accounts.get("p")
    finally:
        await bounded(router.stop(), 30)
