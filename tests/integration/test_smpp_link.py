"""The asyncio shell around the SMPP session (connectors/smpp_link.py), over loopback TCP.

Every scenario starts its own SMSC on 127.0.0.1 port 0 and connects ESMEs to
it, both sides being `SmppLink`s unless the scenario needs a peer that
misbehaves. The shell's timers tick once a second of real time, so timeouts
here are a fraction of a second and every wait is bounded by `BOUND`; no
test asserts how long anything took.

A few scenarios run again under uvloop (the daemon's loop) at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import pytest
import uvloop

from smsrouter.connectors.carriers import CarrierBinds
from smsrouter.connectors.smpp import (
    BindReceiver,
    BindState,
    BindTransceiver,
    BindTransmitter,
    CommandStatus,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    Role,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    decode,
    encode,
)
from smsrouter.connectors.smpp_link import (
    MAX_TIMEOUTS_IN_A_ROW,
    LinkClosed,
    ResponseTimeout,
    SmppLink,
)
from smsrouter.router.config import CarrierConfig
from smsrouter.router.engine import CarrierError
from smsrouter.router.messages import Status
from smsrouter.router.store import CarrierReceipt
from smsrouter.sims.carrier import CarrierSimulator
from tests.tools import bounded, eventually

#: Upper bound of any single wait, in seconds: far above what each step
#: needs (at most two ticks of the link's one-second timer), so a slow CI
#: machine never flakes, yet a hang fails the test instead of the suite.
BOUND = 5.0

T = TypeVar("T")
L = TypeVar("L", bound=SmppLink)


def submit_sm(to: str, *, registered_delivery: int = 0) -> SubmitSm:
    return SubmitSm(
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="14155550101",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=to,
        registered_delivery=registered_delivery,
        short_message=b"hello",
    )


class ManualClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ------------------------------------------------------------------ peers


class Peer:
    """A LinkHandler for either side of a link that records what it saw.

    Accepts every bind. Answers submit_sm with message id `id-<destination>`
    at once, or holds it until the test calls `answer_held()` when `hold`
    is set. A submit_sm to "boom" makes it raise, as a handler bug would.
    """

    def __init__(self, *, hold: bool = False) -> None:
        self.hold = hold
        self.requests: list[Pdu] = []
        self.held: list[tuple[SmppLink, SubmitSm]] = []
        self.closed_links: list[SmppLink] = []
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def submits(self) -> list[str]:
        """Destinations of every submit_sm seen, in arrival order."""
        return [p.destination_addr for p in self.requests if isinstance(p, SubmitSm)]

    def on_request(self, link: SmppLink, pdu: Pdu) -> None:
        self.requests.append(pdu)
        if isinstance(pdu, BindTransmitter | BindReceiver | BindTransceiver):
            link.send(pdu.response(system_id="test-smsc"))
        elif isinstance(pdu, SubmitSm):
            if pdu.destination_addr == "boom":
                raise RuntimeError("handler bug")
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.hold:
                self.held.append((link, pdu))
            else:
                self._answer(link, pdu)
        elif hasattr(pdu, "response"):
            link.send(pdu.response())  # type: ignore[attr-defined]

    def answer_held(self, count: int | None = None) -> None:
        """Answer the oldest `count` held submit_sm (all when None)."""
        count = len(self.held) if count is None else count
        answering, self.held = self.held[:count], self.held[count:]
        for link, pdu in answering:
            self._answer(link, pdu)

    def _answer(self, link: SmppLink, pdu: SubmitSm) -> None:
        self.in_flight -= 1
        link.send(pdu.response(message_id=f"id-{pdu.destination_addr}"))

    def on_closed(self, link: SmppLink) -> None:
        self.closed_links.append(link)


class Wiretap:
    """PDUs as they arrived on one end of a connection, framed and decoded apart from the session."""

    def __init__(self) -> None:
        self.pdus: list[Pdu] = []
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 16:
            (length,) = struct.unpack_from(">I", self._buffer)
            if length < 16 or len(self._buffer) < length:
                return
            frame, self._buffer = self._buffer[:length], self._buffer[length:]
            self.pdus.append(decode(frame))

    def count(self, kind: type[Pdu]) -> int:
        return sum(isinstance(p, kind) for p in self.pdus)


class TappedLink(SmppLink):
    """An SmppLink that records every PDU it receives.

    With `hung` set it stops acting on them, like a peer whose process is
    stuck while the kernel keeps its TCP connection up.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tap = Wiretap()
        self.hung = False

    def data_received(self, data: bytes) -> None:
        self.tap.feed(data)
        if not self.hung:
            super().data_received(data)


