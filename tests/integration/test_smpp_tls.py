"""SMPP over TLS (CONTRACT §4 "TLS") on loopback, with a CA of the test's
own (tests/tls_certs.py):

- carrier side: `CarrierBinds` with `tls = true` bind to the carrier
  simulator serving TLS, submit and get receipts; a certificate from
  another CA, or one that does not name the host, is refused with a log
  line saying why, and a CA bundle read again (SIGHUP) mends it;
- partner side: the listener's `Acceptor` with a TLS context caps the
  handshakes under way per source address, drops a handshake that does not
  finish, and serves new connections with a replaced context.

Every test runs on asyncio's loop and on uvloop (the daemon's), whose TLS
transports are separate implementations. Every wait is bounded; none is
expected to come close.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import structlog
import uvloop

from smsrouter.connectors.acceptor import Acceptor, listening_sockets
from smsrouter.connectors.carriers import CarrierBinds
from smsrouter.connectors.smpp import SubmitSm
from smsrouter.router.config import CarrierConfig
from smsrouter.router.store.operations import CarrierReceipt
from smsrouter.router.tls import client_context, server_context
from smsrouter.sims.carrier import CarrierSimulator
from tests.tls_certs import TestCa
from tests.tools import bounded, eventually

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=list(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    """run(scenario()): the scenario in a fresh loop of each kind."""

    def run_on(scenario: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            runner.run(bounded(scenario, timeout=60))

    return run_on


def submit_sm(to: str) -> SubmitSm:
    return SubmitSm(
        source_addr_ton=1, source_addr_npi=1, source_addr="14155550101",
        dest_addr_ton=1, dest_addr_npi=1, destination_addr=to,
        registered_delivery=1, short_message=b"over tls",
    )  # fmt: skip


class TlsCarrierClient:
    """CarrierBinds with `tls = true` towards a simulator."""

    def __init__(self, port: int, ca: Path, host: str = "127.0.0.1") -> None:
        self.receipts: list[CarrierReceipt] = []
        self.binds = CarrierBinds(
            CarrierConfig(
                name="sim", host=host, port=port, system_id="router", password="secret",
                window=8, response_timeout=5.0, reconnect_delay=0.05, reconnect_max_delay=0.2,
                tls=True, tls_ca=str(ca),
            )
        )  # fmt: skip

    def carrier_up(self, carrier: str) -> None:
        pass

    def receipt(self, receipt: CarrierReceipt) -> asyncio.Future[None]:
        self.receipts.append(receipt)
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stored.set_result(None)
        return stored


async def tls_simulator(ca: TestCa, name: str, hosts: tuple[str, ...]) -> CarrierSimulator:
    cert = ca.issue(name, hosts)
    sim = CarrierSimulator(
        system_id="router", password="secret", receipt_delay=0.02,
        tls_cert=str(cert.cert), tls_key=str(cert.key),
    )  # fmt: skip
    await sim.start()
    return sim


# ------------------------------------------------------------------ carriers


def test_a_tls_carrier_binds_takes_submits_and_sends_receipts(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    async def scenario() -> None:
        ca = TestCa(tmp_path)
        sim = await tls_simulator(ca, "carrier", ("127.0.0.1",))
        client = TlsCarrierClient(sim.port, ca.ca)
        try:
            client.binds.start(client)
            await eventually(lambda: client.binds.is_up, "the TLS bind")
            link = client.binds.senders[0]
            transport = link._transport
            assert transport is not None
            assert transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
            assert await bounded(client.binds.submit(submit_sm("14155550123"))) == "1"
            assert sim.submits[0].text == "over tls"
            await eventually(lambda: len(client.receipts) == 1, "the receipt over TLS")
        finally:
            await bounded(client.binds.stop())
            await bounded(sim.stop())

    run(scenario())


def test_a_certificate_of_another_ca_is_refused_until_the_ca_is_read_again(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    async def scenario() -> None:
        theirs = TestCa(tmp_path, "carrier-ca")
        ours = TestCa(tmp_path, "some-other-ca")
        sim = await tls_simulator(theirs, "carrier", ("127.0.0.1",))
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(ours.ca.read_bytes())
        client = TlsCarrierClient(sim.port, bundle)
        try:
            with structlog.testing.capture_logs() as logs:
                client.binds.start(client)

                def refused() -> list[dict[str, Any]]:
                    return [e for e in logs if e["event"] == "carrier TLS certificate not trusted"]

                await eventually(lambda: len(refused()) >= 2, "two refused handshakes")
            assert not client.binds.is_up
            assert sim.submits == []
            line = refused()[0]
            assert line["log_level"] == "error"
            assert line["carrier"] == "sim" and line["host"] == "127.0.0.1"
            assert "certificate" in line["reason"]

            # The operator puts the right CA in the bundle and sends SIGHUP.
            bundle.write_bytes(theirs.ca.read_bytes())
            client.binds.renew_tls()
            await eventually(lambda: client.binds.is_up, "the bind with the right CA")
        finally:
            await bounded(client.binds.stop())
            await bounded(sim.stop())

    run(scenario())


def test_a_certificate_that_does_not_name_the_host_is_refused(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    async def scenario() -> None:
        ca = TestCa(tmp_path)
        sim = await tls_simulator(ca, "elsewhere", ("smsc.example.net",))
        client = TlsCarrierClient(sim.port, ca.ca)
        try:
            with structlog.testing.capture_logs() as logs:
                client.binds.start(client)
                await eventually(
                    lambda: any(e["event"] == "carrier TLS certificate not trusted" for e in logs),
                    "the refused handshake",
                )
            line = next(e for e in logs if e["event"] == "carrier TLS certificate not trusted")
            assert "127.0.0.1" in line["reason"]  # "... not valid for '127.0.0.1'"
            assert not client.binds.is_up
        finally:
            await bounded(client.binds.stop())
            await bounded(sim.stop())

    run(scenario())


# ------------------------------------------------------------------ the listener


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


class TlsListener:
    """An Acceptor serving Echo over TLS on 127.0.0.1."""

    def __init__(self, context: ssl.SSLContext, **options: Any) -> None:
        self.context = context
        self.options = options

    async def __aenter__(self) -> Acceptor:
        (sock,) = await listening_sockets("127.0.0.1", 0, backlog=64)
        self.acceptor = Acceptor(
            sock, Echo, loop=asyncio.get_running_loop(), name="test-tls", tls=self.context,
            **self.options,
        )  # fmt: skip
        self.acceptor.start()
        return self.acceptor

    async def __aexit__(self, *exc_info: object) -> None:
        self.acceptor.close()
        await bounded(self.acceptor.wait_closed())


async def echo_over_tls(port: int, ca: Path) -> bytes:
    """One TLS round trip; the server certificate's verified chain's CA name."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(str(ca)), server_hostname="127.0.0.1"
    )
    try:
        writer.write(b"ping")
        return await bounded(reader.readexactly(4))
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def raw_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection that never starts its handshake."""
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_by_the_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await bounded(reader.read(1)) == b""
    except ConnectionResetError:
        return True


def test_tls_connections_are_served_and_handshakes_per_address_are_capped(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    async def scenario() -> None:
        ca = TestCa(tmp_path)
        cert = ca.issue("smsc")
        context = server_context(str(cert.cert), str(cert.key))
        async with TlsListener(context, max_handshakes_per_ip=2) as acceptor:
            assert await echo_over_tls(acceptor.port, ca.ca) == b"ping"
            silent = [await raw_connection(acceptor.port) for _ in range(2)]
            # Both are accepted and wait for their ClientHello ...
            await eventually(lambda: len(acceptor._handshakes) == 2, "two pending handshakes")
            # ... and a third from the same address is closed at once.
            over, over_writer = await raw_connection(acceptor.port)
            assert await closed_by_the_server(over)
            over_writer.close()
            # The places come back when the silent ones go.
            for _, writer in silent:
                writer.close()
            await eventually(lambda: not acceptor._handshakes, "the silent ones gone")
            assert await echo_over_tls(acceptor.port, ca.ca) == b"ping"

    run(scenario())


def test_a_handshake_that_does_not_finish_is_dropped(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    async def scenario() -> None:
        ca = TestCa(tmp_path)
        cert = ca.issue("smsc")
        context = server_context(str(cert.cert), str(cert.key))
        async with TlsListener(context, handshake_timeout=0.3) as acceptor:
            reader, writer = await raw_connection(acceptor.port)
            assert await closed_by_the_server(reader)
            writer.close()
            await eventually(lambda: not acceptor._handshakes, "the handshake task ended")

    run(scenario())


def test_a_new_context_serves_new_connections(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    async def scenario() -> None:
        old_ca, new_ca = TestCa(tmp_path, "old-ca"), TestCa(tmp_path, "new-ca")
        old, new = old_ca.issue("old"), new_ca.issue("new")
        async with TlsListener(server_context(str(old.cert), str(old.key))) as acceptor:
            assert await echo_over_tls(acceptor.port, old_ca.ca) == b"ping"
            acceptor.tls = server_context(str(new.cert), str(new.key))
            assert await echo_over_tls(acceptor.port, new_ca.ca) == b"ping"
            with pytest.raises(ssl.SSLCertVerificationError):
                await echo_over_tls(acceptor.port, old_ca.ca)

    run(scenario())
