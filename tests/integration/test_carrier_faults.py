"""Our carrier side against a carrier that misbehaves the ways carriers do:
throttling, receipts before the submit_sm_resp, ids in two bases, and
long messages taken whole in message_payload."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from smsrouter.connectors.carriers import CarrierPool
from smsrouter.connectors.smpp import Tag, get_tlv
from smsrouter.router.config import CarrierConfig
from smsrouter.router.engine import DeliveryEngine
from smsrouter.router.messages import Message, new_message_id
from smsrouter.router.routes import Candidate, RouteTable
from smsrouter.router.senders import RateDefaults, SenderRates
from smsrouter.router.store import GroupCommit, InsertMessage
from smsrouter.sims.carrier import CarrierSimulator
from smsrouter.sms.text import decode_short_message, encode_text


@asynccontextmanager
async def _router(
    db: asyncpg.Pool, sim: CarrierSimulator, **carrier: Any
) -> AsyncIterator[Callable[..., Any]]:
    """An engine with one carrier (the simulator); yields send(text) → Message."""
    writer = GroupCommit(db)
    writer.start()
    pool = CarrierPool(
        [CarrierConfig(name="sim", port=sim.port, **carrier)],
    )
    engine = DeliveryEngine(
        writer=writer,
        carriers=pool,
        routes=RouteTable([("1", [Candidate("sim", Decimal("0.001"))])]),
        rates=SenderRates(RateDefaults(short_code=10_000), {}, {}),
        max_per_sender=10_000,
    )
    pool.start(engine)
    engine.start()

    async def send(text: str = "hello", n: int = 0) -> Message:
        encoded = encode_text(text)
        message = Message(
            id=new_message_id(), account_id="acc", ingress="http", sender="12345",
            recipient=f"+1415555{n:04d}", body=text, encoding=str(encoded.encoding),
            data_coding=encoded.data_coding, parts=encoded.part_count, price=Decimal("0.01"),
            created_at=datetime.now(UTC),
        )  # fmt: skip
        await writer.run(InsertMessage([message]))
        engine.enqueue(message)
        return message

    try:
        yield send
    finally:
        await engine.stop(1)
        await pool.stop()
        await writer.stop()


async def _statuses(db: asyncpg.Pool, messages: list[Message], want: str) -> list[str]:
    ids = [m.id for m in messages]
    for _ in range(300):
        rows = await db.fetch("SELECT status FROM messages WHERE id = ANY($1::uuid[])", ids)
        if all(r["status"] == want for r in rows):
            break
        await asyncio.sleep(0.05)
    return [r["status"] for r in rows]


async def test_throttled_binds_pause_and_every_message_gets_through(db_pool: asyncpg.Pool) -> None:
    sim = CarrierSimulator(receipt_delay=0.01, tps=50, seed=3)
    await sim.start()
    try:
        async with _router(db_pool, sim, throttle_pause=0.2, window=32) as send:
            messages = [await send(f"throttled {i}", i) for i in range(120)]
            statuses = await _statuses(db_pool, messages, "delivered")
        assert statuses == ["delivered"] * 120
        assert sim.stats()["errors"].get("0x00000058", 0) > 0, "the carrier never throttled"
        assert sorted(s.text for s in sim.submits) == sorted(f"throttled {i}" for i in range(120))
    finally:
        await sim.stop()


async def test_receipts_before_their_submit_sm_resp_are_matched(db_pool: asyncpg.Pool) -> None:
    sim = CarrierSimulator(receipt_delay=0.0, receipt_first=1.0, resp_latency=0.05, seed=4)
    await sim.start()
    try:
        async with _router(db_pool, sim) as send:
            messages = [await send(f"early {i}", i) for i in range(20)]
            statuses = await _statuses(db_pool, messages, "delivered")
        assert statuses == ["delivered"] * 20
    finally:
        await sim.stop()


async def test_hex_answers_and_decimal_receipts_meet(db_pool: asyncpg.Pool) -> None:
    sim = CarrierSimulator(receipt_delay=0.01, id_format="hex", receipt_id_format="decimal")
    await sim.start()
    try:
        async with _router(
            db_pool, sim, message_id_format="hex", receipt_id_format="decimal"
        ) as send:
            messages = [await send(f"ids {i}", i) for i in range(30)]
            statuses = await _statuses(db_pool, messages, "delivered")
        assert statuses == ["delivered"] * 30
    finally:
        await sim.stop()


async def test_payload_carriers_take_a_long_message_in_one_submit(db_pool: asyncpg.Pool) -> None:
    sim = CarrierSimulator(receipt_delay=0.01)
    await sim.start()
    text = "Long message for a carrier that cuts it itself. " * 8  # 3 GSM parts
    try:
        async with _router(db_pool, sim, concatenation="payload") as send:
            message = await send(text)
            assert message.parts == 3
            statuses = await _statuses(db_pool, [message], "delivered")
        assert statuses == ["delivered"]
        (submit,) = list(sim.submits)
        assert submit.short_message == b""
        payload = get_tlv(submit.pdu, Tag.MESSAGE_PAYLOAD)
        assert isinstance(payload, bytes) and decode_short_message(0, payload) == text
        rows = await db_pool.fetch(
            "SELECT part, carrier_message_id, status FROM carrier_submits"
            " WHERE message_id = $1 ORDER BY part",
            message.id,
        )
        assert [r["part"] for r in rows] == [0, 1, 2]
        assert len({r["carrier_message_id"] for r in rows}) == 1
        assert {r["status"] for r in rows} == {"delivered"}
    finally:
        await sim.stop()
