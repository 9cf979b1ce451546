"""The delivery engine with real parts: PostgreSQL, carrier binds over TCP,
a carrier simulator, and a test SMSC that answers with chosen statuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from smsrouter.connectors.carriers import CarrierPool
from smsrouter.connectors.smpp import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CommandStatus,
    Pdu,
    Role,
    SubmitSm,
)
from smsrouter.connectors.smpp_link import SmppLink
from smsrouter.router import store
from smsrouter.router.config import CarrierConfig
from smsrouter.router.engine import HELD_ACCOUNT_RETRY, DeliveryEngine
from smsrouter.router.messages import Message, new_message_id
from smsrouter.router.routes import Candidate, RouteTable
from smsrouter.router.senders import RateDefaults, SenderRates
from smsrouter.router.store import GroupCommit, InsertMessage
from smsrouter.sims.carrier import CarrierSimulator


@dataclass
class StatusSmsc:
    """An SMSC that answers every submit_sm with one command_status."""

    status: int
    submits: list[SubmitSm] = field(default_factory=list)

    def on_request(self, link: SmppLink, pdu: Pdu) -> None:
        if isinstance(pdu, BindTransmitter | BindReceiver | BindTransceiver):
            link.send(pdu.response(system_id="status-smsc"))
        elif isinstance(pdu, SubmitSm):
            self.submits.append(pdu)
            ok = self.status == CommandStatus.ESME_ROK
            link.send(
                pdu.response(
                    command_status=self.status, message_id=f"s{len(self.submits)}" if ok else ""
                )
            )
        elif hasattr(pdu, "response"):
            link.send(pdu.response())  # type: ignore[attr-defined]

    def on_closed(self, link: SmppLink) -> None:
        pass


async def _serve(handler: StatusSmsc) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: SmppLink(Role.SMSC, handler), "127.0.0.1", 0)


@dataclass
class Rig:
    engine: DeliveryEngine
    writer: GroupCommit
    pool: CarrierPool
    sim: CarrierSimulator
    bad: StatusSmsc
    db: asyncpg.Pool

    async def send(self, to: str = "+14155550123", **kw: object) -> Message:
        message = Message(
            id=new_message_id(), account_id="acc", ingress="http", sender="12345",
            recipient=to, body="hello", encoding="gsm7", data_coding=0, parts=1,
            price=Decimal("0.01"), created_at=datetime.now(UTC), **kw,  # type: ignore[arg-type]
        )  # fmt: skip
        await self.writer.run(InsertMessage([message]))
        self.engine.enqueue(message)
        return message

    async def status_of(self, message: Message, until: set[str]) -> dict:
        """The message's status as the API reads it, once it is one of `until`."""
        for _ in range(200):
            row = await store.get_message(self.db, message.id, message.account_id)
            assert row is not None
            if row["status"] in until:
                return row
            await asyncio.sleep(0.05)
        raise AssertionError(f"message stayed {row['status']}")


@pytest.fixture
async def rig(db_pool: asyncpg.Pool) -> AsyncIterator[Rig]:
    sim = CarrierSimulator(receipt_delay=0.01)
    await sim.start()
    bad = StatusSmsc(CommandStatus.ESME_RSYSERR)
    bad_server = await _serve(bad)
    carriers = [
        CarrierConfig(name="cheap", port=bad_server.sockets[0].getsockname()[1]),
        CarrierConfig(name="good", port=sim.port),
    ]
    writer = GroupCommit(db_pool)
    writer.start()
    pool = CarrierPool(carriers)
    engine = DeliveryEngine(
        writer=writer,
        carriers=pool,
        routes=RouteTable(
            [
                ("1", [Candidate("cheap", Decimal("0.001")), Candidate("good", Decimal("0.002"))]),
                ("44", [Candidate("cheap", Decimal("0.001"))]),
            ]
        ),
        rates=SenderRates(RateDefaults(short_code=1000), {}, {}),
        max_per_sender=1000,
    )
    pool.start(engine)
    engine.start()
    for _ in range(100):
        if pool.is_available("cheap") and pool.is_available("good"):
            break
        await asyncio.sleep(0.05)
    yield Rig(engine, writer, pool, sim, bad, db_pool)
    await engine.stop(1)
    await pool.stop()
    await writer.stop()
    bad_server.close()
    await sim.stop()