@dataclass
class Listener:
    server: asyncio.Server
    handler: Peer
    #: The SMSC side of every connection accepted, in order.
    links: list[SmppLink]

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])


class Loopback:
    """The SMSCs and ESMEs of one test; everything is closed when the test ends."""

    def __init__(self) -> None:
        self._servers: list[asyncio.Server] = []
        self._links: list[SmppLink] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for server in self._servers:
            server.close()
        for link in self._links:
            link.close()
        for server in self._servers:
            await bounded(server.wait_closed())
        await bounded(asyncio.gather(*(link.closed for link in self._links)))

    async def listen(
        self, handler: Peer | None = None, *, link_cls: type[SmppLink] = SmppLink, **options: Any
    ) -> Listener:
        peer = handler or Peer()
        links: list[SmppLink] = []

        def accept() -> SmppLink:
            link = link_cls(Role.SMSC, peer, **options)
            links.append(link)
            self._links.append(link)
            return link

        server = await asyncio.get_running_loop().create_server(accept, "127.0.0.1", 0)
        self._servers.append(server)
        return Listener(server, peer, links)

    async def connect(
        self,
        port: int,
        handler: Peer | None = None,
        *,
        link_cls: type[L] = SmppLink,  # type: ignore[assignment]
        **options: Any,
    ) -> L:
        peer = handler or Peer()
        _, link = await bounded(
            asyncio.get_running_loop().create_connection(
                lambda: link_cls(Role.ESME, peer, **options), "127.0.0.1", port
            )
        )
        self._links.append(link)
        return link


async def bind(link: SmppLink) -> None:
    resp = await bounded(link.request(BindTransceiver(system_id="esme", password="pw")))
    assert resp.command_status == CommandStatus.ESME_ROK
    assert link.session.state is BindState.BOUND_TRX


async def read_pdu(reader: asyncio.StreamReader) -> Pdu:
    head = await reader.readexactly(4)
    (length,) = struct.unpack(">I", head)
    return decode(head + await reader.readexactly(length - 4))


async def round_trip(link: SmppLink) -> None:
    """An enquire_link exchange from `link`: one TCP stream keeps order, so
    whatever the peer wrote before its enquire_link_resp has arrived and
    been handled by the time this returns."""
    resp = await bounded(link.request(EnquireLink()))
    assert isinstance(resp, EnquireLinkResp)


# ------------------------------------------------------------------ window


async def test_window_holds_the_next_request_until_a_response_frees_a_slot() -> None:
    carrier = Peer(hold=True)
    async with Loopback() as net:
        smsc = await net.listen(carrier)
        esme = await net.connect(smsc.port, window=3)
        await bind(esme)
        numbers = [f"3160000000{i}" for i in range(5)]
        tasks = [asyncio.create_task(esme.request(submit_sm(n))) for n in numbers]

        await eventually(lambda: len(carrier.held) == 3, "three submit_sm at the SMSC")
        await round_trip(smsc.links[0])
        assert carrier.submits == numbers[:3]
        assert esme.outstanding == 3
        assert not any(t.done() for t in tasks)

        carrier.answer_held(1)
        first = await bounded(tasks[0])
        assert isinstance(first, SubmitSmResp)
        assert first.message_id == f"id-{numbers[0]}"
        await eventually(lambda: len(carrier.submits) == 4, "the fourth submit_sm")
        await round_trip(smsc.links[0])
        assert carrier.submits == numbers[:4]
        assert esme.outstanding == 3

        carrier.answer_held()
        await eventually(lambda: len(carrier.submits) == 5, "the fifth submit_sm")
        carrier.answer_held()
        answers = await bounded(asyncio.gather(*tasks))
        assert [a.message_id for a in answers] == [f"id-{n}" for n in numbers]  # type: ignore[attr-defined]
        assert carrier.max_in_flight == 3
        assert esme.outstanding == 0


# ------------------------------------------------------------------ response timeout


