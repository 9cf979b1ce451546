"""The carrier simulator (sims/carrier.py) as a router sees it, over loopback TCP.

Each scenario starts a simulator on 127.0.0.1 port 0 and binds ESMEs built
from `SmppLink` (or, where the order of PDUs on the wire matters, a raw
ESME on the sans-IO session). Randomness is seeded; where time matters the
simulator runs on a manual clock that only the test moves, so no scenario
depends on how fast the machine is. Every wait is bounded by `BOUND`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest

from smsrouter.cli import main as cli_main
from smsrouter.connectors.carriers import canonical_message_id, receipt_of
from smsrouter.connectors.smpp import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CommandStatus,
    DeliverSm,
    GenericNack,
    MessageState,
    Pdu,
    Role,
    Session,
    SubmitSm,
    SubmitSmResp,
    Tag,
    encode,
    get_tlv,
    set_tlv,
)
from smsrouter.connectors.smpp.receipt import parse_receipt
from smsrouter.connectors.smpp_link import SmppLink
from smsrouter.router.messages import Status
from smsrouter.sims.carrier import CarrierSimulator, parse_receipt_forms
from smsrouter.sims.distributions import (
    Exponential,
    Fixed,
    Mix,
    Uniform,
    parse_delay,
    parse_status_mix,
)
from smsrouter.sms.text import concat_info, decode_short_message, split_udh

BOUND = 5.0

T = TypeVar("T")


async def bounded(aw: Awaitable[T], timeout: float = BOUND) -> T:
    async with asyncio.timeout(timeout):
        return await aw


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(BOUND):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


class ManualClock:
    """The simulator's monotonic clock, moved only by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.asynccontextmanager
async def carrier(**options: Any) -> AsyncIterator[CarrierSimulator]:
    sim = CarrierSimulator(system_id="router", password="secret", **options)
    await sim.start()
    try:
        yield sim
    finally:
        await bounded(sim.stop())


class Esme:
    """The router's side of a bind: records every deliver_sm and answers it
    with `answer` (None: never answers)."""

    def __init__(self, answer: int | None = 0) -> None:
        self.answer = answer
        self.deliveries: list[DeliverSm] = []

    def on_request(self, link: SmppLink, pdu: Pdu) -> None:
        if isinstance(pdu, DeliverSm):
            self.deliveries.append(pdu)
            if self.answer is not None:
                link.send(pdu.response(command_status=self.answer))

    def on_closed(self, link: SmppLink) -> None:
        pass

    @property
    def receipts(self) -> list[DeliverSm]:
        return [d for d in self.deliveries if d.esm_class & 0x04]


async def bind(
    sim: CarrierSimulator,
    esme: Esme | None = None,
    *,
    kind: type[Pdu] = BindTransceiver,
    password: str = "secret",
    window: int = 64,
) -> tuple[SmppLink, int]:
    """A connected link and the command_status of its bind_resp."""
    loop = asyncio.get_running_loop()
    _, link = await bounded(
        loop.create_connection(
            lambda: SmppLink(Role.ESME, esme or Esme(), window=window), "127.0.0.1", sim.port
        )
    )
    resp = await bounded(link.request(kind(system_id="router", password=password)))  # type: ignore[call-arg]
    return link, resp.command_status


def submit_sm(
    text: str = "hello", *, to: str = "14155550123", registered_delivery: int = 1
) -> SubmitSm:
    return SubmitSm(
        source_addr_ton=3,
        source_addr_npi=0,
        source_addr="12345",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=to,
        registered_delivery=registered_delivery,
        short_message=text.encode(),
    )


async def submit(link: SmppLink, pdu: SubmitSm | None = None) -> SubmitSmResp:
    resp = await bounded(link.request(pdu or submit_sm()))
    assert isinstance(resp, SubmitSmResp)
    return resp


