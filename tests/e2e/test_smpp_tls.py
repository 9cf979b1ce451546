"""SMPP over TLS end to end (CONTRACT §4 "TLS"): the daemon with a TLS
listener for partners and a `tls = true` carrier, a CA of the test's own
(tests/tls_certs.py), smpplib (third-party) as the partner over TLS and
the carrier simulator serving TLS only.

- a partner binds over TLS, submits, and gets its receipt back over TLS,
  through a carrier reached over TLS; a wrong password over TLS is answered
  as over TCP; a partner speaking plain SMPP to the TLS port never binds;
- a carrier whose certificate comes from another CA is not bound, the log
  says why, the daemon stays up and serves partners; SIGHUP re-reads the
  CA bundle (the carrier binds) and the listener's certificate (new
  connections get the new one, a bind made before stays).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp

from smsrouter.router.tls import client_context
from smsrouter.sims.carrier import CarrierSimulator
from tests.e2e.daemon import RouterProcess
from tests.tls_certs import ServerCert, TestCa

SENDER = "12345"
RECIPIENT = "14155550123"

CONFIG = """
[http]
listen = "127.0.0.1:0"
[smpp]
listen = "127.0.0.1:0"
tls_listen = "127.0.0.1:0"
tls_cert = "{tls_cert}"
tls_key = "{tls_key}"
[[carriers]]
name = "sim-tls"
port = {carrier_port}
system_id = "router"
password = "secret"
reconnect_delay = 0.2
reconnect_max_delay = 0.5
tls = true
tls_ca = "{tls_ca}"
[[routes]]
prefix = "1"
carriers = [ {{ name = "sim-tls", cost = "0.004" }} ]
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "partner"
credit = "1000"
smpp = {{ system_id = "partner", password = "pw-12345", max_binds = 4 }}
[[numbers]]
number = "{sender}"
account = "partner"
type = "short_code"
[shutdown]
drain_seconds = 1
"""


class TlsClient(smpplib.client.Client):  # type: ignore[misc]
    """smpplib over TLS. smpplib wraps its socket with `ssl_context` but
    without a server name, which a context that checks host names refuses;
    this gives it the host it connects to."""

    def _create_socket(self) -> ssl.SSLSocket:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(self.timeout)
        return self._ssl_context.wrap_socket(raw, server_hostname=self.host)


def partner(port: int, ca: Path | None) -> smpplib.client.Client:
    """A connected smpplib client: over TLS verified against `ca`, or plain."""
    if ca is None:
        client = smpplib.client.Client("127.0.0.1", port, timeout=10, allow_unknown_opt_params=True)
    else:
        client = TlsClient(
            "127.0.0.1", port, timeout=10, allow_unknown_opt_params=True,
            ssl_context=client_context(str(ca)),
        )  # fmt: skip
    client.connect()
    return client


def handshake(port: int, ca: Path) -> None:
    """A TLS handshake alone, the server's certificate verified against `ca`."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        client_context(str(ca)).wrap_socket(raw, server_hostname="127.0.0.1").close()


def enquire(client: smpplib.client.Client) -> int:
    """An enquire_link on the bind; its answer's command_status."""
    client.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=client))
    return int(client.read_pdu().status)


def submit_and_receipt(port: int, ca: Path) -> tuple[str, str, list]:
    """Bind over TLS, submit with a receipt requested, read the receipt."""
    client = partner(port, ca)
    sent: list = []
    received: list = []
    client.set_message_sent_handler(lambda pdu: sent.append(pdu))
    client.set_message_received_handler(lambda pdu: received.append(pdu))
    try:
        version = client._socket.version()
        client.bind_transceiver(system_id="partner", password="pw-12345")
        client.send_message(
            source_addr_ton=3, source_addr_npi=0, source_addr=SENDER,
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL, dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
            destination_addr=RECIPIENT, short_message=b"hello over TLS", registered_delivery=1,
        )  # fmt: skip
        while not sent or not received:
            client.read_once()
        assert sent[0].status == 0, sent[0].status
        return version, sent[0].message_id.decode(), received
    finally:
        client.unbind()
        client.disconnect()


def bind_status(port: int, ca: Path | None, password: str) -> int:
    """The command_status of a bind_transceiver (0: bound, then unbound)."""
    client = partner(port, ca)
    try:
        client.bind_transceiver(system_id="partner", password=password)
    except smpplib.exceptions.PDUError as refused:
        return int(refused.args[1])
    finally:
        if client.state != smpplib.consts.SMPP_CLIENT_STATE_OPEN:
            client.unbind()
        client.disconnect()
    return 0


def plain_bind_to_tls_port(port: int) -> str:
    """What a partner speaking plain SMPP to the TLS port gets."""
    client = smpplib.client.Client("127.0.0.1", port, timeout=10, allow_unknown_opt_params=True)
    client.connect()
    try:
        client.bind_transceiver(system_id="partner", password="pw-12345")
    except (smpplib.exceptions.ConnectionError, OSError) as exc:
        return type(exc).__name__
    finally:
        client.disconnect()
    return "bound"


