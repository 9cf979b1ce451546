"""Interop over real TCP on 127.0.0.1 with smpp34, an independent SMPP 3.4 stack.

smpp34 1.5.0 (PyPI ``smpp34``, MIT licence, Real Time Telecom B.V.; a Rust
core with an asyncio API, test dependency only) plays both parts:

* its SMSC server faces our carrier client (``connectors.carriers.CarrierBinds``
  and the ``SmppLink`` shell under it): bind, several parts of a long message
  in every concatenation mode, receipts back, the other requests an ESME may
  send, unbind;
* its ESME client faces our carrier simulator (``sims.carrier``), which is
  built on the same ``Session``/``SmppLink`` as our partner-facing SMSC.

What smpp34 cannot show, and how the tests are shaped around it:

* its server has no bind hook and accepts any password, so refused binds are
  tested only the other way round (its client against our simulator);
* its client reports a refused bind as "bind timed out" once
  ``connect_timeout_ms`` has passed, not with the bind_resp's command_status,
  so that test checks only that no bind came of it;
* a deliver_sm its server sends on a bind_receiver session reaches the ESME
  and is answered, but its own future for that answer never completes:
  receipts to our receiver bind are sent without waiting for that future;
* ``window_size`` is not enforced and writes can be truncated under
  backpressure, so traffic stays small and our side keeps its own window.

Every wait is bounded by ``BOUND``; every server, client and task started
here is stopped in a ``finally``.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import pytest
import smpp34

from smsrouter.connectors.carriers import CarrierBinds, build_submit_sm
from smsrouter.connectors.smpp import (
    BindTransceiver,
    BindTransceiverResp,
    CommandStatus,
    DataSm,
    DataSmResp,
    EnquireLink,
    EnquireLinkResp,
    MessageState,
    QuerySm,
    QuerySmResp,
    Role,
    SubmitSm,
    SubmitSmResp,
    Tag,
    set_tlv,
)
from smsrouter.connectors.smpp_link import SmppLink
from smsrouter.router.config import CarrierConfig
from smsrouter.router.messages import Message, Status
from smsrouter.router.store import CarrierReceipt
from smsrouter.sims.carrier import CarrierSimulator
from smsrouter.sms.text import Encoding, decode_short_message, encode_text

BOUND = 5.0
T = TypeVar("T")

# Three parts in GSM 03.38 (153 septets each once the concat UDH is in).
LONG_TEXT = ("Interop with smpp34: part of a long message. " * 9).strip()


async def bounded(aw: Awaitable[T], timeout: float = BOUND) -> T:
    return await asyncio.wait_for(aw, timeout)


async def eventually(predicate: Callable[[], bool], timeout: float = BOUND) -> None:
    """Wait until ``predicate()`` is true, polling; fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def free_port() -> int:
    # smpp34's Server neither takes port 0 nor reports the port it got.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------
# smpp34's SMSC, driven by its event pull API