async def test_response_timeout_fails_the_request_and_frees_its_slot() -> None:
    carrier = Peer(hold=True)
    clock = ManualClock()
    async with Loopback() as net:
        smsc = await net.listen(carrier)
        esme = await net.connect(smsc.port, window=1, response_timeout=10.0, clock=clock)
        await bind(esme)

        unanswered = asyncio.create_task(esme.request(submit_sm("31600000001")))
        await eventually(lambda: len(carrier.held) == 1, "the submit_sm at the SMSC")
        clock.advance(10.5)  # past the deadline; the next tick expires it
        with pytest.raises(ResponseTimeout):
            await bounded(unanswered)
        assert esme.outstanding == 0
        assert esme.is_open

        # The late answer to the expired request must not free a second slot.
        carrier.answer_held()
        await round_trip(smsc.links[0])
        second = asyncio.create_task(esme.request(submit_sm("31600000002")))
        third = asyncio.create_task(esme.request(submit_sm("31600000003")))
        await eventually(lambda: len(carrier.held) == 1, "the second submit_sm")
        await round_trip(smsc.links[0])
        assert carrier.submits == ["31600000001", "31600000002"]

        carrier.answer_held()
        assert (await bounded(second)).message_id == "id-31600000002"  # type: ignore[attr-defined]
        await eventually(lambda: len(carrier.held) == 1, "the third submit_sm")
        carrier.answer_held()
        assert (await bounded(third)).message_id == "id-31600000003"  # type: ignore[attr-defined]


async def test_a_short_response_timeout_expires_on_the_real_clock() -> None:
    carrier = Peer(hold=True)
    async with Loopback() as net:
        smsc = await net.listen(carrier)
        esme = await net.connect(smsc.port, window=1, response_timeout=0.3)
        await bind(esme)
        with pytest.raises(ResponseTimeout):
            await bounded(esme.request(submit_sm("31600000001")))
        carrier.hold = False
        resp = await bounded(esme.request(submit_sm("31600000002")))
        assert resp.message_id == "id-31600000002"  # type: ignore[attr-defined]


# ------------------------------------------------------------------ link lost


async def test_a_peer_that_takes_requests_but_never_answers_is_dropped() -> None:
    """Traffic keeps such a link from looking idle, so enquire_link never
    goes out: consecutive response timeouts close it instead."""
    carrier = Peer(hold=True)
    clock = ManualClock()
    async with Loopback() as net:
        smsc = await net.listen(carrier)
        esme = await net.connect(smsc.port, window=8, response_timeout=10.0, clock=clock)
        await bind(esme)
        assert MAX_TIMEOUTS_IN_A_ROW == 3
        first = [asyncio.create_task(esme.request(submit_sm(f"3160000000{i}"))) for i in range(2)]
        await eventually(lambda: len(carrier.held) == 2, "two submit_sm at the SMSC")
        clock.advance(10.5)
        for task in first:
            with pytest.raises(ResponseTimeout):
                await bounded(task)
        assert esme.is_open  # two in a row: not yet
        third = asyncio.create_task(esme.request(submit_sm("31600000009")))
        await eventually(lambda: len(carrier.held) == 3, "the third submit_sm")
        clock.advance(10.5)
        with pytest.raises(ResponseTimeout):
            await bounded(third)
        await bounded(esme.closed)
        assert not esme.is_open


async def test_link_lost_fails_every_outstanding_and_waiting_request() -> None:
    carrier = Peer(hold=True)
    esme_side = Peer()
    async with Loopback() as net:
        smsc = await net.listen(carrier)
        esme = await net.connect(smsc.port, esme_side, window=2)
        await bind(esme)
        tasks = [asyncio.create_task(esme.request(submit_sm(f"3160000000{i}"))) for i in range(3)]
        await eventually(lambda: len(carrier.held) == 2, "two submit_sm at the SMSC")
        assert esme.outstanding == 2  # the third waits for a window slot

        smsc.links[0].close()
        for task in tasks:
            with pytest.raises(LinkClosed):
                await bounded(task)
        assert await bounded(esme.closed) is None
        assert esme_side.closed_links == [esme]
        assert esme.outstanding == 0
        assert not esme.is_open
        with pytest.raises(LinkClosed):
            await bounded(esme.request(submit_sm("31600000009")))
        await eventually(lambda: carrier.closed_links == [smsc.links[0]], "the SMSC's on_closed")
        assert esme_side.closed_links == [esme]


# ------------------------------------------------------------------ enquire_link


