"""Credit in the store (CONTRACT §6 "Credit"), on a real PostgreSQL: a
message is stored if and only if its price is debited in the same commit;
the balance never goes below -credit_limit, under concurrency; a message
that ends without reaching a carrier is refunded; every change is a ledger
row and balance = initial credit + sum of the ledger, exactly."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsrouter.router.messages import Message, Status, new_message_id
from smsrouter.router.store.group_commit import GroupCommit
from smsrouter.router.store.ledger import add_credit, balance_identity, list_ledger
from smsrouter.router.store.operations import (
    IdempotentAnswer,
    InsertMessage,
    MessageEnded,
    PartSent,
    Unpaid,
)
from smsrouter.router.store.queries import idempotent_answer
from tests.tools import open_accounts

PRICE = Decimal("0.0062")
_numbers = itertools.count()


def _message(account: str, price: Decimal = PRICE, parts: int = 1) -> Message:
    n = next(_numbers) % 10_000
    return Message(
        id=new_message_id(), account_id=account, ingress="http", sender="+14155550101",
        recipient=f"+1415555{n:04d}", body=f"text {n}", encoding="gsm7", data_coding=0,
        parts=parts, price=price * parts, created_at=datetime.now(UTC),
    )  # fmt: skip


async def _credit(pool: asyncpg.Pool, account: str) -> Decimal:
    credit: Decimal = await pool.fetchval("SELECT credit FROM accounts WHERE id = $1", account)
    return credit


async def _stored(pool: asyncpg.Pool, messages: list[Message]) -> set[object]:
    rows = await pool.fetch(
        "SELECT id FROM messages WHERE id = ANY($1::uuid[])", [m.id for m in messages]
    )
    return {r["id"] for r in rows}


async def _check_identity(pool: asyncpg.Pool, account: str) -> Decimal:
    async with pool.acquire() as conn:
        credit, summed = await balance_identity(conn, account)
    assert credit == summed
    return credit


async def test_concurrent_sends_are_stored_exactly_as_far_as_the_balance_pays(
    db_pool: asyncpg.Pool,
) -> None:
    # 0.05 pays for 8 messages at 0.0062 (0.0496); 20 are sent at once, over
    # two connections whose flushes overlap.
    await open_accounts(db_pool, "payg", credit="0.05")
    writer = GroupCommit(db_pool, connections=2, name="ingest")
    writer.start()
    try:
        messages = [_message("payg") for _ in range(20)]
        results = await asyncio.gather(*(writer.submit(InsertMessage([m])) for m in messages))
    finally:
        await writer.stop()
    paid = [m for m, r in zip(messages, results, strict=True) if r is None]
    unpaid = [m for m, r in zip(messages, results, strict=True) if isinstance(r, Unpaid)]
    assert len(paid) == 8 and len(unpaid) == 12
    assert all(r.message_ids == {m.id} for m, r in zip(messages, results, strict=True) if r)
    assert await _stored(db_pool, messages) == {m.id for m in paid}
    assert await _check_identity(db_pool, "payg") == Decimal("0.05") - 8 * PRICE


async def test_a_batch_is_paid_recipient_by_recipient_down_to_the_credit_limit(
    db_pool: asyncpg.Pool,
) -> None:
    # 1.00 of credit and 0.10 below zero: 11 of the batch's 15 at 0.10.
    await open_accounts(db_pool, "batch", credit="1.00", credit_limit="0.10")
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        batch = [_message("batch", Decimal("0.10")) for _ in range(15)]
        result = await writer.submit(InsertMessage(batch))
    finally:
        await writer.stop()
    assert isinstance(result, Unpaid)
    assert result.message_ids == {m.id for m in batch[11:]}  # in the order sent
    assert await _stored(db_pool, batch) == {m.id for m in batch[:11]}
    assert await _check_identity(db_pool, "batch") == Decimal("-0.10")
    async with db_pool.acquire() as conn:
        (reserve,) = await list_ledger(conn, "batch", limit=10, before=None)
    assert (reserve.kind, reserve.amount, reserve.messages) == ("reserve", Decimal("-1.10"), 11)
    assert reserve.message_id == batch[0].id and reserve.balance == Decimal("-0.10")


async def test_free_messages_need_no_balance(db_pool: asyncpg.Pool) -> None:
    await open_accounts(db_pool, "broke", credit="0")
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        free, priced = _message("broke", Decimal(0)), _message("broke")
        assert await writer.submit(InsertMessage([free])) is None
        assert await writer.submit(InsertMessage([priced])) == Unpaid(frozenset({priced.id}))
    finally:
        await writer.stop()
    assert await _stored(db_pool, [free, priced]) == {free.id}
    async with db_pool.acquire() as conn:
        assert await list_ledger(conn, "broke", limit=10, before=None) == []


async def test_the_stored_answer_of_an_idempotent_request_names_the_unpaid(
    db_pool: asyncpg.Pool,
) -> None:
    await open_accounts(db_pool, "idem", credit="0.01")
    batch = [_message("idem") for _ in range(3)]

    def again(unpaid: Unpaid) -> tuple[int, bytes]:
        return 202, b"unpaid:%d" % len(unpaid.message_ids)

    answer = IdempotentAnswer("idem", "k", b"h" * 32, 202, b"all", unpaid=again)
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        result = await writer.submit(InsertMessage(batch, answer))
    finally:
        await writer.stop()
    assert result == Unpaid(frozenset(m.id for m in batch[1:]))
    assert await idempotent_answer(db_pool, "idem", "k") == (b"h" * 32, 202, b"unpaid:2")


async def test_messages_that_never_reached_a_carrier_are_refunded(db_pool: asyncpg.Pool) -> None:
    await open_accounts(db_pool, "refunds", credit="1")
    writer = GroupCommit(db_pool)
    writer.start()
    try:
        rejected, failed, expired, sent_failed, multi = (
            _message("refunds"), _message("refunds"), _message("refunds"), _message("refunds"),
            _message("refunds", parts=3),
        )  # fmt: skip
        everything = [rejected, failed, expired, sent_failed, multi]
        assert await writer.submit(InsertMessage(everything)) is None
        now = datetime.now(UTC)
        # One part of each of these reached a carrier: no refund.
        await writer.submit(PartSent(sent_failed.id, 1, "sim", "c-1", now))
        await writer.submit(PartSent(multi.id, 1, "sim", "c-2", now))
        ended = await asyncio.gather(
            writer.submit(MessageEnded(rejected.id, Status.REJECTED, "no_route", now)),
            writer.submit(MessageEnded(failed.id, Status.FAILED, "smpp:0x0000000B", now)),
            writer.submit(MessageEnded(expired.id, Status.EXPIRED, "validity_expired", now)),
            writer.submit(MessageEnded(sent_failed.id, Status.FAILED, "smpp:0x00000045", now)),
            writer.submit(MessageEnded(multi.id, Status.EXPIRED, "validity_expired", now)),
        )
        assert all(e is not None for e in ended)
        # Ending an ended message again refunds nothing twice.
        assert await writer.submit(MessageEnded(rejected.id, Status.REJECTED, "x", now)) is None
    finally:
        await writer.stop()
    spent = PRICE * 7 - PRICE * 3  # all 7 parts reserved, 3 single-part messages refunded
    assert await _check_identity(db_pool, "refunds") == Decimal(1) - spent
    async with db_pool.acquire() as conn:
        rows = await list_ledger(conn, "refunds", limit=10, before=None)
    refunds = [r for r in rows if r.kind == "refund"]
    assert {r.message_id for r in refunds} == {rejected.id, failed.id, expired.id}
    assert all(r.amount == PRICE for r in refunds)
    # Each row's balance is the balance after it, in the order of the rows.
    oldest_first = sorted(rows, key=lambda r: r.id)
    running = Decimal(1)
    for r in oldest_first:
        running += r.amount
        assert r.balance == running


async def test_flushes_over_several_accounts_take_their_rows_in_one_order(
    db_pool: asyncpg.Pool,
) -> None:
    # Two connections, each flush debiting both accounts: without one lock
    # order, two flushes could deadlock (PostgreSQL would abort one).
    await open_accounts(db_pool, "left", "right", credit="100")
    writer = GroupCommit(db_pool, connections=2, name="ingest")
    writer.start()
    try:
        ops = [
            InsertMessage([_message(a), _message(b)])
            for a, b in [("left", "right"), ("right", "left")] * 100
        ]
        results = await asyncio.gather(*(writer.submit(op) for op in ops))
    finally:
        await writer.stop()
    assert results == [None] * len(ops)
    for account in ("left", "right"):
        assert await _check_identity(db_pool, account) == Decimal(100) - 200 * PRICE


async def test_a_top_up_is_a_ledger_row(db_pool: asyncpg.Pool) -> None:
    await open_accounts(db_pool, "topped", credit="0")
    async with db_pool.acquire() as conn:
        entry = await add_credit(conn, "topped", Decimal("5.5"), reference="inv-1", actor="ops")
        down = await add_credit(conn, "topped", Decimal("-0.5"), reference="fix", actor="ops")
        assert await add_credit(conn, "nobody", Decimal(1), reference="x", actor="ops") is None
    assert entry is not None and (entry.kind, entry.balance) == ("top_up", Decimal("5.5"))
    assert down is not None and (down.kind, down.balance) == ("adjustment", Decimal(5))
    assert await _check_identity(db_pool, "topped") == Decimal(5)


# -- the identity and the floor under random interleavings --------------------

_step = st.one_of(
    st.tuples(st.just("send"), st.integers(1, 6), st.sampled_from(["0.01", "0.03", "0.0062"])),
    st.tuples(st.just("end"), st.sampled_from(["rejected", "failed", "expired"]), st.booleans()),
    st.tuples(st.just("top_up"), st.sampled_from(["0.05", "0.2", "-0.02"]), st.just(False)),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(st.lists(_step, min_size=1, max_size=6), min_size=1, max_size=6),
    credit=st.sampled_from(["0", "0.05", "0.3"]),
    credit_limit=st.sampled_from(["0", "0.04"]),
    seed=st.integers(0, 2**16),
)
def test_balance_is_initial_plus_ledger_and_never_below_the_floor(
    database_url: str, steps: list[list[tuple[str, object, object]]], credit: str,
    credit_limit: str, seed: int,
) -> None:  # fmt: skip
    """Rounds of concurrent steps (sends of batches, endings of stored
    messages — some of which reached a carrier — and top-ups or
    adjustments) against one account; after each round the balance is the
    initial credit plus the ledger, and at least -credit_limit unless an
    operator's adjustment took it lower (then no send lowers it further)."""
    account = f"prop-{next(_numbers)}"
    asyncio.run(
        _interleave(database_url, account, steps, credit, credit_limit, random.Random(seed))
    )


