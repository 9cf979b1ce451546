"""MO keywords on a real PostgreSQL (CONTRACT §6 "Opt-out"): the future the
carrier's deliver_sm_resp waits for resolves only once the subscriber's
change and the MO's forward are committed, with the list in memory already
changed; and a subscriber's STOP is lifted only by the subscriber's START.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import msgspec
import pytest

from smsrouter.router.accounts import AccountDirectory
from smsrouter.router.admission import Admission
from smsrouter.router.config import AccountConfig
from smsrouter.router.inbound import Inbound
from smsrouter.router.opt_outs import OptOutList
from smsrouter.router.routes import Candidate, PriceTable, RouteTable
from smsrouter.router.store import GroupCommit, OptOutChange

NUMBER = "+14155550101"
SUB = "+14155550199"


@pytest.fixture
async def writer(db_pool: asyncpg.Pool) -> AsyncIterator[GroupCommit]:
    w = GroupCommit(db_pool, retry=True)
    w.start()
    yield w
    await w.stop()


def _inbound(writer: GroupCommit, opt_outs: OptOutList) -> Inbound:
    admission = Admission(
        routes=RouteTable([("1", [Candidate("sim", Decimal("0.004"))])]),
        prices=PriceTable([("1", Decimal("0.01"))]),
        senders={NUMBER: "acme"},
        opt_outs=opt_outs,
    )
    accounts = AccountDirectory([AccountConfig(id="acme", inbound_url="http://127.0.0.1:9/mo")])
    return Inbound(writer=writer, admission=admission, accounts=accounts, retry_hours=1)


def _mo(inbound: Inbound, text: str) -> asyncio.Future[object]:
    return inbound.receive(
        carrier="sim", sender=SUB, to=NUMBER, payload=text.encode(), decode=bytes.decode
    )


async def _state(db_pool: asyncpg.Pool) -> tuple[list[str], list[object]]:
    async with db_pool.acquire() as conn:
        sources = await conn.fetch(
            "SELECT source FROM opt_outs WHERE account_id = 'acme' AND recipient = $1", SUB
        )
        outbox = await conn.fetch("SELECT payload FROM outbox WHERE kind = 'mo' ORDER BY id")
    return [r["source"] for r in sources], [
        msgspec.json.decode(r["payload"])["keyword"] for r in outbox
    ]


async def test_stop_resolves_once_the_change_and_the_forward_are_committed(
    writer: GroupCommit, db_pool: asyncpg.Pool
) -> None:
    opt_outs = OptOutList()
    inbound = _inbound(writer, opt_outs)
    done = _mo(inbound, "stop")
    assert not opt_outs.opted_out("acme", SUB[1:])
    await done
    # The moment the carrier may be answered: in memory and in the rows.
    assert opt_outs.opted_out("acme", SUB[1:])
    assert await _state(db_pool) == (["subscriber"], ["opt_out"])

    await _mo(inbound, "YES")
    assert not opt_outs.opted_out("acme", SUB[1:])
    assert await _state(db_pool) == ([], ["opt_out", "opt_in"])

    await _mo(inbound, "info")
    await _mo(inbound, "hello")
    assert await _state(db_pool) == ([], ["opt_out", "opt_in", "help", None])
    assert len(opt_outs) == 0


async def test_a_subscriber_stop_over_the_accounts_entry_is_lifted_only_by_start(
    writer: GroupCommit, db_pool: asyncpg.Pool
) -> None:
    assert await writer.run(OptOutChange("acme", SUB, True, "account")) is True
    opt_outs = OptOutList()
    inbound = _inbound(writer, opt_outs)
    await _mo(inbound, "STOP")
    assert opt_outs.opted_out("acme", SUB[1:])
    assert (await _state(db_pool))[0] == ["subscriber"]
    # The account's DELETE no longer lifts it; the subscriber's START does.
    assert await writer.run(OptOutChange("acme", SUB, False, "account")) is False
    assert (await _state(db_pool))[0] == ["subscriber"]
    await _mo(inbound, "START")
    assert (await _state(db_pool))[0] == []
    assert not opt_outs.opted_out("acme", SUB[1:])


async def test_a_second_stop_changes_nothing_and_the_account_cannot_take_it_over(
    writer: GroupCommit, db_pool: asyncpg.Pool
) -> None:
    assert await writer.run(OptOutChange("acme", SUB, True, "subscriber")) is True
    assert await writer.run(OptOutChange("acme", SUB, True, "subscriber")) is False
    assert await writer.run(OptOutChange("acme", SUB, True, "account")) is False
    assert (await _state(db_pool))[0] == ["subscriber"]
