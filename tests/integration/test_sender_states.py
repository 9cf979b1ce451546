"""Sender states in PostgreSQL (CONTRACT §6 "Opt-out rate", §8 "Senders"):
the rows with their audit and NOTIFY, and two SenderGuards on one database
as two router processes: one decides, the other follows by NOTIFY; a
resume clears both and starts the window afresh."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from smsrouter.router.admission import Compliance
from smsrouter.router.sender_guard import SenderGuard
from smsrouter.router.sender_states import FLAGGED, SUSPENDED, SenderState, SenderStates
from smsrouter.router.store import sender_states
from smsrouter.router.store.directory import NotFound
from smsrouter.router.store.sender_watch import SenderWatch

OWN_ACCOUNTS = True
NUMBER = "+14155550101"
RULES = Compliance(opt_out_min_recipients=10, opt_out_flag_rate=0.1, opt_out_suspend_rate=0.2)


def _state(state: str, number: str = NUMBER, opt_outs: int = 2) -> SenderState:
    return SenderState(number, "shop", state, opt_outs, 20, opt_outs / 20, datetime.now(UTC))


@pytest.fixture
async def conn(db_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with db_pool.acquire() as c:
        yield c


async def _audit(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT actor, action, target, before, after FROM audit_log"
        " WHERE action LIKE 'sender.%' ORDER BY id"
    )


async def test_a_state_only_rises_and_each_change_is_audited_and_notified(
    conn: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    async with db_pool.acquire() as listener:

        def notified(*args: object) -> None:
            heard.put_nowait(str(args[3]))

        await listener.add_listener(sender_states.NOTIFY_CHANNEL, notified)
        written = await sender_states.record_state(conn, _state(FLAGGED), "host:1")
        assert written is not None and written.state == FLAGGED
        assert await asyncio.wait_for(heard.get(), 5) == NUMBER
        # The same state again (another process got there first): nothing.
        assert await sender_states.record_state(conn, _state(FLAGGED), "host:2") is None
        raised = await sender_states.record_state(conn, _state(SUSPENDED, opt_outs=4), "host:2")
        assert raised is not None and raised.state == SUSPENDED
        assert await asyncio.wait_for(heard.get(), 5) == NUMBER
        # Never back down but by a resume.
        assert await sender_states.record_state(conn, _state(FLAGGED), "host:1") is None
        assert heard.empty()
        await listener.remove_listener(sender_states.NOTIFY_CHANNEL, notified)
    (row,) = await sender_states.load_states(conn)
    assert (row.state, row.opt_outs, row.rate) == (SUSPENDED, 4, 0.2)
    flag, suspend = await _audit(conn)
    assert (flag["actor"], flag["action"], flag["before"]) == ("router", "sender.flag", None)
    assert json.loads(flag["after"])["decided_by"] == "host:1"
    assert suspend["action"] == "sender.suspend"
    assert json.loads(suspend["before"])["state"] == FLAGGED


async def test_list_by_state_in_pages_and_resume(conn: asyncpg.Connection) -> None:
    for i in range(3):
        await sender_states.record_state(conn, _state(FLAGGED, f"+1415555020{i}"), "h")
    await sender_states.record_state(conn, _state(SUSPENDED, "+14155550300"), "h")
    first = await sender_states.list_states(conn, state=FLAGGED, limit=2, after=None)
    assert [r["number"] for r in first] == ["+14155550200", "+14155550201"]
    rest = await sender_states.list_states(conn, state=FLAGGED, limit=2, after=first[-1]["number"])
    assert [r["number"] for r in rest] == ["+14155550202"]
    (suspended,) = await sender_states.list_states(conn, state=SUSPENDED, limit=10, after=None)
    assert set(suspended) == {
        "number", "account", "state", "opt_outs", "recipients", "rate", "since"
    }  # fmt: skip
    assert len(await sender_states.list_states(conn, state=None, limit=10, after=None)) == 4

    shown = await sender_states.resume(conn, "ops", "+14155550300")
    assert (shown["state"], shown["resumed_by"]) == ("active", "ops")
    assert await sender_states.list_states(conn, state=SUSPENDED, limit=10, after=None) == []
    audit = (await _audit(conn))[-1]
    assert (audit["actor"], audit["action"], audit["after"]) == ("ops", "sender.resume", None)
    with pytest.raises(NotFound):
        await sender_states.resume(conn, "ops", "+14155550300")
    with pytest.raises(NotFound):
        await sender_states.resume(conn, "ops", "+19995550000")


async def _until(condition: object, what: str) -> None:
    for _ in range(100):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(what)


async def test_one_process_decides_the_other_follows_and_a_resume_clears_both(
    db_pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    deciding = SenderGuard(states=SenderStates(), thresholds=lambda: RULES, pool=db_pool)
    following = SenderGuard(states=SenderStates(), thresholds=lambda: RULES, pool=db_pool)
    watches = [SenderWatch(db_pool, g.apply) for g in (deciding, following)]
    for w in watches:
        await w.reload()
        w.start()
    try:
        for i in range(20):
            deciding.rates.sent(NUMBER, f"+1415556{i:04d}")
        for i in range(4):
            deciding.opted_out("shop", NUMBER, f"+1415556{i:04d}")
        # Applied at once where decided, before its row is committed.
        assert deciding.states.suspended(NUMBER)
        await _until(lambda: following.states.suspended(NUMBER), "not followed by NOTIFY")
        (row,) = await sender_states.load_states(conn)
        assert (row.state, row.opt_outs, row.recipients) == (SUSPENDED, 4, 20)

        await sender_states.resume(conn, "ops", NUMBER)
        await _until(
            lambda: (
                not deciding.states.suspended(NUMBER) and not following.states.suspended(NUMBER)
            ),
            "resume not followed",
        )
        # The window starts afresh where the STOPs were counted.
        assert deciding.rates.rate(NUMBER) == (0, 0, 0.0)
        deciding.opted_out("shop", NUMBER, "+14155560005")
        assert deciding.states.state_of(NUMBER) is None
    finally:
        for w in watches:
            await w.stop()
        await deciding.stop()
        await following.stop()


async def test_a_pending_decision_survives_a_snapshot_without_it(db_pool: asyncpg.Pool) -> None:
    # No pool: the decision is never written, as if its commit were slow.
    guard = SenderGuard(states=SenderStates(), thresholds=lambda: RULES)
    for i in range(10):
        guard.rates.sent(NUMBER, f"+1415556{i:04d}")
    guard.opted_out("shop", NUMBER, "+14155560000")
    assert guard.states.state_of(NUMBER) == FLAGGED
    guard.apply([])  # another process's change reloaded the rows
    assert guard.states.state_of(NUMBER) == FLAGGED
    assert guard.rates.opt_outs(NUMBER) == 1