async def test_enquire_link_keeps_an_idle_link_open_and_drops_a_dead_peer() -> None:
    esme_side = Peer()
    async with Loopback() as net:
        smsc = await net.listen(link_cls=TappedLink)
        esme = await net.connect(
            smsc.port, esme_side, enquire_link_interval=0.2, response_timeout=0.5
        )
        await bind(esme)
        server = smsc.links[0]
        assert isinstance(server, TappedLink)

        await eventually(lambda: server.tap.count(EnquireLink) >= 1, "an enquire_link")
        await eventually(lambda: esme.outstanding == 0, "the enquire_link_resp")
        assert esme.is_open
        assert esme_side.closed_links == []

        server.hung = True
        sent_before = server.tap.count(EnquireLink)
        await bounded(esme.closed)
        assert server.tap.count(EnquireLink) > sent_before  # the one nobody answered
        assert esme_side.closed_links == [esme]


# ------------------------------------------------------------------ bind and inactivity timers


async def test_bind_timeout_closes_a_link_that_never_binds() -> None:
    smsc_side = Peer()
    idle_side = Peer()
    async with Loopback() as net:
        smsc = await net.listen(smsc_side, bind_timeout=0.3)
        bound = await net.connect(smsc.port)
        await bind(bound)
        idle = await net.connect(smsc.port, idle_side)
        await round_trip(idle)  # alive, but a keep-alive is not a bind

        await bounded(idle.closed)
        assert idle_side.closed_links == [idle]
        await eventually(lambda: smsc_side.closed_links == [smsc.links[1]], "the SMSC's on_closed")
        # The bound link was checked at least once by now (it was opened first).
        assert bound.is_open
        await round_trip(bound)


async def test_inactivity_timeout_closes_a_silent_link() -> None:
    smsc_side = Peer()
    async with Loopback() as net:
        # No enquire_link from the SMSC: it would make the silent ESME answer.
        smsc = await net.listen(smsc_side, inactivity_timeout=0.5, enquire_link_interval=0)
        chatty = await net.connect(smsc.port)
        await bind(chatty)
        silent = await net.connect(smsc.port, enquire_link_interval=0)
        await bind(silent)

        async def chatter() -> None:
            while True:
                await round_trip(chatty)
                await asyncio.sleep(0.1)

        talking = asyncio.create_task(chatter())
        try:
            await bounded(silent.closed)
            assert not talking.done()
            assert chatty.is_open
        finally:
            talking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await talking
        await eventually(lambda: smsc_side.closed_links == [smsc.links[1]], "the SMSC's on_closed")


# ------------------------------------------------------------------ garbage


@pytest.mark.parametrize(
    ("garbage", "sequence_number"),
    [
        (struct.pack(">IIII", 5, 0x00000004, 0, 7), 0),  # shorter than a header
        (struct.pack(">IIII", 0x00FFFFFF, 0x00000004, 0, 7), 7),  # far over the PDU size limit
    ],
    ids=["too-short", "too-long"],
)
@pytest.mark.parametrize("bound_first", [False, True], ids=["unbound", "bound"])
async def test_bad_command_length_gets_generic_nack_then_close(
    garbage: bytes, sequence_number: int, bound_first: bool
) -> None:
    carrier = Peer()
    async with Loopback() as net:
        smsc = await net.listen(carrier)
        reader, writer = await bounded(asyncio.open_connection("127.0.0.1", smsc.port))
        try:
            if bound_first:
                writer.write(encode(BindTransceiver(sequence_number=1, system_id="esme")))
                bind_resp = await bounded(read_pdu(reader))
                assert bind_resp.command_status == CommandStatus.ESME_ROK
            writer.write(garbage)
            # Everything up to EOF: the SMSC answers, then closes.
            reply = await bounded(reader.read())
            assert reply == encode(GenericNack(CommandStatus.ESME_RINVCMDLEN, sequence_number))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await bounded(writer.wait_closed())
        assert len(carrier.requests) == (1 if bound_first else 0)
        await eventually(lambda: carrier.closed_links == [smsc.links[0]], "the SMSC's on_closed")

        # The server keeps accepting.
        esme = await net.connect(smsc.port)
        await bind(esme)
        resp = await bounded(esme.request(submit_sm("31600000001")))
        assert resp.message_id == "id-31600000001"  # type: ignore[attr-defined]


# ------------------------------------------------------------------ handler errors


