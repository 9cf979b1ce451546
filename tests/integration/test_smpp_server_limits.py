"""Our SMSC's limits (CONTRACT §11) over loopback TCP: the router runs in
this process (smsrouter.daemon.Router on a real PostgreSQL, a carrier
simulator as its carrier), its partners are raw sockets speaking through
the project's codec, so that they can misbehave.

- connections per source address are capped;
- failed binds are throttled per source address;
- a bind has at most `max_outstanding` requests read and not answered, and
  a partner that does not read its answers is not read from;
- a submit_sm whose commit hangs is answered ESME_RSYSERR at the commit
  deadline, once;
- a receipt for a bind that stops reading fails within the delivery
  timeout, goes to another receiving bind of the account when one is free,
  and fails at once when every one stopped answering.

Every wait is bounded (`BOUND`); no test asserts how long anything took
beyond the generous bounds the contract allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
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
    encode,
)
from smsrouter.connectors.smpp_link import SmppLink
from smsrouter.connectors.smpp_server import EsmeBind
from smsrouter.daemon import Router
from smsrouter.router.auth_throttle import AuthThrottle
from smsrouter.router.config import parse_config
from smsrouter.router.notifications import SMPP_RECEIPT, DeliveryFailed, NotAvailable
from smsrouter.router.payloads import SmppReceipt
from smsrouter.router.store import Notification
from smsrouter.sims.carrier import CarrierSimulator
from tests.own_pg import OwnPostgres
from tests.raw_esme import RawEsme
from tests.tools import bounded, eventually

BOUND = 10.0
T = TypeVar("T")

SENDER = "12345"

CONFIG = """
[http]
listen = "127.0.0.1:0"
request_timeout = {request_timeout}
[smpp]
listen = "127.0.0.1:0"
window = {window}
response_timeout = {response_timeout}
max_connections_per_ip = {max_connections_per_ip}
max_outstanding = {max_outstanding}
[database]
url = "{dsn}"
[shutdown]
drain_seconds = 1
[rates]
short_code = 1000
[[carriers]]
name = "sim"
port = {carrier_port}
system_id = "router"
password = "secret"
reconnect_delay = 0.2
[[routes]]
prefix = "1"
carriers = [ {{ name = "sim", cost = "0.004" }} ]
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "p"
smpp = {{ system_id = "p", password = "p-pass", max_binds = 8 }}
credit = "1000"
[[numbers]]
number = "{sender}"
account = "p"
type = "short_code"
"""


def submit_sm(i: int) -> SubmitSm:
    return SubmitSm(
        source_addr_ton=3,
        source_addr_npi=0,
        source_addr=SENDER,
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=f"1415555{i % 10000:04d}",
        short_message=b"message %d" % i,
    )


class Rig:
    """The router of one test and the raw partners it opened."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.esmes: list[RawEsme] = []

    @property
    def port(self) -> int:
        return self.router.smpp_port

    async def esme(self) -> RawEsme:
        esme = await RawEsme.connect(self.port)
        self.esmes.append(esme)
        return esme

    def server_links(self) -> list[SmppLink]:
        return list(self.router.smsc._links)

    def server_link_of(self, account: str = "p") -> list[SmppLink]:
        return list(self.router.smsc._binds.get(account, ()))


StartRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSimulator]:
    sim = CarrierSimulator(system_id="router", password="secret", receipt_delay=0.05)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def start_rig(carrier: CarrierSimulator) -> AsyncIterator[StartRig]:
    rigs: list[Rig] = []

    async def start(dsn: str, *, auth_throttle: AuthThrottle | None = None, **options: Any) -> Rig:
        values = {
            "request_timeout": 10,
            "window": 64,
            "response_timeout": 30,
            "max_connections_per_ip": 256,
            "max_outstanding": 200,
            **options,
        }
        text = CONFIG.format(dsn=dsn, carrier_port=carrier.port, sender=SENDER, **values)
        router = Router(parse_config(tomllib.loads(text), environ={}))
        if auth_throttle is not None:
            router.auth_throttle = auth_throttle
        rig = Rig(router)
        rigs.append(rig)
        await bounded(router.start(), 30)
        return rig

    yield start
    for rig in rigs:
        for esme in rig.esmes:
            esme.close()
        await bounded(rig.router.stop(), 30)


# ------------------------------------------------------------------ per address


async def test_connections_over_the_cap_per_address_are_closed_and_places_come_back(
    start_rig: StartRig, database_url: str
) -> None:
    rig = await start_rig(database_url, max_connections_per_ip=2)
    first, second = await rig.esme(), await rig.esme()
    for esme in (first, second):
        esme.send(EnquireLink())
        assert await esme.read() is not None
    third = await rig.esme()
    assert await third.closed_by_peer(timeout=5.0)
    assert rig.router.smsc.connections_from("127.0.0.1") == 2
    assert await first.bind(BindTransceiver, "p", "p-pass") == CommandStatus.ESME_ROK

    second.close()
    await eventually(lambda: rig.router.smsc.connections_from("127.0.0.1") == 1, "a place back")
    fourth = await rig.esme()
    assert await fourth.bind(BindTransmitter, "p", "p-pass") == CommandStatus.ESME_ROK


