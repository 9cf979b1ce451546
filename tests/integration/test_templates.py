"""Templates against a real PostgreSQL (CONTRACT §6 "Templates", §8):
create, approve and reject with their audit rows, the NOTIFY that makes
every process reload, and the approved ones in the directory's snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from smsrouter.router.accounts import AccountDirectory
from smsrouter.router.store import directory
from smsrouter.router.store import templates as store
from smsrouter.router.store.directory import NOTIFY_CHANNEL, Conflict, Directory, NotFound
from smsrouter.router.store.directory_watch import DirectoryWatch

OWN_ACCOUNTS = True
ACTOR = "ops"


@pytest.fixture
async def conn(db_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with db_pool.acquire() as c:
        for account_id in ("acme", "other"):
            await directory.create_account(
                c, ACTOR, {"id": account_id, "currency": "EUR", "credit": Decimal("1")}
            )
        yield c


@pytest.fixture
async def heard(db_pool: asyncpg.Pool) -> AsyncIterator[asyncio.Queue[str]]:
    payloads: asyncio.Queue[str] = asyncio.Queue()

    def listener(conn: object, pid: int, channel: str, payload: str) -> None:
        payloads.put_nowait(payload)

    async with db_pool.acquire() as c:
        await c.add_listener(NOTIFY_CHANNEL, listener)
        yield payloads
        await c.remove_listener(NOTIFY_CHANNEL, listener)


async def _last_audit(conn: asyncpg.Connection) -> dict[str, object]:
    return (await directory.list_audit(conn, limit=1, before=None))[0]


async def test_a_new_template_is_pending_and_audited_without_a_notify(
    conn: asyncpg.Connection, heard: asyncio.Queue[str]
) -> None:
    created = await store.create_template(conn, "acme", "otp", "Code {code}", "transactional")
    assert created["id"].startswith("tpl_") and len(created["id"]) == 20
    assert (created["status"], created["account"], created["reason"]) == ("pending", "acme", "")
    assert created["decided_at"] is None and created["decided_by"] is None
    audit = await _last_audit(conn)
    assert (audit["actor"], audit["action"], audit["target"]) == (
        "account:acme",
        "template.create",
        created["id"],
    )
    assert audit["before"] is None and audit["after"]["text"] == "Code {code}"  # type: ignore[index]
    await asyncio.sleep(0.2)
    assert heard.empty()  # nothing a router process holds changed
    assert (await directory.load(conn)).templates == ()


async def test_a_name_is_taken_per_account(conn: asyncpg.Connection) -> None:
    await store.create_template(conn, "acme", "otp", "Code {code}", None)
    with pytest.raises(Conflict) as taken:
        await store.create_template(conn, "acme", "otp", "Other {x}", None)
    assert (taken.value.code, taken.value.field) == ("template_exists", "name")
    # Another account may use the name.
    await store.create_template(conn, "other", "otp", "Code {code}", None)


async def test_approval_is_audited_notified_and_loaded(
    conn: asyncpg.Connection, heard: asyncio.Queue[str]
) -> None:
    created = await store.create_template(conn, "acme", "otp", "Code {code}", None)
    approved = await store.decide_template(conn, ACTOR, created["id"], approve=True)
    assert (approved["status"], approved["decided_by"]) == ("approved", ACTOR)
    assert approved["decided_at"] is not None
    assert await asyncio.wait_for(heard.get(), 5) == created["id"]
    audit = await _last_audit(conn)
    assert (audit["actor"], audit["action"], audit["target"]) == (
        ACTOR,
        "template.approve",
        created["id"],
    )
    assert audit["before"]["status"] == "pending"  # type: ignore[index]
    assert audit["after"]["status"] == "approved"  # type: ignore[index]
    snapshot = await directory.load(conn)
    assert [(t.id, t.account_id, t.text) for t in snapshot.templates] == [
        (created["id"], "acme", "Code {code}")
    ]
    accounts = AccountDirectory()
    accounts.apply(snapshot)
    acme = accounts.get("acme")
    assert acme is not None and acme.template_matcher.match("Code 1234") is not None


async def test_rejection_keeps_its_reason_and_is_not_loaded(
    conn: asyncpg.Connection, heard: asyncio.Queue[str]
) -> None:
    created = await store.create_template(conn, "acme", "promo", "Sale {pct}% off", None)
    rejected = await store.decide_template(
        conn, ACTOR, created["id"], approve=False, reason="promotional content"
    )
    assert (rejected["status"], rejected["reason"]) == ("rejected", "promotional content")
    assert await asyncio.wait_for(heard.get(), 5) == created["id"]
    audit = await _last_audit(conn)
    assert audit["action"] == "template.reject"
    assert audit["after"]["reason"] == "promotional content"  # type: ignore[index]
    assert (await directory.load(conn)).templates == ()


async def test_a_decided_or_unknown_template_is_refused(conn: asyncpg.Connection) -> None:
    created = await store.create_template(conn, "acme", "otp", "Code {code}", None)
    await store.decide_template(conn, ACTOR, created["id"], approve=True)
    for approve in (True, False):
        with pytest.raises(Conflict) as decided:
            await store.decide_template(conn, ACTOR, created["id"], approve=approve, reason="x")
        assert decided.value.code == "template_not_pending"
        assert "is approved" in decided.value.detail
    with pytest.raises(NotFound) as missing:
        await store.decide_template(conn, ACTOR, "tpl_nope", approve=True)
    assert missing.value.what == "template"
    row = await store.get_template(conn, created["id"])
    assert row is not None and row["decided_by"] == ACTOR


async def test_lists_filter_by_account_and_status_and_page_by_id(
    conn: asyncpg.Connection,
) -> None:
    ids = [
        (await store.create_template(conn, "acme", f"t{i}", f"Text {i} {{v}}", None))["id"]
        for i in range(5)
    ]
    other = (await store.create_template(conn, "other", "t0", "Hi {v}", None))["id"]
    await store.decide_template(conn, ACTOR, ids[0], approve=True)
    every = await store.list_templates(conn, limit=100)
    assert [t["id"] for t in every] == sorted([*ids, other])
    acme = await store.list_templates(conn, limit=100, account_id="acme")
    assert sorted(t["id"] for t in acme) == sorted(ids)
    pending = await store.list_templates(conn, limit=100, account_id="acme", status="pending")
    assert sorted(t["id"] for t in pending) == sorted(ids[1:])
    first = await store.list_templates(conn, limit=2, account_id="acme")
    rest = await store.list_templates(conn, limit=100, account_id="acme", after=first[-1]["id"])
    assert [t["id"] for t in first + rest] == sorted(ids)
    # An account reads only its own.
    assert await store.get_template(conn, other, "acme") is None
    assert await store.get_template(conn, other, "other") is not None


async def test_every_process_reloads_on_approval(
    db_pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    snapshots: asyncio.Queue[Directory] = asyncio.Queue()
    watch = DirectoryWatch(db_pool, snapshots.put_nowait)
    watch.start()
    try:
        created = await store.create_template(conn, "acme", "otp", "Code {code}", None)
        await asyncio.sleep(0.3)  # the watch is listening
        await store.decide_template(conn, ACTOR, created["id"], approve=True)
        while True:
            snapshot = await asyncio.wait_for(snapshots.get(), 5)
            if snapshot.templates:
                break
        assert [t.id for t in snapshot.templates] == [created["id"]]
    finally:
        await watch.stop()