async def test_temporary_error_fails_over_to_the_next_carrier(rig: Rig) -> None:
    message = await rig.send()
    row = await rig.status_of(message, {"delivered"})
    assert row["carrier"] == "good"
    assert len(rig.bad.submits) == 1 and len(rig.sim.submits) == 1
    events = await rig.db.fetch(
        "SELECT status, detail FROM message_events WHERE message_id = $1", message.id
    )
    assert [(e["status"], e["detail"]) for e in events] == [
        ("retrying", "cheap smpp:0x00000008 → good")
    ]


async def test_breaker_opens_and_traffic_skips_the_sick_carrier(rig: Rig) -> None:
    threshold = rig.engine.health.failure_threshold
    for _ in range(threshold):
        await rig.status_of(await rig.send(), {"delivered"})
    assert not rig.engine.health.allows("cheap")
    before = len(rig.bad.submits)
    await rig.status_of(await rig.send(), {"delivered"})
    assert len(rig.bad.submits) == before, "an open breaker takes no traffic"


async def test_permanent_error_ends_the_message(rig: Rig) -> None:
    rig.bad.status = CommandStatus.ESME_RINVDSTADR
    message = await rig.send()
    row = await rig.status_of(message, {"failed"})
    assert (row["error_code"], row["carrier"]) == ("smpp:0x0000000B", "cheap")
    assert rig.sim.submits == []


async def test_all_candidates_failing_temporarily_retries_later(rig: Rig) -> None:
    # +44 is routed to the sick carrier alone: the message waits, then goes
    # once the carrier recovers.
    message = await rig.send("+447700900123")
    for _ in range(100):
        if rig.bad.submits:
            break
        await asyncio.sleep(0.05)
    rig.bad.status = CommandStatus.ESME_ROK
    row = await rig.status_of(message, {"sent"})
    assert row["carrier"] == "cheap"
    assert len(rig.bad.submits) >= 2


async def test_expired_validity_ends_as_expired_without_a_carrier(rig: Rig) -> None:
    message = await rig.send(valid_until=datetime.now(UTC) - timedelta(seconds=1))
    row = await rig.status_of(message, {"expired"})
    assert row["error_code"] == "validity_expired"
    assert rig.bad.submits == [] and rig.sim.submits == []


async def test_no_route_is_rejected(rig: Rig) -> None:
    message = await rig.send("+33612345678")
    row = await rig.status_of(message, {"rejected"})
    assert row["error_code"] == "no_route"


async def test_scheduled_message_waits_for_its_time(rig: Rig) -> None:
    send_at = datetime.now(UTC) + timedelta(seconds=1.5)
    message = await rig.send(send_at=send_at)
    assert rig.engine.scheduled == 1
    assert rig.engine.scheduler.queued_parts == 0, "no sender-queue room taken before its time"
    row = await rig.status_of(message, {"delivered"})
    assert row["carrier"] == "good"
    (submit,) = [s for s in rig.sim.submits]
    assert submit.at >= send_at
    assert rig.engine.scheduled == 0


async def test_parts_of_one_concatenated_message_stay_on_one_carrier(rig: Rig) -> None:
    # "cheap" fails temporarily, so the first part goes to "good"; once
    # "cheap" recovers it is the cheaper one again, but the second part
    # must follow the first to "good", where the handset's SMSC holds it.
    group = ("12345", "+14155550123", 7, 2)
    first = await rig.send(concat_group=group)
    await rig.status_of(first, {"delivered"})
    rig.bad.status = CommandStatus.ESME_ROK
    second = await rig.send(concat_group=group)
    other = await rig.send()  # not a part: the cheap carrier takes it
    assert (await rig.status_of(second, {"sent", "delivered"}))["carrier"] == "good"
    assert (await rig.status_of(other, {"sent"}))["carrier"] == "cheap"


async def test_a_held_accounts_messages_wait_for_the_unlock_or_expire(rig: Rig) -> None:
    # CONTRACT §6 "Account state": a locked account's queued messages are
    # held until it is unlocked, or until they expire.
    locked = {"acc": True}
    rig.engine.account_held = lambda account_id: locked.get(account_id, False)
    waiting = await rig.send()
    expiring = await rig.send(valid_until=datetime.now(UTC) + timedelta(seconds=1))
    await asyncio.sleep(2 * HELD_ACCOUNT_RETRY + 0.5)
    assert rig.sim.submits == [] and rig.bad.submits == []
    assert (await rig.status_of(waiting, {"accepted", "queued"}))["status"] in (
        "accepted",
        "queued",
    )
    row = await rig.status_of(expiring, {"expired"})
    assert row["error_code"] == "validity_expired"
    locked["acc"] = False
    assert (await rig.status_of(waiting, {"delivered"}))["carrier"] == "good"