class RawEsme:
    """An ESME on a plain stream and the sans-IO session: sees PDUs in wire order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.session = Session(Role.ESME)
        self.pdus: list[Pdu] = []

    @classmethod
    async def bound(cls, sim: CarrierSimulator) -> RawEsme:
        esme = cls(*await bounded(asyncio.open_connection("127.0.0.1", sim.port)))
        await esme.send(BindTransceiver(system_id="router", password="secret"))
        (resp,) = await esme.read(1)
        assert resp.command_status == 0
        esme.pdus.clear()
        return esme

    async def send(self, pdu: Pdu) -> None:
        self.writer.write(self.session.send(pdu))
        await bounded(self.writer.drain())

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await bounded(self.writer.drain())

    async def read(self, count: int) -> list[Pdu]:
        """The next `count` PDUs; deliver_sm are answered as they come."""
        while len(self.pdus) < count:
            data = await bounded(self.reader.read(65536))
            assert data, "the simulator closed the connection"
            for pdu in self.session.receive_data(data):
                self.pdus.append(pdu)
                if isinstance(pdu, DeliverSm):
                    self.writer.write(self.session.send(pdu.response()))
        taken, self.pdus = self.pdus[:count], self.pdus[count:]
        return taken

    def close(self) -> None:
        self.writer.close()


def receipt_fields(pdu: DeliverSm) -> tuple[str | None, str | None, int | str | bytes | None]:
    """(id in the text, id in the TLV, message_state TLV) of a receipt."""
    parsed = parse_receipt(pdu.short_message) if pdu.short_message else None
    rid = get_tlv(pdu, Tag.RECEIPTED_MESSAGE_ID)
    return (
        parsed.id if parsed else None,
        rid if isinstance(rid, str) else None,
        get_tlv(pdu, Tag.MESSAGE_STATE),
    )


# ------------------------------------------------------------------ the default carrier


async def test_default_carrier_records_the_submit_and_sends_one_receipt_in_text_and_tlvs() -> None:
    clock = ManualClock()
    async with carrier(clock=clock) as sim:
        esme = Esme()
        link, status = await bind(sim, esme)
        assert status == CommandStatus.ESME_ROK
        resp = await submit(link, submit_sm("Hello there, this is a long text"))
        assert (resp.command_status, resp.message_id) == (0, "1")

        (seen,) = sim.submits
        assert (seen.message_id, seen.system_id) == ("1", "router")
        assert (seen.source_addr, seen.source_addr_ton, seen.source_addr_npi) == ("12345", 3, 0)
        assert (seen.destination_addr, seen.dest_addr_ton) == ("14155550123", 1)
        assert seen.text == "Hello there, this is a long text"
        assert seen.registered_delivery == 1

        await eventually(lambda: sim.stats()["receipts_pending"] == 1, "the receipt queued")
        assert esme.deliveries == []  # due after receipt_delay (0.5 s) of the clock
        clock.advance(0.5)
        await eventually(lambda: sim.receipts_sent == 1, "the receipt and its answer")
        (receipt,) = esme.deliveries
        assert receipt.esm_class == 0x04
        # It travels back: from the handset to the short code.
        assert (receipt.source_addr, receipt.source_addr_ton) == ("14155550123", 1)
        assert (receipt.destination_addr, receipt.dest_addr_ton, receipt.dest_addr_npi) == (
            "12345",
            3,
            0,
        )
        parsed = parse_receipt(receipt.short_message)
        assert parsed is not None
        assert (parsed.id, parsed.stat, parsed.err, parsed.sub, parsed.dlvrd) == (
            "1",
            "DELIVRD",
            "000",
            "001",
            "001",
        )
        assert parsed.text == "Hello there, this is"  # Appendix B: the first 20 characters
        assert len(parsed.submit_date) == len(parsed.done_date) == 10
        assert receipt_fields(receipt)[1:] == ("1", MessageState.DELIVERED)
        assert get_tlv(receipt, Tag.NETWORK_ERROR_CODE) is None
        op = receipt_of("sim", receipt, "hex")
        assert op is not None and (op.carrier_message_id, op.status) == ("1", Status.DELIVERED)
        link.close()


# ------------------------------------------------------------------ throughput limit


async def test_tps_limit_answers_throttled_per_bind_on_the_clock() -> None:
    clock = ManualClock()
    async with carrier(tps=2, clock=clock) as sim:
        a, _ = await bind(sim)
        b, _ = await bind(sim)

        statuses = [(await submit(a, submit_sm(f"a{i}"))).command_status for i in range(3)]
        # A full bucket holds one second of tps: two, then ESME_RTHROTTLED.
        assert statuses == [0, 0, CommandStatus.ESME_RTHROTTLED]
        # The limit is per bind: the other one still has its tokens.
        assert (await submit(b, submit_sm("b0"))).command_status == 0

        clock.advance(0.5)  # one token back on each bind
        statuses = [(await submit(a, submit_sm(f"a{i}"))).command_status for i in range(3, 5)]
        assert statuses == [0, CommandStatus.ESME_RTHROTTLED]

        stats = sim.stats()
        assert stats["errors"] == {"0x00000058": 2}
        assert (stats["submits"], stats["received"]) == (4, 6)
        # A refused submit_sm is not one the carrier accepted.
        assert [s.text for s in sim.submits] == ["a0", "a1", "b0", "a3"]


# ------------------------------------------------------------------ submit_sm_resp


async def test_error_mix_answers_each_status_in_its_weight_and_records_only_accepted() -> None:
    mix = {0x08: 1, 0x0B: 1, 0x58: 1, 0x400: 1, 0: 4}
    async with carrier(errors=mix, seed=7) as sim:
        link, _ = await bind(sim)
        resps = [await submit(link, submit_sm(f"m{i}")) for i in range(200)]
    statuses = Counter(r.command_status for r in resps)
    assert set(statuses) == set(mix)
    # Seeded: the same as drawing from the mix directly, in order.
    rng = random.Random(7)
    draw = Mix(mix)
    assert [r.command_status for r in resps] == [draw.sample(rng) for _ in resps]
    # §4.4.2: no message id with an error.
    assert all(r.message_id == "" for r in resps if r.command_status)
    assert len(sim.submits) == statuses[0] == sim.stats()["submits"]
    assert sim.stats()["errors"] == {f"0x{s:08X}": n for s, n in sorted(statuses.items()) if s != 0}


async def test_resp_latency_holds_each_submit_sm_resp_for_its_drawn_delay() -> None:
    clock = ManualClock()
    async with carrier(resp_latency="1-2", seed=3, clock=clock) as sim:
        link, _ = await bind(sim)
        answers = [asyncio.create_task(submit(link, submit_sm(f"m{i}"))) for i in range(5)]
        await eventually(lambda: sim.stats()["responses_pending"] == 5, "5 answers held")
        assert sim.received == 5
        assert not any(t.done() for t in answers)
        clock.advance(0.999)  # a uniform 1-2 s delay: none is due yet
        await eventually(lambda: sim.stats()["ticks"] >= 3, "the wheel to turn")
        assert sim.stats()["responses_pending"] == 5
        clock.advance(1.001)
        resps = await bounded(asyncio.gather(*answers))
    assert sorted(r.message_id for r in resps) == ["1", "2", "3", "4", "5"]


# ------------------------------------------------------------------ receipts


async def test_receipt_delay_and_status_mix_with_field_stat_words_and_err_codes() -> None:
    clock = ManualClock()
    words = {"DELIVERED": 1, "UNDELIV:034": 1, "EXPIRD": 1, "FAILED": 1, "REJECTD": 1}
    async with carrier(receipts=words, receipt_delay="exp:10", seed=11, clock=clock) as sim:
        esme = Esme()
        link, _ = await bind(sim, esme)
        ids = [(await submit(link, submit_sm(f"m{i}"))).message_id for i in range(40)]
        # registered_delivery 2 (§5.2.17): a receipt only when delivery failed.
        failures_only = [
            (await submit(link, submit_sm(f"f{i}", registered_delivery=2))).message_id
            for i in range(10)
        ]
        clock.advance(1000)  # past every exponential draw
        await eventually(lambda: sim.stats()["receipts_pending"] == 0, "every receipt answered")
    by_id = {}
    for pdu in esme.receipts:
        parsed = parse_receipt(pdu.short_message)
        assert parsed is not None
        by_id[parsed.id] = (parsed.stat, parsed.err, get_tlv(pdu, Tag.MESSAGE_STATE), pdu)
    assert set(ids) <= set(by_id)
    stats = {stat for stat, *_ in by_id.values()}
    assert stats == {"DELIVERED", "UNDELIV", "EXPIRD", "FAILED", "REJECTD"}
    expected_state = {
        "DELIVERED": MessageState.DELIVERED,
        "UNDELIV": MessageState.UNDELIVERABLE,
        "EXPIRD": MessageState.EXPIRED,
        "FAILED": MessageState.UNDELIVERABLE,
        "REJECTD": MessageState.REJECTED,
    }
    expected_status = {
        "DELIVERED": Status.DELIVERED,
        "UNDELIV": Status.UNDELIVERED,
        "EXPIRD": Status.EXPIRED,
        "FAILED": Status.UNDELIVERED,
        "REJECTD": Status.REJECTED,
    }
    for message_id, (stat, err, state, pdu) in by_id.items():
        assert state == expected_state[stat], stat
        assert err == ("034" if stat == "UNDELIV" else "000" if stat == "DELIVERED" else "001")
        op = receipt_of("sim", pdu, "hex")
        assert op is not None
        assert (op.carrier_message_id, op.status) == (
            str(int(message_id, 16)),
            expected_status[stat],
        )
        if stat == "UNDELIV":
            # §5.3.2.31: GSM network, error 34.
            assert get_tlv(pdu, Tag.NETWORK_ERROR_CODE) == b"\x03\x00\x22"
            assert op.error_code == "dlr:034"
    failed = [i for i in failures_only if i in by_id]
    assert failed and all(by_id[i][0] != "DELIVERED" for i in failed)
    assert len(by_id) == 40 + len(failed) == sim.receipts_sent


async def test_decimal_ids_with_receipts_in_hex_match_by_value() -> None:
    async with carrier(id_format="decimal", receipt_id_format="hex", receipt_delay=0) as sim:
        esme = Esme()
        link, _ = await bind(sim, esme)
        ids = [(await submit(link, submit_sm(f"m{i}"))).message_id for i in range(12)]
        assert ids == [str(n) for n in range(1, 13)]
        await eventually(lambda: len(esme.receipts) == 12, "12 receipts")
    receipted = sorted(
        (receipt_fields(r) for r in esme.receipts), key=lambda f: int(f[1] or "", 16)
    )
    assert [f[0] for f in receipted] == [f"{n:x}" for n in range(1, 13)]
    assert [f[1] for f in receipted] == [f"{n:x}" for n in range(1, 13)]
    # What the router does with a carrier configured this way.
    assert {canonical_message_id(f[1] or "", "hex") for f in receipted} == {
        canonical_message_id(i, "decimal") for i in ids
    }


async def test_receipts_overtake_their_submit_sm_resp_with_the_configured_probability() -> None:
    async with carrier(receipt_first=1.0, receipt_delay=60) as sim:
        esme = await RawEsme.bound(sim)
        try:
            for i in range(3):
                await esme.send(submit_sm(f"m{i}"))
                receipt, resp = await esme.read(2)
                assert isinstance(receipt, DeliverSm) and isinstance(resp, SubmitSmResp)
                assert receipt_fields(receipt)[:2] == (resp.message_id, resp.message_id)
        finally:
            esme.close()

    async with carrier(receipt_first=0.3, receipt_delay=0, seed=5) as sim:
        esme = await RawEsme.bound(sim)
        try:
            for i in range(30):
                await esme.send(submit_sm(f"m{i}"))
            pdus = await esme.read(60)
        finally:
            esme.close()
    first = 0
    answered: set[str] = set()
    for pdu in pdus:
        if isinstance(pdu, SubmitSmResp):
            answered.add(pdu.message_id)
        elif isinstance(pdu, DeliverSm) and receipt_fields(pdu)[1] not in answered:
            first += 1
    rng = random.Random(5)
    assert first == sum(rng.random() < 0.3 for _ in range(30))
    assert 0 < first < 30


async def test_receipt_forms_text_only_tlv_only_or_both() -> None:
    assert parse_receipt_forms("mixed") == {"text": 1.0, "tlv": 1.0, "both": 1.0}
    async with carrier(receipt_forms=parse_receipt_forms("mixed"), receipt_delay=0, seed=2) as sim:
        esme = Esme()
        link, _ = await bind(sim, esme)
        for i in range(30):
            await submit(link, submit_sm(f"m{i}"))
        await eventually(lambda: len(esme.receipts) == 30, "30 receipts")
    forms: Counter[str] = Counter()
    for pdu in esme.receipts:
        text_id, tlv_id, state = receipt_fields(pdu)
        if text_id and tlv_id:
            forms["both"] += 1
        elif text_id:
            assert pdu.tlvs == {}
            forms["text"] += 1
        else:
            assert pdu.short_message == b"" and state == MessageState.DELIVERED
            forms["tlv"] += 1
        op = receipt_of("sim", pdu, "hex")  # the router reads each form
        assert op is not None and op.status == Status.DELIVERED
    assert set(forms) == {"text", "tlv", "both"}


async def test_receipts_wait_for_a_receiver_and_are_retried_when_refused() -> None:
    clock = ManualClock()
    async with carrier(receipt_delay=0, clock=clock) as sim:
        tx, _ = await bind(sim, kind=BindTransmitter)
        for i in range(3):
            await submit(tx, submit_sm(f"m{i}"))
        await eventually(lambda: sim.stats()["receipts_pending"] == 3, "3 receipts waiting")

        # A receiver that cannot store them yet (ESME_RX_T_APPN, §5.1.3).
        refusing = Esme(answer=CommandStatus.ESME_RX_T_APPN)
        rx, _ = await bind(sim, refusing, kind=BindReceiver)
        await eventually(lambda: len(refusing.deliveries) == 3, "3 receipts offered")
        await eventually(lambda: sim.stats()["receipts_refused"] == {"0x00000064": 3}, "refusals")
        assert sim.receipts_sent == 0

        refusing.answer = 0
        clock.advance(1.0)  # RECEIPT_RETRY_DELAY
        await eventually(lambda: sim.receipts_sent == 3, "the receipts taken on retry")
        assert len(refusing.deliveries) == 6
        assert {receipt_fields(r)[1] for r in refusing.deliveries} == {"1", "2", "3"}
        tx.close()
        rx.close()


async def test_unanswered_receipts_are_sent_again_then_given_up_after_their_ttl() -> None:
    clock = ManualClock()
    options = {"receipt_delay": 0, "response_timeout": 30, "receipt_ttl": 100, "clock": clock}
    async with carrier(**options) as sim:
        silent = Esme(answer=None)
        link, _ = await bind(sim, silent)
        await submit(link)
        await eventually(lambda: len(silent.deliveries) == 1, "the receipt")
        clock.advance(30)  # response_timeout: the SMSC tries again
        await eventually(lambda: len(silent.deliveries) == 2, "the receipt again")
        assert [receipt_fields(d)[1] for d in silent.deliveries] == ["1", "1"]
        assert silent.deliveries[0].sequence_number != silent.deliveries[1].sequence_number

        link.close()  # unanswered: back in the queue, nobody to take it
        await eventually(lambda: sim.stats()["binds"] == {}, "the bind gone")
        assert sim.stats()["receipts_pending"] == 1
        clock.advance(100)  # receipt_ttl
        await eventually(lambda: sim.receipts_dropped == 1, "the receipt given up")
        assert sim.stats()["receipts_pending"] == 0 and sim.receipts_sent == 0


# ------------------------------------------------------------------ outages


async def test_drop_then_refuse_binds_for_a_while() -> None:
    clock = ManualClock()
    async with carrier(clock=clock) as sim:
        link, _ = await bind(sim)
        other, _ = await bind(sim)
        assert sim.drop_binds() == 2
        await bounded(link.closed)
        await bounded(other.closed)

        sim.refuse_binds(30)
        refused, status = await bind(sim)
        assert status == CommandStatus.ESME_RBINDFAIL
        refused.close()
        clock.advance(29.9)
        refused, status = await bind(sim)
        assert status == CommandStatus.ESME_RBINDFAIL
        refused.close()

        clock.advance(0.1)
        link, status = await bind(sim)
        assert status == CommandStatus.ESME_ROK
        assert (await submit(link)).command_status == 0
        link.close()


async def test_stall_stops_reading_so_the_peers_window_fills() -> None:
    clock = ManualClock()
    async with carrier(clock=clock, receipt_delay=60) as sim:
        link, _ = await bind(sim, window=4)
        sim.stall(30)
        sent = [asyncio.create_task(submit(link, submit_sm(f"m{i}"))) for i in range(6)]
        await eventually(lambda: link.outstanding == 4, "the window full")
        # Nothing read: not answered, not even counted.
        await asyncio.sleep(0.1)
        assert sim.received == 0
        assert not any(t.done() for t in sent)

        clock.advance(30)
        resps = await bounded(asyncio.gather(*sent))
        assert [r.command_status for r in resps] == [0] * 6
        assert sim.received == 6
        link.close()


# ------------------------------------------------------------------ MO


async def test_mo_plain_keyword_and_multipart_reach_a_receiving_bind() -> None:
    async with carrier() as sim:
        tx, _ = await bind(sim, kind=BindTransmitter)
        with pytest.raises(LookupError):
            await sim.send_mo("+14155550123", "12345", "STOP")  # a transmitter receives nothing

        esme = Esme()
        rx, _ = await bind(sim, esme, kind=BindReceiver)
        assert await bounded(sim.send_mo("+14155550123", "12345", "STOP")) == [0]
        (stop,) = esme.deliveries
        assert stop.esm_class == 0  # §5.2.12: a message, not a receipt
        assert (stop.source_addr, stop.source_addr_ton, stop.source_addr_npi) == (
            "14155550123",
            1,
            1,
        )
        assert (stop.destination_addr, stop.dest_addr_ton) == ("12345", 3)
        assert decode_short_message(stop.data_coding, stop.short_message) == "STOP"

        long_text = "Reply HELP for help. " * 12  # 252 GSM characters: two parts
        assert await bounded(sim.send_mo("+14155550123", "+14155550101", long_text, ref=77)) == [
            0,
            0,
        ]
        parts = esme.deliveries[1:]
        assert len(parts) == 2
        text = ""
        for seq, part in enumerate(parts, 1):
            assert part.esm_class == 0x40  # UDHI
            ies, payload = split_udh(part.short_message)
            concat = concat_info(ies)
            assert concat is not None
            assert (concat.ref, concat.total, concat.seq) == (77, 2, seq)
            assert ies[0][0] == 0x00  # the 8-bit reference element (TS 23.040 §9.2.3.24.1)
            text += decode_short_message(part.data_coding, payload)
        assert text == long_text
        assert parts[0].destination_addr == "14155550101" and parts[0].dest_addr_ton == 1

        assert await bounded(sim.send_mo("+14155550123", "12345", "Arrêt ⚠")) == [0]
        assert esme.deliveries[-1].data_coding == 8  # UCS-2 when GSM 03.38 cannot carry it
        assert sim.stats()["mo_sent"] == 4
        tx.close()
        rx.close()


# ------------------------------------------------------------------ records


async def test_records_count_duplicates_by_content_or_by_the_senders_reference() -> None:
    def with_ref(text: str, ref: int) -> SubmitSm:
        pdu = submit_sm(text)
        set_tlv(pdu, Tag.USER_MESSAGE_REFERENCE, ref)
        return pdu

    for record in ("full", "count"):
        async with carrier(record=record, receipt_delay=0) as sim:
            link, _ = await bind(sim)
            await submit(link, submit_sm("hello"))
            await submit(link, submit_sm("hello"))  # the same again: a duplicate
            await submit(link, submit_sm("hello", to="14155550124"))
            await submit(link, with_ref("hi", 1))
            await submit(link, with_ref("hi", 2))  # same words, another message
            await submit(link, with_ref("hi", 2))  # that message again
            stats = sim.stats()
            assert (stats["submits"], stats["unique"], stats["duplicates"]) == (6, 4, 2)
            assert stats["message_ids"] == 6
            assert len(sim.submits) == (6 if record == "full" else 0)
            await eventually(lambda: sim.receipts_sent == 6, "the receipts")

            sim.reset()
            stats = sim.stats()
            assert (stats["submits"], stats["duplicates"], stats["receipts_sent"]) == (0, 0, 0)
            assert sim.submits == []
            await submit(link, submit_sm("hello"))  # forgotten: not a duplicate any more
            assert sim.stats()["duplicates"] == 0
            link.close()


async def test_malformed_submit_sm_is_answered_by_the_session() -> None:
    async with carrier() as sim:
        esme = await RawEsme.bound(sim)
        try:
            # source_addr of 25 digits: longer than §4.4.1's 21 octets.
            body = b"\0\x01\x01" + b"9" * 25 + b"\0\x01\x0114155550123\0\0\0\0\0\0\x01\0\0\0\x02hi"
            bad = struct.pack(">IIII", 16 + len(body), 4, 0, 7) + body
            good = encode(SubmitSm(sequence_number=8, destination_addr="14155550123"))
            await esme.send_raw(bad)
            (resp,) = await esme.read(1)
            assert isinstance(resp, SubmitSmResp)
            assert (resp.sequence_number, resp.command_status) == (7, CommandStatus.ESME_RINVSRCADR)
            await esme.send_raw(good)
            (resp,) = await esme.read(1)
            assert isinstance(resp, SubmitSmResp)
            assert (resp.command_status, resp.message_id) == (0, "1")
            # A command_length below a header loses framing: generic_nack, then EOF (§4.3.1).
            await esme.send_raw(struct.pack(">IIII", 8, 4, 0, 9))
            (nack,) = await esme.read(1)
            assert isinstance(nack, GenericNack)
            assert nack.command_status == CommandStatus.ESME_RINVCMDLEN
            assert await bounded(esme.reader.read()) == b""
        finally:
            esme.close()
        assert len(sim.submits) == 1


# ------------------------------------------------------------------ control API


async def test_control_api_over_http() -> None:
    clock = ManualClock()
    async with carrier(control_port=0, clock=clock, receipt_delay=0) as sim:
        assert sim.control is not None
        url = sim.control.url
        esme = Esme()
        link, _ = await bind(sim, esme)
        for text in ("one", "two", "two"):
            await submit(link, submit_sm(text))
        timeout = aiohttp.ClientTimeout(total=BOUND)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def call(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
                async with http.request(method, url + path, **kwargs) as r:
                    return r.status, await r.json(content_type=None)

            await eventually(lambda: sim.receipts_sent == 3, "3 receipts")
            status, stats = await call("GET", "/stats")
            assert status == 200
            assert (stats["submits"], stats["unique"], stats["duplicates"]) == (3, 2, 1)
            assert stats["receipts_sent"] == 3
            assert stats["binds"] == {"router": 1}

            status, body = await call(
                "POST", "/mo", json={"from": "+14155550123", "to": "12345", "text": "HELP"}
            )
            assert (status, body) == (200, {"parts": 1, "statuses": [0]})
            mo = esme.deliveries[-1]
            assert (mo.esm_class, mo.short_message) == (0, b"HELP")
            status, body = await call("POST", "/mo", json={"from": "+14155550123"})
            assert status == 422 and "to" in body["detail"]
            status, _ = await call("POST", "/mo", data=b"{not json")
            assert status == 400

            status, body = await call("POST", "/outage/stall?seconds=5")
            assert (status, body) == (200, {"stalled_for": 5.0})
            assert sim.stats()["stalled_for"] == 5.0
            status, _ = await call("POST", "/outage/stall?seconds=0")
            assert status == 200 and not sim.stalled
            status, _ = await call("POST", "/outage/stall")
            assert status == 400

            status, body = await call("POST", "/outage/drop")
            assert (status, body) == (200, {"dropped": 1})
            await bounded(link.closed)
            status, body = await call(
                "POST", "/mo", json={"from": "+14155550123", "to": "12345", "text": "STOP"}
            )
            assert status == 409  # nobody bound to receive it

            status, _ = await call("POST", "/outage/refuse?seconds=10")
            assert status == 200
            refused, bind_status = await bind(sim)
            assert bind_status == CommandStatus.ESME_RBINDFAIL
            refused.close()

            status, _ = await call("POST", "/reset")
            assert status == 200
            status, stats = await call("GET", "/stats")
            assert (stats["submits"], stats["refusing_binds_for"]) == (0, 0.0)
            link, bind_status = await bind(sim)  # the reset ended the refusal
            assert bind_status == CommandStatus.ESME_ROK
            link.close()


# ------------------------------------------------------------------ knobs from text


def test_delay_and_mix_text_forms() -> None:
    assert parse_delay("0.5") == Fixed(0.5) and parse_delay(0) == Fixed(0.0)
    assert parse_delay("0.1-0.5") == Uniform(0.1, 0.5)
    assert parse_delay("exp:0.2") == Exponential(0.2)
    for bad in ("fast", "-1", "0.5-0.1", "exp:0"):
        with pytest.raises(ValueError):
            parse_delay(bad)
    assert parse_status_mix("0x58=1,0x0B=1,0=98") == {0x58: 1.0, 0x0B: 1.0, 0: 98.0}
    rng = random.Random(1)
    draws = Counter(Mix({"a": 3, "b": 1}).sample(rng) for _ in range(4000))
    assert 2700 < draws["a"] < 3300  # 3:1, far from any seeded edge
    assert Mix({"only": 1}).sample(rng) == "only"


def test_cli_refuses_bad_knobs_before_listening(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["sim", "carrier", "--errors", "0x58=1,nope=2"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli_main(["sim", "carrier", "--receipt-delay", "soon"]) == 2
    assert cli_main(["sim", "carrier", "--receipt-form", "html"]) == 2