async def test_an_error_in_the_handler_leaves_the_link_up() -> None:
    carrier = Peer()
    async with Loopback() as net:
        smsc = await net.listen(carrier)
        esme = await net.connect(smsc.port)
        await bind(esme)
        # Written back to back, so both may arrive in one read: the error
        # with the first must not lose the second.
        boom = asyncio.create_task(esme.request(submit_sm("boom")))
        ok = asyncio.create_task(esme.request(submit_sm("31600000001")))
        resp = await bounded(ok)
        assert resp.message_id == "id-31600000001"  # type: ignore[attr-defined]
        assert carrier.submits == ["boom", "31600000001"]
        resp = await bounded(esme.request(submit_sm("31600000002")))
        assert resp.message_id == "id-31600000002"  # type: ignore[attr-defined]
        assert esme.is_open
        assert smsc.links[0].is_open
        # The request the handler failed on is answered ESME_RSYSERR (a
        # system error, SMPP 3.4 §5.1.3) instead of running into the ESME's
        # response timeout.
        failed = await bounded(boom)
        assert failed.command_status == CommandStatus.ESME_RSYSERR
        assert esme.outstanding == 0


# ------------------------------------------------------------------ unbind


async def test_unbind_from_the_peer_is_answered_and_closes() -> None:
    carrier = Peer(hold=True)
    esme_side = Peer()
    async with Loopback() as net:
        smsc = await net.listen(carrier, link_cls=TappedLink)
        esme = await net.connect(smsc.port, esme_side, link_cls=TappedLink)
        await bind(esme)
        pending = asyncio.create_task(esme.request(submit_sm("31600000001")))
        await eventually(lambda: len(carrier.held) == 1, "the submit_sm at the SMSC")
        server = smsc.links[0]
        assert isinstance(server, TappedLink)

        # From here on the SMSC only records what it gets, so the close
        # that follows can only come from the ESME.
        server.hung = True
        unbind = Unbind()
        server.send(unbind)
        await bounded(esme.closed)
        assert isinstance(esme.tap.pdus[-1], Unbind)
        assert esme.session.state is BindState.UNBOUND
        await eventually(lambda: server.tap.count(UnbindResp) == 1, "the unbind_resp")
        answer = server.tap.pdus[-1]
        assert isinstance(answer, UnbindResp)
        assert answer.command_status == CommandStatus.ESME_ROK
        assert answer.sequence_number == unbind.sequence_number
        await bounded(server.closed)
        with pytest.raises(LinkClosed):
            await bounded(pending)
        # The shell answers unbind itself; the handler only hears of the close.
        assert esme_side.requests == []
        assert esme_side.closed_links == [esme]


async def test_unbind_from_our_side_waits_for_unbind_resp_then_closes() -> None:
    carrier = Peer()
    async with Loopback() as net:
        smsc = await net.listen(carrier, link_cls=TappedLink)
        esme = await net.connect(smsc.port, link_cls=TappedLink)
        await bind(esme)

        await bounded(esme.unbind())
        assert not esme.is_open
        # UNBOUND, not BOUND_TRX: the unbind_resp arrived (no timeout).
        assert esme.session.state is BindState.UNBOUND
        answer = esme.tap.pdus[-1]
        assert isinstance(answer, UnbindResp)
        assert answer.command_status == CommandStatus.ESME_ROK
        await bounded(esme.closed)
        server = smsc.links[0]
        assert isinstance(server, TappedLink)
        assert isinstance(server.tap.pdus[-1], Unbind)
        await bounded(server.closed)
        assert carrier.closed_links == [server]
        assert [type(p) for p in carrier.requests] == [BindTransceiver]


# ------------------------------------------------------------------ carrier simulator + CarrierBinds


@dataclass
class BindCountingSimulator(CarrierSimulator):
    bind_attempts: int = 0

    def on_request(self, link: SmppLink, pdu: Pdu) -> None:
        if isinstance(pdu, BindTransmitter | BindReceiver | BindTransceiver):
            self.bind_attempts += 1
        super().on_request(link, pdu)


class CarrierClient:
    """CarrierBinds towards a simulator, recording receipts and bind-ups."""

    def __init__(self, port: int, *, password: str = "secret") -> None:
        self.receipts: list[CarrierReceipt] = []
        self.ups: list[str] = []
        self.binds = CarrierBinds(
            CarrierConfig(
                name="sim",
                host="127.0.0.1",
                port=port,
                system_id="router",
                password=password,
                window=8,
                response_timeout=5.0,
                reconnect_delay=0.02,
                reconnect_max_delay=0.1,
            ),
        )

    def carrier_up(self, carrier: str) -> None:
        self.ups.append(carrier)

    def receipt(self, receipt: CarrierReceipt) -> asyncio.Future[None]:
        self.receipts.append(receipt)
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stored.set_result(None)
        return stored

    async def __aenter__(self) -> CarrierBinds:
        self.binds.start(self)
        return self.binds

    async def __aexit__(self, *exc_info: object) -> None:
        await bounded(self.binds.stop())