# ------------------------------------------------------------------ failed binds


async def test_failed_binds_start_a_cool_down_that_refuses_even_the_right_password(
    start_rig: StartRig, database_url: str
) -> None:
    rig = await start_rig(database_url, auth_throttle=AuthThrottle(limit=3, cooldown=60))
    esme = await rig.esme()
    assert await esme.bind(BindTransmitter, "p", "wrong") == CommandStatus.ESME_RINVPASWD
    # An unknown system_id counts as a failure as well.
    assert await esme.bind(BindTransmitter, "nobody", "p-pass") == CommandStatus.ESME_RINVSYSID
    # Other refusals do not: a bind over max_binds would not either.
    assert await esme.bind(BindTransmitter, "p", "wrong") == CommandStatus.ESME_RINVPASWD
    assert await esme.closed_by_peer(timeout=5.0), "the cool-down closes the connection"

    right = await rig.esme()
    assert await right.bind(BindTransceiver, "p", "p-pass") == CommandStatus.ESME_RBINDFAIL
    assert await right.closed_by_peer(timeout=5.0)
    assert rig.router.auth_throttle.retry_after("127.0.0.1") > 0
    assert rig.router.smsc.binds_of("p") == 0


# ------------------------------------------------------------------ outstanding


async def test_a_partner_that_never_reads_is_not_read_from(
    start_rig: StartRig, database_url: str
) -> None:
    # max_outstanding far above what the kernel and the transport hold: it is
    # the unread answers that stop the reading here.
    rig = await start_rig(database_url, max_outstanding=100_000)
    esme = await rig.esme()
    # A fixed receive buffer: the partner's stream reader does read up to its
    # limit, and from those reads the kernel would grow an autotuned buffer
    # to megabytes, enough to take every answer (about 860 KB here) and let
    # the router read on. Fixed, the answers fill what lies between the two
    # (this buffer, the reader's 128 KiB, the router's 128 KiB send buffer
    # and its transport's high-water mark): under 400 KB.
    esme.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    assert await esme.bind(BindTransmitter, "p", "p-pass") == CommandStatus.ESME_ROK
    count = 20_000
    esme.writer.write(b"".join(encode(_numbered(i + 2, i)) for i in range(count)))
    (link,) = rig.server_link_of()
    await eventually(lambda: link.reading_paused, "the router to stop reading")
    bind = link.owner
    assert isinstance(bind, EsmeBind)
    # Answers are waiting in the buffers; requests are not all taken. What
    # holds is that reading stays paused (or pauses again, should the
    # buffers take a little more), with few requests in hand.
    await asyncio.sleep(0.5)
    await eventually(lambda: link.reading_paused, "the router to keep from reading")
    assert bind.outstanding < 1000

    answered: set[int] = set()
    async with asyncio.timeout(60):
        while len(answered) < count:
            resp = await esme.read()
            assert isinstance(resp, SubmitSmResp), resp
            assert resp.command_status == CommandStatus.ESME_ROK
            assert resp.sequence_number not in answered
            answered.add(resp.sequence_number)
    assert answered == set(range(2, count + 2))
    assert not link.reading_paused


def _numbered(seq: int, i: int) -> SubmitSm:
    pdu = submit_sm(i)
    pdu.sequence_number = seq  # type: ignore[misc]
    return pdu


async def test_at_most_max_outstanding_submits_wait_for_a_hung_commit_and_each_is_answered_once(
    start_rig: StartRig, own_pg: OwnPostgres
) -> None:
    rig = await start_rig(own_pg.dsn, max_outstanding=5, request_timeout=1)
    esme = await rig.esme()
    assert await esme.bind(BindTransmitter, "p", "p-pass") == CommandStatus.ESME_ROK
    esme.send(submit_sm(0))
    ok = await esme.read()
    assert isinstance(ok, SubmitSmResp) and ok.command_status == CommandStatus.ESME_ROK
    (link,) = rig.server_link_of()
    bind = link.owner
    assert isinstance(bind, EsmeBind)

    pids = own_pg.freeze()
    try:
        sent = [esme.send(submit_sm(i)) for i in range(1, 13)]
        await eventually(lambda: bind.outstanding == 5, "five submit_sm taken")
        await asyncio.sleep(0.3)
        assert bind.outstanding == 5 and link.reading_paused
        # At the commit deadline (1 s) the five are answered ESME_RSYSERR,
        # then the next five are taken, and so on.
        answers: list[tuple[float, SubmitSmResp]] = []
        async with asyncio.timeout(BOUND):
            while len(answers) < len(sent):
                resp = await esme.read()
                assert isinstance(resp, SubmitSmResp)
                answers.append((time.monotonic(), resp))
        assert [r.sequence_number for _, r in answers] == sent
        assert {r.command_status for _, r in answers} == {CommandStatus.ESME_RSYSERR}
        # Five at a time: the sixth waited for a deadline of its own.
        assert answers[5][0] - answers[4][0] > 0.5
        assert answers[10][0] - answers[9][0] > 0.5
    finally:
        own_pg.thaw(pids)
    # The hung commits land now; none of them answers a second time.
    esme.send(submit_sm(99))
    async with asyncio.timeout(BOUND):
        late = await esme.read()
    assert isinstance(late, SubmitSmResp)
    assert late.sequence_number == esme.seq, "a second answer to an earlier submit_sm"
    assert late.command_status == CommandStatus.ESME_ROK
    assert bind.outstanding == 0
    esme.send(EnquireLink())
    assert (await esme.read()).command_id == EnquireLink.command_id | 0x80000000  # type: ignore[union-attr]