@dataclass
class Smpp34Smsc:
    """smpp34's server answering every submit_sm and sending receipts back."""

    port: int
    server: Any
    # Receipt stat word and err per submit, in arrival order (default DELIVRD).
    outcomes: dict[int, tuple[str, str]] = field(default_factory=dict)
    sessions: dict[str, Any] = field(default_factory=dict)
    submits: list[Any] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    unbound: list[str] = field(default_factory=list)
    deliver_results: list[int] = field(default_factory=list)
    deliver_errors: list[str] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def serve(self) -> None:
        while True:
            event = await self.server.next()
            if isinstance(event, smpp34.Esme):
                self.sessions[event.session_id] = event
            elif isinstance(event, smpp34.SubmitSmEvent):
                self.submits.append(event)
                message_id = f"rt-{len(self.submits)}"
                self.message_ids.append(message_id)
                event.accept(message_id)
                if event.registered_delivery & 0x03:
                    stat, err = self.outcomes.get(len(self.submits), ("DELIVRD", "000"))
                    self._spawn(self._receipt(event, message_id, stat, err))
            elif isinstance(event, smpp34.Unbound):
                self.unbound.append(event.session_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def receiver(self, submit: Any) -> Any:
        """The session to send a receipt on: the submitter's if it can receive."""
        own = self.sessions[submit.session_id]
        if own.can_receive:
            return own
        return next(s for s in self.sessions.values() if s.can_receive)

    async def _receipt(self, submit: Any, message_id: str, stat: str, err: str) -> None:
        state = {"DELIVRD": MessageState.DELIVERED, "UNDELIV": MessageState.UNDELIVERABLE}[stat]
        text = (
            f"id:{message_id} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} "
            f"submit date:2405011200 done date:2405011201 stat:{stat} err:{err} text:"
        )
        session = self.receiver(submit)
        sent = session.deliver_sm(
            submit.source_addr,
            text.encode("ascii"),
            source_addr=submit.destination_addr,
            source_addr_ton=submit.dest_addr_ton,
            source_addr_npi=submit.dest_addr_npi,
            dest_addr_ton=submit.source_addr_ton,
            dest_addr_npi=submit.source_addr_npi,
            esm_class=0x04,
            tlvs=[
                smpp34.Tlv(smpp34.TLV_RECEIPTED_MESSAGE_ID, message_id.encode() + b"\0"),
                smpp34.Tlv(smpp34.TLV_MESSAGE_STATE, bytes([state])),
            ],
        )
        # On a bind_receiver session smpp34 never completes this future
        # (see the module docstring): the receipt still reaches us.
        try:
            resp = await bounded(sent)
        except TimeoutError:
            return
        except smpp34.SmppError as exc:  # e.g. the session ended first
            self.deliver_errors.append(str(exc))
            return
        self.deliver_results.append(resp.command_status)


@pytest.fixture
async def smpp34_smsc() -> AsyncIterator[Smpp34Smsc]:
    port = free_port()
    server = smpp34.Server("127.0.0.1", port, system_id="rtsmsc")
    await bounded(server.start())
    smsc = Smpp34Smsc(port, server)
    serving = asyncio.get_running_loop().create_task(smsc.serve())
    try:
        yield smsc
    finally:
        serving.cancel()
        for task in list(smsc.tasks):
            task.cancel()
        await asyncio.gather(serving, *smsc.tasks, return_exceptions=True)
        await bounded(server.stop())


class Receipts:
    """The engine's side of CarrierBinds: collects receipts, commits at once."""

    def __init__(self) -> None:
        self.received: list[CarrierReceipt] = []
        self.up: list[str] = []

    def receipt(self, receipt: CarrierReceipt) -> asyncio.Future[None]:
        self.received.append(receipt)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def carrier_up(self, carrier: str) -> None:
        self.up.append(carrier)


def carrier_config(port: int, **overrides: Any) -> CarrierConfig:
    settings: dict[str, Any] = {
        "name": "rt",
        "host": "127.0.0.1",
        "port": port,
        "system_id": "router",
        "password": "secret",
        "window": 4,
        "response_timeout": BOUND,
        "enquire_link_interval": 30.0,
        "reconnect_delay": 0.2,
    }
    settings.update(overrides)
    return CarrierConfig(**settings)


def long_message() -> Message:
    parts = encode_text(LONG_TEXT, encoding=Encoding.GSM7).parts
    return Message(
        id=uuid.uuid4(),
        account_id="acme",
        ingress="http",
        sender="+14155550101",
        recipient="+14155550123",
        body=LONG_TEXT,
        encoding="gsm7",
        data_coding=0,
        parts=len(parts),
        price=Decimal("0.0062") * len(parts),
        created_at=datetime.now(UTC),
    )


def concat_info(submit: Any) -> tuple[str, int, int, int, bytes]:
    """(mode, reference, total, sequence, payload) of one part as the SMSC read it."""
    if submit.esm_class & 0x40:
        # TS 23.040 §9.2.3.24: UDHL, then information elements (IEI, IEIDL, data).
        sm = submit.short_message
        ies, payload = sm[1 : 1 + sm[0]], sm[1 + sm[0] :]
        while ies:
            iei, length, value = ies[0], ies[1], ies[2 : 2 + ies[1]]
            if iei == 0x00:  # §9.2.3.24.1, 8-bit reference
                return "udh8", value[0], value[1], value[2], payload
            if iei == 0x08:  # §9.2.3.24.8, 16-bit reference
                return "udh16", int.from_bytes(value[:2], "big"), value[2], value[3], payload
            ies = ies[2 + length :]
        raise AssertionError(f"no concatenation IE in {sm[: 1 + sm[0]].hex()}")
    tlvs = {t.tag: t for t in submit.tlvs}
    return (
        "sar",
        tlvs[smpp34.TLV_SAR_MSG_REF_NUM].as_int(),
        tlvs[smpp34.TLV_SAR_TOTAL_SEGMENTS].as_int(),
        tlvs[smpp34.TLV_SAR_SEGMENT_SEQNUM].as_int(),
        submit.short_message,
    )


async def bind_carrier(cfg: CarrierConfig, receipts: Receipts) -> CarrierBinds:
    binds = CarrierBinds(cfg)
    binds.start(receipts)
    return binds


# ---------------------------------------------------------------------------
# Our carrier client against smpp34's SMSC


@pytest.mark.parametrize("concatenation", ["udh8", "udh16", "sar"])
async def test_carrier_binds_submit_a_long_message_and_get_its_receipts(
    smpp34_smsc: Smpp34Smsc, concatenation: str
) -> None:
    smsc = smpp34_smsc
    smsc.outcomes[2] = ("UNDELIV", "034")
    receipts = Receipts()
    cfg = carrier_config(smsc.port, concatenation=concatenation)
    binds = await bind_carrier(cfg, receipts)
    try:
        await eventually(lambda: binds.is_up)
        assert receipts.up == ["rt"]
        message = long_message()
        assert message.parts == 3
        ids = [
            await bounded(binds.submit(build_submit_sm(message, part, cfg)))
            for part in range(message.parts)
        ]
        assert ids == smsc.message_ids == ["rt-1", "rt-2", "rt-3"]

        # What the SMSC read is what we meant to send.
        for submit in smsc.submits:
            assert (submit.source_addr, submit.source_addr_ton, submit.source_addr_npi) == (
                "14155550101",
                1,
                1,
            )
            assert (submit.destination_addr, submit.dest_addr_ton, submit.dest_addr_npi) == (
                "14155550123",
                1,
                1,
            )
            assert submit.registered_delivery == 1
            assert submit.data_coding == 0
        info = [concat_info(s) for s in smsc.submits]
        assert {mode for mode, _, _, _, _ in info} == {concatenation}
        assert len({ref for _, ref, _, _, _ in info}) == 1
        assert [(total, seq) for _, _, total, seq, _ in info] == [(3, 1), (3, 2), (3, 3)]
        text = "".join(decode_short_message(0, payload) for _, _, _, _, payload in info)
        assert text == LONG_TEXT

        await eventually(lambda: len(receipts.received) == 3)
        got = {r.carrier_message_id: (r.carrier, r.status, r.error_code) for r in receipts.received}
        assert got == {
            "rt-1": ("rt", Status.DELIVERED, None),
            "rt-2": ("rt", Status.UNDELIVERED, "dlr:034"),
            "rt-3": ("rt", Status.DELIVERED, None),
        }
        await eventually(lambda: len(smsc.deliver_results) == 3)
        assert smsc.deliver_results == [CommandStatus.ESME_ROK] * 3
        assert smsc.deliver_errors == []
    finally:
        await bounded(binds.stop())
    # stop() unbinds (SMPP 3.4 §4.2) rather than just dropping the socket.
    await eventually(lambda: len(smsc.unbound) == 1)
    assert not binds.is_up


async def test_transmitter_and_receiver_binds(smpp34_smsc: Smpp34Smsc) -> None:
    smsc = smpp34_smsc
    receipts = Receipts()
    binds = await bind_carrier(carrier_config(smsc.port, bind="transmitter+receiver"), receipts)
    try:
        await eventually(lambda: binds.is_up and len(smsc.sessions) == 2)
        assert sorted(s.can_receive for s in smsc.sessions.values()) == [False, True]
        pdu = SubmitSm(
            source_addr_ton=3,
            source_addr="12345",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="14155550123",
            registered_delivery=1,
            short_message=b"one part",
        )
        assert await bounded(binds.submit(pdu)) == "rt-1"
        transmitter = smsc.sessions[smsc.submits[0].session_id]
        assert not transmitter.can_receive
        # The receipt arrives on the receiver bind, not the transmitter one.
        await eventually(lambda: len(receipts.received) == 1)
        assert receipts.received[0].carrier_message_id == "rt-1"
        assert receipts.received[0].status is Status.DELIVERED
    finally:
        await bounded(binds.stop())
    await eventually(lambda: len(smsc.unbound) == 2)


async def test_an_esme_link_speaks_the_other_requests_with_smpp34(
    smpp34_smsc: Smpp34Smsc,
) -> None:
    class Ignore:
        def on_request(self, link: SmppLink, pdu: Any) -> None:
            link.send(pdu.response())

        def on_closed(self, link: SmppLink) -> None:
            pass

    loop = asyncio.get_running_loop()
    _, link = await bounded(
        loop.create_connection(
            lambda: SmppLink(Role.ESME, Ignore(), window=4, response_timeout=BOUND),
            "127.0.0.1",
            smpp34_smsc.port,
        )
    )
    try:
        bound = await link.request(
            BindTransceiver(system_id="router", password="x", system_type="SMPP"), timeout=BOUND
        )
        assert isinstance(bound, BindTransceiverResp)
        assert (bound.command_status, bound.system_id) == (CommandStatus.ESME_ROK, "rtsmsc")

        alive = await link.request(EnquireLink(), timeout=BOUND)
        assert isinstance(alive, EnquireLinkResp)
        assert alive.command_status == CommandStatus.ESME_ROK

        # Requests smpp34's Python server does not serve are answered with an
        # error status (and, §4.4.2-style, no body), never left hanging.
        query = await link.request(QuerySm(message_id="rt-1", source_addr="12345"), timeout=BOUND)
        assert isinstance(query, QuerySmResp)
        assert query.command_status != CommandStatus.ESME_ROK
        data = DataSm(destination_addr="14155550123")
        set_tlv(data, Tag.MESSAGE_PAYLOAD, b"payload")
        answer = await link.request(data, timeout=BOUND)
        assert isinstance(answer, DataSmResp)
        assert answer.command_status != CommandStatus.ESME_ROK

        submitted = await link.request(
            SubmitSm(destination_addr="14155550123", short_message=b"hi"), timeout=BOUND
        )
        assert isinstance(submitted, SubmitSmResp)
        assert (submitted.command_status, submitted.message_id) == (0, "rt-1")
        assert smpp34_smsc.submits[0].short_message == b"hi"

        await bounded(link.unbind(timeout=BOUND))
        await bounded(link.closed)
        await eventually(lambda: len(smpp34_smsc.unbound) == 1)
    finally:
        link.close()


# ---------------------------------------------------------------------------
# smpp34's ESME client against our carrier simulator


@pytest.fixture
async def simulator() -> AsyncIterator[CarrierSimulator]:
    sim = CarrierSimulator(system_id="esme", password="secret", receipt_delay=0.05, seed=7)
    await bounded(sim.start("127.0.0.1", 0))
    try:
        yield sim
    finally:
        await bounded(sim.stop())


async def test_smpp34_client_submits_to_our_smsc_and_gets_receipts(
    simulator: CarrierSimulator,
) -> None:
    client = smpp34.Client(
        "127.0.0.1",
        simulator.port,
        "esme",
        "secret",
        bind_type="TRX",
        window_size=4,
        connect_timeout_ms=int(BOUND * 1000),
    )
    try:
        smsc = await bounded(client.connect())
        assert smsc.system_id == "esme"
        texts = [b"first", b"second", "\u00e9t\u00e9".encode("utf-16-be")]
        ids = []
        for i, text in enumerate(texts):
            resp = await bounded(
                smsc.submit_sm(
                    "14155550123",
                    text,
                    source_addr="14155550101",
                    source_addr_ton=1,
                    source_addr_npi=1,
                    dest_addr_ton=1,
                    dest_addr_npi=1,
                    data_coding=8 if i == 2 else 0,
                    registered_delivery=1,
                )
            )
            assert resp.is_success and resp.command_status == CommandStatus.ESME_ROK
            ids.append(resp.message_id)
        assert ids == [s.message_id for s in simulator.submits]
        assert [s.text for s in simulator.submits] == ["first", "second", "\u00e9t\u00e9"]
        assert {s.system_id for s in simulator.submits} == {"esme"}

        for _ in texts:
            event = await bounded(smsc.next())
            assert isinstance(event, smpp34.DeliverSmEvent)
            assert event.esm_class == 0x04
            tlvs = {t.tag: t for t in event.tlvs}
            message_id = tlvs[smpp34.TLV_RECEIPTED_MESSAGE_ID].value.rstrip(b"\0").decode()
            assert message_id in ids
            ids.remove(message_id)
            assert tlvs[smpp34.TLV_MESSAGE_STATE].as_int() == MessageState.DELIVERED
            assert event.short_message.startswith(f"id:{message_id} sub:001".encode())
            assert b"stat:DELIVRD" in event.short_message
            assert (event.source_addr, event.destination_addr) == ("14155550123", "14155550101")
        assert ids == []
        await eventually(lambda: simulator.receipts_sent == 3)

        await bounded(smsc.unbind())
        assert isinstance(await bounded(smsc.next()), smpp34.Disconnected)
    finally:
        await bounded(client.stop())


async def test_smpp34_client_refused_with_a_wrong_password(simulator: CarrierSimulator) -> None:
    client = smpp34.Client(
        "127.0.0.1", simulator.port, "esme", "wrong", bind_type="TRX", connect_timeout_ms=1000
    )
    try:
        # smpp34 reports the refusal as a timeout, not by its command_status.
        with pytest.raises(smpp34.SmppError):
            await bounded(client.connect())
    finally:
        await bounded(client.stop())
    assert simulator.submits == []
