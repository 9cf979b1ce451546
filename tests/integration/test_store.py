"""The store against a real PostgreSQL: group commit, receipts, outbox."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from smsrouter.router import store
from smsrouter.router.messages import Message, Status, new_message_id
from smsrouter.router.notifications import SMPP_RECEIPT, WEBHOOK, OutboxPlanner
from smsrouter.router.store import (
    BatchSettled,
    CarrierReceipt,
    CommitListeners,
    GroupCommit,
    InsertMessage,
    MessageEnded,
    NewNotification,
    OutboxDone,
    PartSent,
    StoreError,
    final_of_parts,
    notices,
    writes,
)
from smsrouter.router.store.operations import HeldReceiptsTried, RetryHeldReceipts
from tests.tools import kept_notifications


def _message(n: int = 0, *, parts: int = 1, ingress: str = "http", **kw: object) -> Message:
    return Message(
        id=new_message_id(),
        account_id="acc",
        ingress=ingress,
        sender="+14155550101",
        recipient=f"+1415555{n:04d}",
        body=f"text {n}",
        encoding="gsm7",
        data_coding=0,
        parts=parts,
        price=Decimal("0.0062") * parts,
        created_at=datetime.now(UTC),
        **kw,  # type: ignore[arg-type]
    )


class Heard:
    """A commit listener that keeps the notifications it is told of and
    calls `on_settled` as each flush settles."""

    def __init__(self, on_settled: Callable[[], None] = lambda: None) -> None:
        self.created: list[store.Notification] = []
        self.on_settled = on_settled

    async def plan_notifications(
        self, conn: asyncpg.Connection, ended: list[store.Finished]
    ) -> list[store.Notification]:
        return []

    def notifications_created(self, created: list[store.Notification]) -> None:
        self.created.extend(created)

    def commit_failed(self, created: list[store.Notification], in_doubt: bool) -> None:
        pass

    def settled(self) -> None:
        self.on_settled()


def _planning(heard: Heard) -> CommitListeners:
    """The status writer's listeners as the daemon has them: each commit
    plans its notifications, and `heard` is told of them."""
    return CommitListeners(OutboxPlanner(72), heard)


async def _writer(pool: asyncpg.Pool, **kw: object) -> GroupCommit:
    writer = GroupCommit(pool, **kw)  # type: ignore[arg-type]
    writer.start()
    return writer


async def test_concurrent_inserts_share_commits(db_pool: asyncpg.Pool) -> None:
    writer = await _writer(db_pool)
    commits_before = await db_pool.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    messages = [_message(i) for i in range(500)]
    await asyncio.gather(*(writer.run(InsertMessage([m])) for m in messages))
    await writer.stop()
    count = await db_pool.fetchval("SELECT count(*) FROM messages")
    assert count == 500
    commits_after = await db_pool.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    # 500 producers at once: far fewer commits than messages (the stats
    # view counts our two SELECTs and the pool's set-up too).
    assert commits_after - commits_before < 50


async def test_receipt_ends_message_and_plans_notifications(db_pool: asyncpg.Pool) -> None:
    heard = Heard()
    writer = await _writer(db_pool, listener=_planning(heard))
    created = heard.created
    m = _message(1, callback_url="http://127.0.0.1:1/dlr", client_ref="ref")
    await writer.run(InsertMessage([m]))
    now = datetime.now(UTC)
    await writer.run(PartSent(m.id, 0, "sim", "abc", now))
    early = await writer.run(CarrierReceipt("sim", "zzz", Status.DELIVERED, "", now))
    assert early is False  # no such carrier id: the caller holds it
    finished = await writer.run(CarrierReceipt("sim", "abc", Status.DELIVERED, "", now))
    await writer.stop()
    assert finished.status == Status.DELIVERED
    assert finished.message_id == m.id
    row = await db_pool.fetchrow("SELECT status, carrier, done_at FROM messages WHERE id=$1", m.id)
    assert row["status"] == "delivered" and row["carrier"] == "sim" and row["done_at"]
    assert [n.kind for n in created] == [WEBHOOK]
    assert created[0].target == "http://127.0.0.1:1/dlr"
    assert b'"status":"delivered"' in created[0].payload
    assert b'"client_ref":"ref"' in created[0].payload
    # Kept by the flush's batch, under the id it is sent with.
    assert await db_pool.fetchval("SELECT count(*) FROM outbox") == 0
    pending = await kept_notifications(db_pool)
    assert [(p.id, p.payload) for p in pending] == [(created[0].id, created[0].payload)]


async def test_the_outbox_rows_of_a_flush_are_each_wanted_one_in_the_order_ended(
    db_pool: asyncpg.Pool,
) -> None:
    """Messages ending in one flush get the rows they ask for, in the order
    they ended, a message's webhook before its ESME receipt: an ESME's
    message with a callback URL and a receipt asked for gets both; a
    receipt asked for on failure only (registered_delivery 2) none when
    delivered, one when not; an app's message without a callback URL
    none."""
    heard = Heard()
    writer = await _writer(db_pool, listener=_planning(heard))
    both = _message(70, ingress="smpp", registered_delivery=1, callback_url="http://127.0.0.1:1/a")
    failures_delivered = _message(71, ingress="smpp", registered_delivery=2)
    failures_failed = _message(72, ingress="smpp", registered_delivery=2)
    quiet = _message(73)
    webhook = _message(74, callback_url="http://127.0.0.1:1/b")
    ordered = [webhook, failures_failed, quiet, failures_delivered, both]
    await writer.run(InsertMessage(ordered))
    now = datetime.now(UTC)
    for n, m in enumerate(ordered):
        await writer.run(PartSent(m.id, 0, "sim", f"o{n}", now))
    outcomes = [Status.UNDELIVERED if m is failures_failed else Status.DELIVERED for m in ordered]
    ended = await asyncio.gather(
        *[
            writer.run(CarrierReceipt("sim", f"o{n}", status, None, now))
            for n, status in enumerate(outcomes)
        ]
    )
    await writer.stop()
    assert [f.message_id for f in ended] == [m.id for m in ordered]
    assert [(n.message_id, n.kind, n.target) for n in heard.created] == [
        (webhook.id, WEBHOOK, "http://127.0.0.1:1/b"),
        (failures_failed.id, SMPP_RECEIPT, None),
        (both.id, WEBHOOK, "http://127.0.0.1:1/a"),
        (both.id, SMPP_RECEIPT, None),
    ]
    payloads = [json.loads(n.payload) for n in heard.created]
    # The webhook's body (CONTRACT §3) and the ESME receipt's fields.
    assert payloads[0]["to"] == webhook.recipient and payloads[0]["status"] == "delivered"
    assert "done_at" in payloads[0] and "submit_date" not in payloads[0]
    assert payloads[1]["recipient"] == failures_failed.recipient
    assert payloads[1]["status"] == "undelivered" and "submit_date" in payloads[1]
    assert payloads[2]["id"] == payloads[3]["id"] == str(both.id)
    assert "client_ref" in payloads[2] and "text" in payloads[3]
    assert [n.id for n in heard.created] == sorted(n.id for n in heard.created)


async def test_multipart_message_ends_when_every_part_has_a_receipt(db_pool: asyncpg.Pool) -> None:
    heard = Heard()
    writer = await _writer(db_pool, listener=_planning(heard))
    created = heard.created
    m = _message(2, parts=2, ingress="smpp", registered_delivery=1)
    await writer.run(InsertMessage([m]))
    now = datetime.now(UTC)
    await asyncio.gather(
        writer.run(PartSent(m.id, 0, "sim", "p0", now)),
        writer.run(PartSent(m.id, 1, "sim", "p1", now)),
    )
    first = await writer.run(CarrierReceipt("sim", "p0", Status.DELIVERED, "", now))
    assert first is True  # matched, message still open
    second = await writer.run(CarrierReceipt("sim", "p1", Status.UNDELIVERED, "dlr:001", now))
    await writer.stop()
    assert second.status == Status.UNDELIVERED
    row = await db_pool.fetchrow(
        "SELECT status, error_code, parts_sent FROM messages WHERE id=$1", m.id
    )
    assert row["status"] == "undelivered" and row["parts_sent"] == 2
    assert row["error_code"] == "dlr:001"
    assert [n.kind for n in created] == [SMPP_RECEIPT]
    receipt = json.loads(created[0].payload)
    assert (receipt["status"], receipt["error_code"]) == ("undelivered", "dlr:001")


async def test_ended_message_is_not_ended_twice(db_pool: asyncpg.Pool) -> None:
    writer = await _writer(db_pool)
    m = _message(3)
    await writer.run(InsertMessage([m]))
    now = datetime.now(UTC)
    first = await writer.run(MessageEnded(m.id, Status.FAILED, "smpp:0x0000000B", now, "sim"))
    again = await writer.run(MessageEnded(m.id, Status.EXPIRED, "validity_expired", now))
    await writer.stop()
    assert first.status == Status.FAILED
    assert again is None
    assert await db_pool.fetchval("SELECT error_code FROM messages WHERE id=$1", m.id) == (
        "smpp:0x0000000B"
    )


async def test_pending_messages_are_what_a_restart_resumes(db_pool: asyncpg.Pool) -> None:
    writer = await _writer(db_pool)
    waiting, half_sent, done = _message(4), _message(5, parts=2), _message(6)
    for m in (waiting, half_sent, done):
        await writer.run(InsertMessage([m]))
    now = datetime.now(UTC)
    await writer.run(PartSent(half_sent.id, 0, "sim", "h0", now))
    await writer.run(PartSent(done.id, 0, "sim", "d0", now))
    await writer.stop()
    rows = await store.pending_messages(db_pool)
    assert {r["id"]: r["parts_sent"] for r in rows} == {waiting.id: 0, half_sent.id: 1}


async def test_a_settled_batch_is_not_pending(db_pool: asyncpg.Pool) -> None:
    heard = Heard()
    writer = await _writer(db_pool, listener=_planning(heard))
    created = heard.created
    m = _message(7, callback_url="http://127.0.0.1:1/x")
    await writer.run(InsertMessage([m]))
    await writer.run(MessageEnded(m.id, Status.REJECTED, "no_route", datetime.now(UTC)))
    assert len(created) == 1 and created[0].batch
    await writer.run(BatchSettled(created[0].batch))
    await writer.stop()
    assert await kept_notifications(db_pool) == []


async def test_outbox_done_is_not_pending(db_pool: asyncpg.Pool) -> None:
    heard = Heard()
    writer = await _writer(db_pool, listener=_planning(heard))
    m = _message(8)
    await writer.run(InsertMessage([m]))
    row = await writer.run(
        NewNotification(WEBHOOK, "acc", "http://127.0.0.1:1/x", b"{}", datetime.now(UTC), m.id)
    )
    assert [n.id for n in await store.pending_notifications(db_pool)] == [row.id]
    await writer.run(OutboxDone(row.id, datetime.now(UTC)))
    await writer.stop()
    assert await store.pending_notifications(db_pool) == []


def test_final_status_of_parts() -> None:
    assert final_of_parts(["delivered", "delivered"]) == Status.DELIVERED
    assert final_of_parts(["delivered", "expired", "undelivered"]) == Status.EXPIRED


async def test_one_flush_of_many_receipts_ends_each_message_once(db_pool: asyncpg.Pool) -> None:
    """Sent parts and receipts for single- and multi-part messages, a resend
    under the same carrier id and a carrier repeating a receipt, all in one
    flush each: every op gets its own answer and the outbox one row per end."""
    heard = Heard()
    writer = await _writer(db_pool, listener=_planning(heard))
    created = heard.created
    singles = [_message(10 + i, callback_url="http://127.0.0.1:1/d") for i in range(5)]
    double = _message(20, parts=2, callback_url="http://127.0.0.1:1/d")
    await writer.run(InsertMessage([*singles, double]))
    now = datetime.now(UTC)
    sent = [writer.submit(PartSent(m.id, 0, "sim", f"s{i}", now)) for i, m in enumerate(singles)]
    sent += [
        writer.submit(PartSent(double.id, 0, "sim", "d0", now)),
        writer.submit(PartSent(double.id, 1, "sim", "d1", now)),
        # The same carrier id again in the same flush (resent after a lost link).
        writer.submit(PartSent(singles[0].id, 0, "sim", "s0", now)),
    ]
    await asyncio.gather(*sent)
    receipts = [
        CarrierReceipt("sim", f"s{i}", Status.DELIVERED, None, now) for i in range(len(singles))
    ]
    receipts += [
        CarrierReceipt("sim", "d0", Status.DELIVERED, None, now),
        CarrierReceipt("sim", "d1", Status.DELIVERED, None, now),
        CarrierReceipt("sim", "s1", Status.DELIVERED, None, now),  # repeated by the carrier
        CarrierReceipt("sim", "nope", Status.DELIVERED, None, now),
    ]
    results = await asyncio.gather(*(writer.submit(r) for r in receipts))
    await writer.stop()
    assert [r.message_id for r in results[:5]] == [m.id for m in singles]
    assert results[5] is True or results[5].message_id == double.id
    assert results[6].message_id == double.id and results[6].status == Status.DELIVERED
    assert results[7] is True or results[7].message_id == singles[1].id
    assert results[8] is False
    rows = await db_pool.fetch("SELECT status, parts_sent FROM messages")
    assert {(r["status"], r["parts_sent"]) for r in rows} == {("delivered", 1), ("delivered", 2)}
    assert sorted(n.message_id for n in created) == sorted(m.id for m in [*singles, double])
    pending = await kept_notifications(db_pool)
    assert [(p.id, p.message_id, p.payload) for p in pending] == [
        (n.id, n.message_id, n.payload) for n in created
    ]


async def test_a_sent_message_reads_as_sent_until_it_ends(db_pool: asyncpg.Pool) -> None:
    writer = await _writer(db_pool)
    m = _message(30)
    await writer.run(InsertMessage([m]))
    queued = await store.get_message(db_pool, m.id, "acc")
    assert queued is not None and queued["status"] == "queued" and queued["sent_at"] is None
    at = datetime.now(UTC)
    await writer.run(PartSent(m.id, 0, "sim", "x30", at))
    sent = await store.get_message(db_pool, m.id, "acc")
    assert sent is not None
    assert (sent["status"], sent["sent_at"], sent["carrier"]) == ("sent", at, "sim")
    assert [e["status"] for e in sent["events"]] == ["accepted", "queued", "sent"]
    await writer.run(CarrierReceipt("sim", "x30", Status.DELIVERED, None, datetime.now(UTC)))
    await writer.stop()
    done = await store.get_message(db_pool, m.id, "acc")
    assert done is not None
    assert (done["status"], done["sent_at"], done["carrier"]) == ("delivered", at, "sim")
    assert [e["status"] for e in done["events"]] == ["accepted", "queued", "sent", "delivered"]
    assert await store.get_message(db_pool, m.id, "another account") is None


@pytest.mark.parametrize(
    "statement",
    [writes._RECEIPTS, writes._MESSAGES_ENDED, notices._EXPAND_THESE],
    ids=["receipts", "ended", "batches"],
)
async def test_writer_statements_look_rows_up_by_key_whatever_the_table_size(
    db_pool: asyncpg.Pool, statement: str
) -> None:
    """The generic plan a prepared statement keeps, made on empty tables,
    must not scan them: it would scan them at every flush once they grow."""
    async with db_pool.acquire() as conn:
        await conn.execute(writes.WRITER_SETTINGS)
        explain = f"EXPLAIN (GENERIC_PLAN) {statement}"
        params = len(set(re.findall(r"\$\d+", statement)))
        plan = "\n".join(r[0] for r in await conn.fetch(explain, *[None] * params))
    assert "Seq Scan" not in plan and "Hash Join" not in plan, plan
    # The primary key of each day's partition (migration 0012).
    assert re.search(r"Index Scan using messages_p\d{8}_pkey", plan), plan


async def test_operations_trickling_in_share_one_transaction_with_a_flush_interval(
    db_pool: asyncpg.Pool,
) -> None:
    """The first operation is flushed at once; what arrives within the
    interval after it waits and goes together (one transaction id)."""
    writer = await _writer(db_pool, min_interval=0.5)
    messages = [_message(60 + n) for n in range(6)]
    await writer.run(InsertMessage(messages))
    now = datetime.now(UTC)
    sent = []
    for n, m in enumerate(messages):
        sent.append(writer.submit(PartSent(m.id, 0, "sim", f"t{n}", now)))
        await asyncio.sleep(0.01)  # one at a time, as a carrier answers
    await asyncio.gather(*sent)
    await writer.stop()
    xids = await db_pool.fetch(
        "SELECT xmin::text AS xid FROM carrier_submits WHERE carrier_message_id LIKE 't%'"
    )
    assert len(xids) == 6
    assert len({r["xid"] for r in xids}) == 1


async def test_writer_plans_each_statement_once(db_pool: asyncpg.Pool) -> None:
    """The writer's statements run their generic plan from the first
    execution: none is planned again per flush."""
    writer = await _writer(db_pool, listener=_planning(Heard()))
    now = datetime.now(UTC)
    for n in range(8):  # past the five custom plans PostgreSQL tries by default
        m = _message(50 + n, ingress="smpp", registered_delivery=1, callback_url="http://x/")
        await writer.run(InsertMessage([m]))
        await writer.run(PartSent(m.id, 0, "sim", f"g{n}", now))
        await writer.run(CarrierReceipt("sim", f"g{n}", Status.DELIVERED, None, now))
    (conn,) = writer._idle
    rows = await conn.fetch(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
        # asyncpg's own type introspection runs once: not the writer's.
        " WHERE statement ~ '^(WITH|INSERT|UPDATE|DELETE)' AND statement !~ 'typeinfo'"
    )
    await writer.stop()
    planned = {r["statement"][:40]: (r["generic_plans"], r["custom_plans"]) for r in rows}
    assert len(planned) >= 3, planned  # sent parts, receipts, notification batches
    assert all(custom == 0 and generic >= 8 for generic, custom in planned.values()), planned


async def test_overlapping_commits_settle_in_the_order_they_were_taken(
    db_pool: asyncpg.Pool,
) -> None:
    """Intake commits on several connections at once, yet acknowledges (and
    so queues) messages in the order they came: a later commit that lands
    first waits for the earlier one."""
    writer = await _writer(db_pool, name="ingest", connections=3)
    first, second = _message(40), _message(41)
    settled: list[str] = []
    async with db_pool.acquire() as blocker:
        # The first flush will wait on this uncommitted row with its key.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(
            "INSERT INTO messages (id, account_id, ingress, sender, recipient, body, encoding,"
            " data_coding, parts, price, status, created_at)"
            " VALUES ($1, 'acc', 'http', 's', 'r', 'b', 'gsm7', 0, 1, 0, 'queued', now())",
            first.id,
        )
        one = writer.submit(InsertMessage([first]))
        one.add_done_callback(lambda _: settled.append("first"))
        await _until_blocked(db_pool)
        two = writer.submit(InsertMessage([second]))
        two.add_done_callback(lambda _: settled.append("second"))
        # The second commit lands; its acknowledgement waits for the first.
        for _ in range(500):
            if await db_pool.fetchval("SELECT count(*) FROM messages WHERE id = $1", second.id):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the second flush did not commit beside the blocked one")
        await asyncio.sleep(0.05)
        assert settled == []
        await tx.rollback()
    await asyncio.wait_for(asyncio.gather(one, two), 10)
    await writer.stop()
    assert settled == ["first", "second"]


async def test_a_flush_beside_one_in_flight_waits_for_a_parallel_batch(
    db_pool: asyncpg.Pool,
) -> None:
    """With `parallel_batch`, what trickles in while a flush is in flight
    waits for it (one fuller flush after it), until that many operations
    wait: then a second flush commits beside the first."""
    writer = await _writer(db_pool, name="ingest", connections=3, parallel_batch=3)
    first = _message(70)
    later = [_message(71 + n) for n in range(3)]

    async def stored(m: Message) -> bool:
        return bool(await db_pool.fetchval("SELECT count(*) FROM messages WHERE id = $1", m.id))

    async with db_pool.acquire() as blocker:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(
            "INSERT INTO messages (id, account_id, ingress, sender, recipient, body, encoding,"
            " data_coding, parts, price, status, created_at)"
            " VALUES ($1, 'acc', 'http', 's', 'r', 'b', 'gsm7', 0, 1, 0, 'queued', now())",
            first.id,
        )
        one = writer.submit(InsertMessage([first]))
        await _until_blocked(db_pool)
        two = [writer.submit(InsertMessage([m])) for m in later[:2]]
        await asyncio.sleep(0.2)
        assert writer.waiting == 2
        assert not await stored(later[0])
        three = writer.submit(InsertMessage([later[2]]))
        for _ in range(500):
            if await stored(later[2]):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("three waiting operations did not start a second flush")
        assert writer.waiting == 0
        assert all([await stored(m) for m in later])
        await tx.rollback()
    await asyncio.wait_for(asyncio.gather(one, *two, three), 10)
    await writer.stop()


async def test_a_callback_hears_its_outcome_and_one_that_raises_spoils_nothing(
    db_pool: asyncpg.Pool,
) -> None:
    """submit_then: each callback of a batch is told (result, None) once its
    commit lands, or (None, StoreError) if it failed, in the order they came;
    a callback that raises is logged and the rest of its batch is still told;
    the writer's listener hears that the flush settled once all of them
    were told."""
    told: list[tuple[str, object]] = []

    def tell(name: str) -> store.Settled:
        return lambda result, error: told.append((name, error))

    def broken(result: object, error: StoreError | None) -> None:
        told.append(("broken", error))
        raise RuntimeError("a caller's bug")

    def hook() -> None:
        told.append(("after settle", None))

    first, second = _message(60), _message(61)
    writer = await _writer(db_pool, listener=Heard(on_settled=hook))
    writer.submit_then(InsertMessage([first]), broken)
    writer.submit_then(InsertMessage([second]), tell("second"))
    await writer.stop()  # flushes and settles what is waiting
    assert told == [("broken", None), ("second", None), ("after settle", None)]
    ids = [first.id, second.id]
    assert await db_pool.fetchval("SELECT count(*) FROM messages WHERE id = ANY($1)", ids) == 2

    told.clear()
    writer = await _writer(db_pool, listener=Heard(on_settled=hook))
    writer.submit_then(InsertMessage([_message(62)]), tell("fresh"))
    writer.submit_then(InsertMessage([first]), tell("again"))  # its key is taken: the batch fails
    await writer.stop()
    assert [name for name, _ in told] == ["fresh", "again", "after settle"]
    assert all(isinstance(error, StoreError) for _, error in told[:2])


async def _until_blocked(pool: asyncpg.Pool) -> None:
    """Until some session of this database waits for a lock."""
    for _ in range(500):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no flush waited for the row lock")


async def test_a_receipt_that_beats_its_part_is_held_in_the_database_until_it_matches(
    db_pool: asyncpg.Pool,
) -> None:
    """Migration 0015: a receipt that matches no sent part yet is kept in
    the commit that looked for it, so that a process stopped or killed
    before its part is recorded does not lose it; whichever writer tries
    the held receipts next ends the message and plans its callback."""
    m = _message(41, callback_url="http://127.0.0.1:1/dlr")
    first = await _writer(db_pool)
    now = datetime.now(UTC)
    await first.run(InsertMessage([m]))
    early = await first.run(CarrierReceipt("sim", "held-1", Status.DELIVERED, None, now))
    stray = await first.run(CarrierReceipt("sim", "nobody", Status.DELIVERED, None, now))
    assert early is False and stray is False
    await first.stop()  # the process that took the receipts is gone
    held = await db_pool.fetch("SELECT carrier_message_id, status FROM held_receipts ORDER BY 1")
    assert [(r[0], r[1]) for r in held] == [("held-1", "delivered"), ("nobody", "delivered")]

    heard = Heard()
    second = await _writer(db_pool, listener=_planning(heard))
    try:
        await second.run(PartSent(m.id, 0, "sim", "held-1", now))
        tried = await second.run(RetryHeldReceipts(100, 300.0))
        again = await second.run(RetryHeldReceipts(100, 300.0))
        given_up = await second.run(RetryHeldReceipts(100, 0.0))
    finally:
        await second.stop()
    assert isinstance(tried, HeldReceiptsTried)
    assert [(f.message_id, f.status) for f in tried.finished] == [(m.id, Status.DELIVERED)]
    assert (tried.matched, tried.given_up) == (1, 0)
    assert again == HeldReceiptsTried((), 0, 0)  # the stray one waits on
    assert given_up == HeldReceiptsTried((), 0, 1)  # past its grace period
    assert await db_pool.fetchval("SELECT count(*) FROM held_receipts") == 0
    assert await db_pool.fetchval("SELECT status FROM messages WHERE id = $1", m.id) == "delivered"
    assert [n.kind for n in heard.created] == [WEBHOOK]
    assert b'"status":"delivered"' in heard.created[0].payload


async def test_the_outbox_has_only_the_indexes_its_reads_use(db_pool: asyncpg.Pool) -> None:
    """Every outbox row (one or two a message) pays an entry in each index
    whose predicate it meets. The table is read by id (its primary key: the
    dispatcher's deletes and retries, a start's load in id order) and by
    rows no instance owns (outbox_unowned, a takeover's claim): no other
    index, on the table or any of its days (migration 0017 dropped the
    due-time one, which nothing read)."""
    rows = await db_pool.fetch(
        "SELECT c.relname AS tbl, x.indisprimary AS primary_key,"
        "  regexp_replace(pg_get_indexdef(x.indexrelid), '^.* USING ', '') AS def"
        " FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid"
        " WHERE c.relname = 'outbox' OR c.relname LIKE 'outbox\\_p%'"
        "   OR c.relname = 'outbox_default'"
    )
    by_table: dict[str, set[str]] = {}
    for r in rows:
        by_table.setdefault(r["tbl"], set()).add("primary key" if r["primary_key"] else r["def"])
    assert "outbox" in by_table and "outbox_default" in by_table and len(by_table) >= 3, by_table
    unowned = "btree (account_id) WHERE ((done_at IS NULL) AND (owner IS NULL))"
    for table, indexes in by_table.items():
        assert indexes == {"primary key", unowned}, (table, indexes)