async def _interleave(
    url: str, account: str, rounds: list[list[tuple[str, object, object]]], credit: str,
    credit_limit: str, rng: random.Random,
) -> None:  # fmt: skip
    pool = await asyncpg.create_pool(url, min_size=1, max_size=6)
    ingest = GroupCommit(pool, connections=2, name="ingest")
    status = GroupCommit(pool, name="status", retry=True)
    ingest.start()
    status.start()
    floor = -Decimal(credit_limit)
    stored: list[Message] = []
    before = Decimal(credit)
    try:
        await open_accounts(pool, account, credit=credit, credit_limit=credit_limit)
        for steps in rounds:
            adjusted = False
            jobs = []
            for kind, a, b in steps:
                if kind == "send":
                    batch = [_message(account, Decimal(str(b))) for _ in range(int(str(a)))]
                    jobs.append(_send(ingest, batch, stored))
                elif kind == "end" and stored:
                    m = stored.pop(rng.randrange(len(stored)))
                    jobs.append(_end(status, m, Status(str(a)), reached_carrier=bool(b)))
                elif kind == "top_up":
                    adjusted = adjusted or str(a).startswith("-")
                    jobs.append(_top_up(pool, account, Decimal(str(a))))
            await asyncio.gather(*jobs)
            balance = await _check_identity(pool, account)
            if not adjusted:
                # Sends never take it below the floor; below it already (an
                # operator's adjustment), they take nothing at all.
                assert balance >= min(floor, before)
            before = balance
            # The messages stored are exactly those paid for, less refunds.
            reserved = await pool.fetchval(
                "SELECT coalesce(-sum(amount), 0) FROM ledger WHERE account_id = $1"
                " AND kind = 'reserve'",
                account,
            )
            priced = await pool.fetchval(
                "SELECT coalesce(sum(price), 0) FROM messages WHERE account_id = $1", account
            )
            assert reserved == priced
    finally:
        await ingest.stop()
        await status.stop()
        await pool.close()


async def _send(writer: GroupCommit, batch: list[Message], stored: list[Message]) -> None:
    result = await writer.submit(InsertMessage(batch))
    unpaid = result.message_ids if isinstance(result, Unpaid) else frozenset()
    stored.extend(m for m in batch if m.id not in unpaid)


async def _end(writer: GroupCommit, m: Message, status: Status, *, reached_carrier: bool) -> None:
    now = datetime.now(UTC)
    if reached_carrier:
        await writer.submit(PartSent(m.id, 1, "sim", f"c-{m.id}", now))
    await writer.submit(MessageEnded(m.id, status, "test", now))


async def _top_up(pool: asyncpg.Pool, account: str, amount: Decimal) -> None:
    async with pool.acquire() as conn:
        await add_credit(conn, account, amount, reference="test", actor="ops")
