"""`smsrouter run --workers N`: the supervisor's decisions (smsrouter/workers.py)
and the shared ports they rest on."""

from __future__ import annotations

import errno
import signal
import socket
from pathlib import Path

import pytest

from smsrouter.cli import parser
from smsrouter.config import parse_config
from smsrouter.connectors.acceptor import REUSE_PORT_ENV, listening_sockets
from smsrouter.workers import (
    RESTART,
    START_FAILED,
    STOP_MARGIN_SECONDS,
    STOPPED,
    WORKER_ENV,
    RestartBackoff,
    WorkerRole,
    after_exit,
    exit_status,
    format_listen,
    reserve_port,
    shared_listeners,
    stop_deadline,
    worker_instance_id,
    worker_role,
)
from tests.tls_certs import TestCa


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_worker_dying_young_waits_twice_as_long_each_time_up_to_the_cap() -> None:
    clock = FakeClock()
    backoff = RestartBackoff(clock, first_delay=0.5, max_delay=8.0, stable_seconds=30.0)
    delays = []
    for _ in range(7):
        backoff.started()
        clock.now += 1.0  # dies a second after each start
        delays.append(backoff.died())
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_worker_that_lived_long_enough_is_restarted_after_the_first_delay_again() -> None:
    clock = FakeClock()
    backoff = RestartBackoff(clock, first_delay=0.5, max_delay=8.0, stable_seconds=30.0)
    for _ in range(4):
        backoff.started()
        clock.now += 1.0
        backoff.died()
    backoff.started()
    clock.now += 30.0  # a stable life: the crash loop is over
    assert backoff.died() == 0.5
    backoff.started()
    clock.now += 29.9  # young again: the doubling resumes from there
    assert backoff.died() == 1.0


def test_the_first_death_of_a_worker_waits_the_first_delay() -> None:
    clock = FakeClock()
    backoff = RestartBackoff(clock)
    backoff.started()
    clock.now += 0.1
    assert backoff.died() == backoff.first_delay


def test_what_follows_a_workers_end() -> None:
    clock = FakeClock()
    backoff = RestartBackoff(clock)
    backoff.started()
    clock.now += 1.0

    def after(*, stopping: bool = False, retiring: bool = False, announced: bool = True):
        return after_exit(
            stopping=stopping, retiring=retiring, announced=announced, backoff=backoff
        )

    # The parent is stopping: whatever else holds, nothing more.
    assert after(stopping=True, retiring=True, announced=False) == (STOPPED, 0.0)
    # Before the router was ever ready: the start failed, as a lone daemon's.
    assert after(announced=False) == (START_FAILED, 0.0)
    # Stopped by the parent for a new database URL: again at once, no backoff counted.
    assert after(retiring=True, announced=False) == (RESTART, 0.0)
    assert backoff.quick_deaths == 0
    # Died while serving: again after the backoff's delay, which then grows.
    assert after() == (RESTART, 0.5)
    assert after() == (RESTART, 1.0)


def test_each_worker_has_a_stable_instance_id_from_the_configured_one_or_the_host() -> None:
    assert worker_instance_id("", "edge-1", 0) == "edge-1-w0"
    assert worker_instance_id("router-eu", "edge-1", 3) == "router-eu-w3"


def test_the_role_a_parent_gives_its_worker_survives_the_environment() -> None:
    role = WorkerRole(index=1, parent_pid=4321, ready_fd=7)
    assert worker_role({WORKER_ENV: role.encode()}) == role
    assert worker_role({}) is None
    with pytest.raises(ValueError):
        WorkerRole.decode("1:4321")
    with pytest.raises(ValueError):
        WorkerRole.decode("one:4321:7")


def test_an_exit_status_names_the_signal_that_ended_the_worker() -> None:
    assert exit_status(-signal.SIGKILL) == {"exit_status": -9, "signal": "SIGKILL"}
    assert exit_status(1) == {"exit_status": 1}
    assert exit_status(0) == {"exit_status": 0}


def test_workers_get_the_drain_and_a_margin_before_sigkill() -> None:
    assert stop_deadline(10.0) == 10.0 + STOP_MARGIN_SECONDS


def test_the_shared_listeners_are_those_a_worker_opens() -> None:
    bare = parse_config({"http": {"listen": "127.0.0.1:8080"}}, environ={})
    assert shared_listeners(bare) == [
        ("SMSROUTER_HTTP_LISTEN", "127.0.0.1:8080"),
        ("SMSROUTER_SMPP_LISTEN", "127.0.0.1:2775"),
    ]
    # The operator API listens only with a token that could use it.
    admin = parse_config(
        {"admin": {"listen": "127.0.0.1:9082", "tokens": [{"name": "ops", "token": "x" * 32}]}},
        environ={},
    )
    assert ("SMSROUTER_ADMIN_LISTEN", "127.0.0.1:9082") in shared_listeners(admin)


def test_the_smpp_tls_listener_is_shared_once_it_has_a_certificate(tmp_path: Path) -> None:
    server = TestCa(tmp_path).issue("smsc")
    tls = parse_config(
        {"smpp": {"tls_listen": "127.0.0.1:3551", "tls_cert": str(server.cert),
                  "tls_key": str(server.key)}},
        environ={},
    )  # fmt: skip
    assert ("SMSROUTER_SMPP_TLS_LISTEN", "127.0.0.1:3551") in shared_listeners(tls)
    # Its address has a default, but without a certificate nothing listens there.
    bare = parse_config({}, environ={})
    assert all(env != "SMSROUTER_SMPP_TLS_LISTEN" for env, _ in shared_listeners(bare))


def test_a_listen_address_is_written_back_as_the_config_writes_it() -> None:
    assert format_listen("127.0.0.1", 8080) == "127.0.0.1:8080"
    assert format_listen("::1", 8080) == "[::1]:8080"


async def test_a_reserved_port_takes_workers_sharing_it_and_refuses_anyone_else() -> None:
    listen, held = reserve_port("127.0.0.1:0")
    try:
        host, _, port_text = listen.rpartition(":")
        port = int(port_text)
        assert host == "127.0.0.1" and port > 0
        # Two workers' listeners on the parent's port, as SMSROUTER_REUSE_PORT=1 asks.
        first = await listening_sockets(host, port, backlog=8, reuse_port=True)
        second = await listening_sockets(host, port, backlog=8, reuse_port=True)
        try:
            assert first[0].getsockname()[1] == second[0].getsockname()[1] == port
            # A program that does not share the port cannot have it.
            with pytest.raises(OSError) as refused:
                await listening_sockets(host, port, backlog=8, reuse_port=False)
            assert refused.value.errno == errno.EADDRINUSE
        finally:
            for sock in (*first, *second):
                sock.close()
        # The parent's socket alone takes no connection: it never listens.
        with socket.socket() as client, pytest.raises(ConnectionRefusedError):
            client.connect((host, port))
    finally:
        held.close()


async def test_listeners_share_their_port_when_the_environment_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(REUSE_PORT_ENV, "1")
    first = await listening_sockets("127.0.0.1", 0, backlog=8)
    try:
        port = first[0].getsockname()[1]
        second = await listening_sockets("127.0.0.1", port, backlog=8)
        second[0].close()
    finally:
        first[0].close()


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_run_refuses_a_worker_count_below_one(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["run", "--workers", value])
    assert exited.value.code == 2
    assert "argument --workers" in capsys.readouterr().err


def test_run_has_one_worker_by_default() -> None:
    assert parser().parse_args(["run"]).workers == 1
