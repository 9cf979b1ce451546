"""Abusive SMPP clients against the router subprocess (CONTRACT §11
"Abusive clients", "Accounts are isolated"): too many connections from one
address, password guessing, a partner that pipelines submit_sm without
reading its answers, and a receiving bind that stops reading.

The abusive clients are raw sockets speaking through the project's codec,
so that they can do what no well-behaved library does (never read).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smsrouter.connectors.smpp import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CommandStatus,
    DeliverSm,
    EnquireLink,
    SubmitSm,
    SubmitSmResp,
    Tag,
    encode,
    get_tlv,
)
from smsrouter.sims.carrier import CarrierSimulator
from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess
from tests.raw_esme import RawEsme

SENDER = "12345"
SENDER_B = "12346"

CONFIG = """
[rates]
short_code = 1000
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "a"
smpp = {{ system_id = "a", password = "a-pass", max_binds = 8 }}
credit = "1000"
[[accounts]]
id = "b"
smpp = {{ system_id = "b", password = "b-pass", max_binds = 8 }}
credit = "1000"
[[numbers]]
number = "{sender}"
account = "a"
type = "short_code"
[[numbers]]
number = "{sender_b}"
account = "b"
type = "short_code"
"""

#: Upper bound of any single wait of these tests, in seconds.
BOUND = 15.0


def submit_sm(sender: str, to: str, text: bytes, *, registered_delivery: int = 0) -> SubmitSm:
    return SubmitSm(
        source_addr_ton=3,  # a short code (CONTRACT §4)
        source_addr_npi=0,
        source_addr=sender,
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=to,
        registered_delivery=registered_delivery,
        short_message=text,
    )


async def submit_one(esme: RawEsme, sender: str = SENDER) -> SubmitSmResp:
    esme.send(submit_sm(sender, "14155550123", b"are you there"))
    while True:
        resp = await esme.read()
        assert resp is not None
        if isinstance(resp, SubmitSmResp):
            return resp


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
async def esmes() -> AsyncIterator[list[RawEsme]]:
    """Every raw connection a test opens, closed when it ends."""
    opened: list[RawEsme] = []
    yield opened
    for esme in opened:
        esme.close()
        await esme.wait_closed()


async def open_esme(esmes: list[RawEsme], port: int) -> RawEsme:
    esme = await RawEsme.connect(port)
    esmes.append(esme)
    return esme


async def start(start_router: StartRouter) -> RouterProcess:
    return await start_router(CONFIG.format(sender=SENDER, sender_b=SENDER_B))


# ------------------------------------------------------------------ per address


async def test_connections_over_the_per_address_cap_are_closed_at_once(
    start_router: StartRouter,
    carrier: CarrierSimulator,
    esmes: list[RawEsme],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMSROUTER_SMPP_MAX_CONNECTIONS_PER_IP", "5")
    router = await start(start_router)
    kept = [await open_esme(esmes, router.smpp_port) for _ in range(5)]
    # Each of the five is served.
    for esme in kept:
        esme.send(EnquireLink())
        assert (await esme.read()) is not None
    over = await open_esme(esmes, router.smpp_port)
    assert await over.closed_by_peer(timeout=5.0), "the sixth connection stayed open"
    # The five still work, one binds and submits.
    assert await kept[0].bind(BindTransmitter, "a", "a-pass") == CommandStatus.ESME_ROK
    assert (await submit_one(kept[0])).command_status == CommandStatus.ESME_ROK
    # A connection that ends gives its place back.
    kept[4].close()
    await kept[4].wait_closed()
    esmes.remove(kept[4])
    await asyncio.sleep(0.5)
    again = await open_esme(esmes, router.smpp_port)
    assert await again.bind(BindTransmitter, "a", "a-pass") == CommandStatus.ESME_ROK
    await router.wait_for_event("connection refused: too many from one address")


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_at_the_fd_limit_binds_are_served_and_refusals_logged(
    start_router: StartRouter, carrier: CarrierSimulator, esmes: list[RawEsme]
) -> None:
    """At the descriptor limit a new SMPP connection is closed at once, an
    open bind is served on, and the refusals are logged with a count."""
    router = await start(start_router)
    assert router.proc is not None
    pid = router.proc.pid
    bound = await open_esme(esmes, router.smpp_port)
    assert await bound.bind(BindTransceiver, "a", "a-pass") == CommandStatus.ESME_ROK
    # Warm: the number library opens its data files on first use.
    assert (await submit_one(bound)).command_status == CommandStatus.ESME_ROK
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (_open_fds(pid) + 4, hard))
    try:
        closed = 0
        for _ in range(30):
            esme = await open_esme(esmes, router.smpp_port)
            esme.send(EnquireLink())
            if await esme.read(timeout=5.0) is None:
                closed += 1
        assert closed >= 30 - 4
        # The bind opened before the limit is served on.
        assert (await submit_one(bound)).command_status == CommandStatus.ESME_ROK
        line = await router.wait_for_event("connections refused at the file-descriptor limit")
        assert line["listener"] == "smpp" and line["refused"] >= 1
        assert "Traceback" not in router.output()
        assert router.proc.returncode is None
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (4096, hard))


# ------------------------------------------------------------------ password guessing


async def test_password_guessing_is_throttled_per_address(
    start_router: StartRouter, carrier: CarrierSimulator, esmes: list[RawEsme]
) -> None:
    router = await start(start_router)
    guesser = await open_esme(esmes, router.smpp_port)
    statuses = []
    for i in range(20):
        if i == 10:  # over several connections, as a guesser would
            guesser = await open_esme(esmes, router.smpp_port)
        statuses.append(await guesser.bind(BindTransmitter, "a", f"guess-{i}"))
    assert statuses == [CommandStatus.ESME_RINVPASWD] * 20
    # The twentieth started the cool-down: that connection is closed.
    assert await guesser.closed_by_peer(timeout=5.0)
    # Now even the right password is refused, and the connection closed.
    right = await open_esme(esmes, router.smpp_port)
    assert await right.bind(BindTransceiver, "a", "a-pass") == CommandStatus.ESME_RBINDFAIL
    assert await right.closed_by_peer(timeout=5.0)
    line = await router.wait_for_event("authentication cool-down started")
    assert line["peer"] == "127.0.0.1" and line["system_id"] == "a"
    assert line["level"] == "warning"
    assert "guess-" not in router.output(), "a tried password was logged"
    started = [e for e in router.lines if e.get("event") == "authentication cool-down started"]
    assert len(started) == 1


# ------------------------------------------------------------------ pipelining


async def test_pipelined_submits_without_reading_keep_memory_bounded(
    start_router: StartRouter, carrier: CarrierSimulator, esmes: list[RawEsme]
) -> None:
    router = await start(start_router)
    assert router.proc is not None
    pid = router.proc.pid
    count = 20_000

    # Warm up what the first messages load (number metadata, code paths).
    other = await open_esme(esmes, router.smpp_port)
    assert await other.bind(BindTransmitter, "b", "b-pass") == CommandStatus.ESME_ROK
    for _ in range(20):
        assert (await submit_one(other, SENDER_B)).command_status == CommandStatus.ESME_ROK
    await asyncio.sleep(1.0)
    idle = rss_kib(pid)

    flood = await open_esme(esmes, router.smpp_port)
    assert await flood.bind(BindTransmitter, "a", "a-pass") == CommandStatus.ESME_ROK
    first_seq = flood.next_seq()
    pdus = []
    for i in range(count):
        pdu = submit_sm(SENDER, f"1415555{i % 10000:04d}", b"pipelined %d" % i)
        pdu.sequence_number = first_seq + i  # type: ignore[misc]
        pdus.append(encode(pdu))
    flood.writer.write(b"".join(pdus))  # never drained: the router reads what it wants
    peak = idle
    for _ in range(10):
        await asyncio.sleep(0.5)
        peak = max(peak, rss_kib(pid))
    grown_mib = (peak - idle) / 1024
    print(f"router RSS idle {idle} KiB, peak while not reading {peak} KiB (+{grown_mib:.1f} MiB)")
    assert grown_mib < 15, f"router RSS grew {grown_mib:.1f} MiB for an ESME that reads nothing"

    # The router stays responsive to others meanwhile.
    async with asyncio.timeout(5):
        assert (await submit_one(other, SENDER_B)).command_status == CommandStatus.ESME_ROK
    second = await open_esme(esmes, router.smpp_port)
    assert await second.bind(BindTransmitter, "b", "b-pass") == CommandStatus.ESME_ROK
    assert (await submit_one(second, SENDER_B)).command_status == CommandStatus.ESME_ROK

    # Now the flooder reads: every submit_sm is answered once, or the
    # connection ends cleanly.
    answered: dict[int, int] = {}
    closed = False
    async with asyncio.timeout(60):
        while len(answered) < count:
            resp = await flood.read(timeout=20)
            if resp is None:
                closed = True
                break
            if isinstance(resp, SubmitSmResp):
                assert resp.sequence_number not in answered, "answered twice"
                answered[resp.sequence_number] = resp.command_status
    assert set(answered) <= set(range(first_seq, first_seq + count))
    if not closed:
        assert len(answered) == count
    print(f"answered {len(answered)} of {count}; statuses {set(answered.values())}")


# ------------------------------------------------------------------ isolation


async def _receipt_latencies(esme: RawEsme, n: int, pace: float) -> list[float]:
    """Submit `n` messages with registered delivery over account b's
    transceiver, one every `pace` seconds; the seconds from each
    submit_sm_resp to its receipt."""
    acked: dict[str, float] = {}
    latencies: dict[str, float] = {}
    reading_done = asyncio.Event()

    async def reader() -> None:
        while len(latencies) < n:
            pdu = await esme.read(timeout=BOUND)
            assert pdu is not None, "b's bind was closed"
            now = time.monotonic()
            if isinstance(pdu, SubmitSmResp):
                assert pdu.command_status == CommandStatus.ESME_ROK
                acked[pdu.message_id] = now
            elif isinstance(pdu, DeliverSm):
                esme.send(pdu.response())
                receipted = get_tlv(pdu, Tag.RECEIPTED_MESSAGE_ID)
                assert isinstance(receipted, str)
                latencies[receipted] = now - acked[receipted]
        reading_done.set()

    task = asyncio.create_task(reader())
    try:
        for i in range(n):
            esme.send(submit_sm(SENDER_B, "14155550199", b"b %d" % i, registered_delivery=1))
            await asyncio.sleep(pace)
        async with asyncio.timeout(BOUND * 2):
            await task
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    return list(latencies.values())


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def test_a_receiving_bind_that_stops_reading_does_not_delay_another_accounts_receipts(
    start_router: StartRouter,
    carrier: CarrierSimulator,
    esmes: list[RawEsme],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A hung deliver_sm is given up after 5 s (the default is 30): the test
    # stays short while the jam lasts longer than the 2 s allowed.
    monkeypatch.setenv("SMSROUTER_SMPP_RESPONSE_TIMEOUT", "5")
    router = await start(start_router)
    b = await open_esme(esmes, router.smpp_port)
    assert await b.bind(BindTransceiver, "b", "b-pass") == CommandStatus.ESME_ROK
    normal = await _receipt_latencies(b, 40, pace=0.05)

    # Account a: a receiver that never reads, and many receipts for it.
    deaf = await open_esme(esmes, router.smpp_port)
    assert await deaf.bind(BindReceiver, "a", "a-pass") == CommandStatus.ESME_ROK
    a = await open_esme(esmes, router.smpp_port)
    assert await a.bind(BindTransmitter, "a", "a-pass") == CommandStatus.ESME_ROK
    for i in range(300):
        a.send(submit_sm(SENDER, "14155550100", b"a %d" % i, registered_delivery=1))
    acked = 0
    async with asyncio.timeout(BOUND):
        while acked < 300:
            resp = await a.read()
            assert isinstance(resp, SubmitSmResp)
            assert resp.command_status == CommandStatus.ESME_ROK
            acked += 1
    # a's receipts now pile up towards its deaf bind while b's flow.
    # b's receipts are measured past the moment a's deaf bind is dropped.
    jammed = await _receipt_latencies(b, 140, pace=0.05)
    print(
        f"b's receipts p99: {p99(normal):.3f} s alone, {p99(jammed):.3f} s"
        f" beside a deaf bind of a (max {max(jammed):.3f} s)"
    )
    assert p99(jammed) <= p99(normal) + 2.0
    # The jam was real: a's receipts went to its deaf bind, which the router
    # dropped once they went unanswered past the response timeout.
    assert isinstance(await deaf.read(timeout=2.0), DeliverSm)
    await router.wait_for_event("peer stopped answering, closing", timeout=BOUND)