async def test_carrier_binds_submit_and_come_back_after_the_carrier_drops_them() -> None:
    sim = CarrierSimulator(system_id="router", password="secret", receipt_delay=0.02)
    await sim.start()
    try:
        client = CarrierClient(sim.port)
        async with client as binds:
            await eventually(lambda: binds.is_up, "the carrier bind")
            message_id = await bounded(
                binds.submit(submit_sm("14155550123", registered_delivery=1))
            )
            assert len(sim.submits) == 1
            assert message_id == sim.submits[0].message_id == "1"
            assert sim.submits[0].system_id == "router"
            assert sim.submits[0].destination_addr == "14155550123"
            assert sim.submits[0].text == "hello"
            await eventually(lambda: len(client.receipts) == 1, "the delivery receipt")
            receipt = client.receipts[0]
            assert (receipt.carrier, receipt.carrier_message_id) == ("sim", "1")
            assert receipt.status == Status.DELIVERED
            assert receipt.error_code is None
            await eventually(lambda: sim.receipts_sent == 1, "the deliver_sm_resp")

            sim.drop_binds()
            await eventually(lambda: len(client.ups) == 2, "the bind after the drop")
            assert binds.is_up
            message_id = await bounded(binds.submit(submit_sm("14155550124")))
            assert message_id == "2"
            assert [s.destination_addr for s in sim.submits] == ["14155550123", "14155550124"]
        assert client.ups == ["sim", "sim"]
        assert not binds.is_up
    finally:
        await bounded(sim.stop())


async def test_carrier_binds_keep_retrying_a_refused_bind() -> None:
    sim = BindCountingSimulator(system_id="router", password="secret")
    await sim.start()
    try:
        client = CarrierClient(sim.port, password="wrong")
        async with client as binds:
            await eventually(lambda: sim.bind_attempts >= 3, "three bind attempts")
            assert not binds.is_up
            assert client.ups == []
            with pytest.raises(CarrierError) as refused:
                await bounded(binds.submit(submit_sm("14155550123")))
            assert refused.value.code == "link_lost"
            assert refused.value.temporary
            assert sim.submits == []

            sim.password = "wrong"  # the carrier takes the password after all
            await eventually(lambda: binds.is_up, "the bind with the accepted password")
            assert client.ups == ["sim"]
            assert await bounded(binds.submit(submit_sm("14155550123"))) == "1"
    finally:
        await bounded(sim.stop())


async def test_simulator_drops_connections_that_never_sent_a_pdu() -> None:
    sim = CarrierSimulator(system_id="router", password="secret")
    await sim.start()
    try:
        reader, writer = await bounded(asyncio.open_connection("127.0.0.1", sim.port))
        try:
            await asyncio.sleep(0.05)  # let the simulator accept it
            sim.drop_binds()
            assert await bounded(reader.read()) == b""  # EOF: the simulator closed it
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await bounded(writer.wait_closed())
    finally:
        await bounded(sim.stop())


# ------------------------------------------------------------------ under uvloop

# The daemon runs on uvloop, whose transports differ from asyncio's (e.g.
# the socket behind get_extra_info("socket")); the scenarios that need no
# fixture run there too.


def _on_uvloop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(bounded(scenario(), timeout=4 * BOUND))


@pytest.mark.parametrize(
    "scenario",
    [
        test_window_holds_the_next_request_until_a_response_frees_a_slot,
        test_link_lost_fails_every_outstanding_and_waiting_request,
        functools.partial(
            test_bad_command_length_gets_generic_nack_then_close,
            struct.pack(">IIII", 5, 0x00000004, 0, 7),
            0,
            True,
        ),
        test_an_error_in_the_handler_leaves_the_link_up,
        test_unbind_from_the_peer_is_answered_and_closes,
        test_unbind_from_our_side_waits_for_unbind_resp_then_closes,
        test_carrier_binds_submit_and_come_back_after_the_carrier_drops_them,
    ],
    ids=["window", "link-lost", "garbage", "handler-error", "peer-unbind", "our-unbind", "carrier"],
)
def test_scenario_on_uvloop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    _on_uvloop(scenario)