# ------------------------------------------------------------------ receipts


def receipt(n: int) -> Notification:
    now = datetime.now(UTC)
    payload = msgspec.json.encode(
        SmppReceipt(
            id=f"00000000-0000-0000-0000-{n:012d}",
            sender="12345",
            recipient="+14155550123",
            status="delivered",
            error_code=None,
            submit_date=now,
            done_date=now,
            text="hello",
        )
    )
    return Notification(n, SMPP_RECEIPT, "p", None, None, payload, 0, now, now + timedelta(hours=1))


async def answer_deliveries(esme: RawEsme, got: list[DeliverSm]) -> None:
    """A receiver that answers every deliver_sm (until cancelled)."""
    while True:
        pdu = await esme.read(timeout=3600)
        if pdu is None:
            return
        if isinstance(pdu, DeliverSm):
            got.append(pdu)
            esme.writer.write(encode(pdu.response()))


async def outcome(aw: Awaitable[None]) -> str:
    try:
        await aw
    except DeliveryFailed:
        return "failed"
    except NotAvailable:
        return "not available"
    return "delivered"


async def test_a_receipt_for_a_bind_that_stops_reading_fails_within_the_timeout(
    start_rig: StartRig, database_url: str
) -> None:
    rig = await start_rig(database_url, window=2, response_timeout=1)
    smsc = rig.router.smsc
    deaf = await rig.esme()
    assert await deaf.bind(BindReceiver, "p", "p-pass") == CommandStatus.ESME_ROK
    # Two fill the deaf bind's window, the third waits for a slot: every one
    # fails within the timeout and its one-second sweep, none waits on.
    started = time.monotonic()
    results = await bounded(
        asyncio.gather(*(outcome(smsc.deliver(receipt(i))) for i in range(3))), 5
    )
    assert results == ["failed"] * 3
    assert time.monotonic() - started < 4
    # The deaf bind took the first two and answered none.
    first = await deaf.read(timeout=1)
    assert isinstance(first, DeliverSm)
    # It now counts as not answering, or, when the third went out and
    # timed out too, was closed for it (MAX_TIMEOUTS_IN_A_ROW): either way
    # the next fails at once.
    links = rig.server_link_of()
    assert all(not link.answering for link in links)
    started = time.monotonic()
    expected = "failed" if links else "not available"
    assert await bounded(outcome(smsc.deliver(receipt(9))), 1) == expected
    assert time.monotonic() - started < 0.5


async def test_receipts_go_to_another_receiving_bind_when_one_stops_reading(
    start_rig: StartRig, database_url: str
) -> None:
    rig = await start_rig(database_url, window=2, response_timeout=1)
    smsc = rig.router.smsc
    deaf = await rig.esme()
    assert await deaf.bind(BindReceiver, "p", "p-pass") == CommandStatus.ESME_ROK
    live = await rig.esme()
    assert await live.bind(BindTransceiver, "p", "p-pass") == CommandStatus.ESME_ROK
    got: list[DeliverSm] = []
    answering = asyncio.create_task(answer_deliveries(live, got))
    deaf_link, live_link = rig.server_link_of()
    try:
        # The deaf bind takes two (round-robin) and answers neither.
        stuck = [asyncio.create_task(outcome(smsc.deliver(receipt(i)))) for i in range(4)]
        await eventually(lambda: deaf_link.outstanding == 2, "the deaf bind's window full")
        await asyncio.sleep(0.2)
        # While they wait, more receipts go to the live bind, even beyond
        # its window: they wait for its slots, not for the deaf bind's.
        results = await bounded(
            asyncio.gather(*(outcome(smsc.deliver(receipt(10 + i))) for i in range(8))), 5
        )
        assert results == ["delivered"] * 8
        assert (
            sorted(await bounded(asyncio.gather(*stuck), 5)) == ["delivered"] * 2 + ["failed"] * 2
        )
        assert len(got) == 10
        # With the deaf one past its timeouts, every receipt goes to the live one.
        assert not deaf_link.answering and live_link.answering
        results = await bounded(
            asyncio.gather(*(outcome(smsc.deliver(receipt(100 + i))) for i in range(6))), 5
        )
        assert results == ["delivered"] * 6
        assert len(got) == 16
    finally:
        answering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await answering