@pytest.fixture
def pki(tmp_path: Path) -> TestCa:
    return TestCa(tmp_path, "test-ca")


@pytest.fixture
async def tls_carrier(pki: TestCa) -> AsyncIterator[CarrierSimulator]:
    cert = pki.issue("carrier", ("127.0.0.1",))
    sim = CarrierSimulator(
        system_id="router", password="secret", receipt_delay=0.05,
        tls_cert=str(cert.cert), tls_key=str(cert.key),
    )  # fmt: skip
    await sim.start()
    yield sim
    await sim.stop()


StartTlsRouter = Callable[[ServerCert, Path], Awaitable[tuple[RouterProcess, int]]]


@pytest.fixture
async def start_tls_router(
    tmp_path: Path, database_url: str, tls_carrier: CarrierSimulator
) -> AsyncIterator[StartTlsRouter]:
    """start(listener cert, carrier CA bundle) → (router, TLS port); killed
    by PID at the end, its output printed for a failed test."""
    started: list[RouterProcess] = []

    async def start(cert: ServerCert, carrier_ca: Path) -> tuple[RouterProcess, int]:
        config = tmp_path / "router.toml"
        config.write_text(
            CONFIG.format(
                tls_cert=cert.cert, tls_key=cert.key, carrier_port=tls_carrier.port,
                tls_ca=carrier_ca, sender=SENDER,
            )
        )  # fmt: skip
        router = RouterProcess(config, env={"SMSROUTER_DATABASE_URL": database_url})
        started.append(router)
        await router.start()
        return router, int(router.ready["smpp_tls"].rsplit(":", 1)[1])

    yield start
    for router in started:
        await router.kill()
        print(router.output())


async def test_a_partner_over_tls_gets_its_receipt_through_a_tls_carrier(
    pki: TestCa, tls_carrier: CarrierSimulator, start_tls_router: StartTlsRouter
) -> None:
    router, tls_port = await start_tls_router(pki.issue("smsc"), pki.ca)
    await router.wait_for_event("carrier bound")
    assert tls_port not in (0, router.smpp_port)

    version, message_id, receipts = await asyncio.to_thread(submit_and_receipt, tls_port, pki.ca)
    assert version in ("TLSv1.2", "TLSv1.3")
    assert len(receipts) == 1
    receipt = receipts[0]
    assert receipt.receipted_message_id.decode() == message_id
    assert b"stat:DELIVRD" in receipt.short_message
    # The simulator serves TLS only: the message went to it over TLS.
    assert [s.text for s in tls_carrier.submits] == ["hello over TLS"]

    # As over TCP: a wrong password is ESME_RINVPASWD (CONTRACT §4) ...
    assert await asyncio.to_thread(bind_status, tls_port, pki.ca, "wrong") == 0x0E
    assert await asyncio.to_thread(bind_status, router.smpp_port, None, "wrong") == 0x0E
    # ... and plain SMPP on the TLS port binds nothing.
    assert await asyncio.to_thread(plain_bind_to_tls_port, tls_port) != "bound"
    await router.wait_for_event("connection could not be set up")


async def test_a_carrier_of_another_ca_is_not_bound_and_sighup_reads_the_files_again(
    tmp_path: Path, pki: TestCa, start_tls_router: StartTlsRouter
) -> None:
    other_ca = TestCa(tmp_path, "other-ca")
    bundle = tmp_path / "carrier-ca.pem"
    bundle.write_bytes(other_ca.ca.read_bytes())  # not the CA of the carrier's certificate
    listener = pki.issue("smsc")
    router, tls_port = await start_tls_router(listener, bundle)

    refused = await router.wait_for_event("carrier TLS certificate not trusted")
    assert refused["carrier"] == "sim-tls" and refused["level"] == "error"
    assert "certificate" in refused["reason"]
    assert router.proc is not None and router.proc.returncode is None
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{router.base_url}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{router.base_url}/readyz") as resp:
            assert resp.status == 503  # no carrier bound
    # Partners still bind, over TLS (the listener's certificate is pki's).
    early = await asyncio.to_thread(partner, tls_port, pki.ca)
    try:
        await asyncio.to_thread(early.bind_transceiver, system_id="partner", password="pw-12345")

        # The operator fixes the carrier's CA bundle and renews the
        # listener's certificate (from another CA, in the same files).
        bundle.write_bytes(pki.ca.read_bytes())
        renewed = other_ca.issue("smsc-renewed")
        listener.cert.write_bytes(renewed.cert.read_bytes())
        listener.key.write_bytes(renewed.key.read_bytes())
        assert router.proc is not None
        router.proc.send_signal(signal.SIGHUP)
        await router.wait_for_event("config reloaded")
        await router.wait_for_event("carrier bound")

        # New connections get the new certificate ...
        assert await asyncio.to_thread(bind_status, tls_port, other_ca.ca, "pw-12345") == 0
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(handshake, tls_port, pki.ca)
        # ... and the bind made before keeps its session.
        assert await asyncio.to_thread(enquire, early) == 0
    finally:
        await asyncio.to_thread(early.disconnect)
