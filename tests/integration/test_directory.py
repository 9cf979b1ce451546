"""The account directory against a real PostgreSQL: config sync, operator
changes with their audit rows and NOTIFY, conflicts, the cache's snapshot."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from smsrouter.router.config import AccountConfig, AccountSmpp, NumberConfig, SenderIdConfig
from smsrouter.router.passwords import verify_password
from smsrouter.router.store import directory
from smsrouter.router.store.directory import (
    NOTIFY_CHANNEL,
    REMOVED_FROM_CONFIG,
    Conflict,
    NotFound,
)
from smsrouter.router.store.ledger import balance_identity

ACTOR = "ops"

# The accounts of these tests are the ones they make (tests/integration/conftest.py).
OWN_ACCOUNTS = True


@dataclass(eq=False)
class Heard:
    """NOTIFY payloads on the directory's channel, heard on a connection of
    its own (as another router process would)."""

    payloads: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def __call__(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.payloads.put_nowait(payload)

    async def next(self) -> str:
        return await asyncio.wait_for(self.payloads.get(), timeout=5)

    def none_pending(self) -> bool:
        return self.payloads.empty()


@pytest.fixture
async def conn(db_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with db_pool.acquire() as c:
        yield c


@pytest.fixture
async def heard(db_pool: asyncpg.Pool) -> AsyncIterator[Heard]:
    listener = Heard()
    async with db_pool.acquire() as c:
        await c.add_listener(NOTIFY_CHANNEL, listener)
        yield listener
        await c.remove_listener(NOTIFY_CHANNEL, listener)


def _demo(**kw: Any) -> AccountConfig:
    settings: dict[str, Any] = {
        "id": "demo",
        "api_keys": ["demo-key"],
        "smpp": AccountSmpp(system_id="demo", password="demo-pass", max_binds=4),
        "credit": Decimal("100.00"),
        "currency": "USD",
        "webhook_secret": "demo-secret",
        "max_tps": 5.0,
    }
    settings.update(kw)
    return AccountConfig(**settings)


DEMO_FIELDS = frozenset(
    {"id", "api_keys", "smpp", "credit", "currency", "webhook_secret", "max_tps"}
)
NUMBER = NumberConfig(number="+14155550101", account="demo", type="long_code")


async def _sync(
    conn: asyncpg.Connection,
    accounts: list[AccountConfig],
    numbers: list[NumberConfig] | None = None,
    fields: dict[str, frozenset[str]] | None = None,
) -> None:
    await directory.sync_config(
        conn,
        accounts,
        numbers or [],
        fields if fields is not None else {a.id: DEMO_FIELDS for a in accounts},
    )


async def _audit(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return await directory.list_audit(conn, limit=1000, before=None)


async def _last_audit(conn: asyncpg.Connection) -> dict[str, Any]:
    return (await directory.list_audit(conn, limit=1, before=None))[0]


async def _new_account(conn: asyncpg.Connection, account_id: str = "acme", **kw: Any) -> str:
    _, secret = await directory.create_account(
        conn, ACTOR, {"id": account_id, "currency": "EUR", "credit": Decimal("10"), **kw}
    )
    return secret


# -- config sync -------------------------------------------------------------------


async def test_sync_inserts_a_config_account_with_every_field(
    conn: asyncpg.Connection, heard: Heard
) -> None:
    await _sync(conn, [_demo(daily_limit=7)], [NUMBER])
    account = await directory.get_account(conn, "demo")
    assert account is not None
    assert account["credit"] == Decimal("100.00") and account["currency"] == "USD"
    assert account["max_tps"] == 5.0 and account["daily_limit"] == 7
    assert account["smpp"] == {"system_id": "demo", "max_binds": 4, "allowed_ips": []}
    assert account["managed_fields"] == [
        "api_keys",
        "currency",
        "max_tps",
        "smpp",
        "webhook_secret",
    ]
    assert await balance_identity(conn, "demo") == (Decimal("100.00"), Decimal("100.00"))
    snapshot = await directory.load(conn)
    assert snapshot.accounts[0].webhook_secret == "demo-secret"
    assert [k.key_id for k in snapshot.api_keys] == [
        "cfg_" + directory.api_key_digest("demo-key").hex()[:16]
    ]
    assert verify_password("demo-pass", snapshot.smpp[0].password_hash)
    assert snapshot.numbers == (directory.NumberRow("+14155550101", "demo", "long_code", None),)
    # One NOTIFY for the whole sync; audit rows by "config" explain it.
    assert await heard.next() == "config"
    await asyncio.sleep(0.1)
    assert heard.none_pending()
    actions = {(e["actor"], e["action"], e["target"]) for e in await _audit(conn)}
    assert ("config", "account.create", "demo") in actions
    assert ("config", "number.put", "+14155550101") in actions


async def test_sync_overwrites_only_what_the_file_sets_and_never_the_balance(
    conn: asyncpg.Connection,
) -> None:
    await _sync(conn, [_demo()])
    # An operator sets a field the file does not, and tops the balance up.
    await directory.patch_account(conn, ACTOR, "demo", {"daily_limit": 50})
    await directory.add_credit(conn, ACTOR, "demo", Decimal("5"), "top-up")
    await _sync(conn, [_demo(max_tps=9.0, credit=Decimal("1"), daily_limit=0)])
    account = await directory.get_account(conn, "demo")
    assert account is not None
    assert account["max_tps"] == 9.0
    assert account["daily_limit"] == 50  # not a key of the file's table
    assert account["credit"] == Decimal("105.00")
    assert await balance_identity(conn, "demo") == (Decimal("105.00"), Decimal("105.00"))
    last = await _last_audit(conn)
    assert (last["actor"], last["action"]) == ("config", "account.patch")
    assert (last["before"]["max_tps"], last["after"]["max_tps"]) == (5.0, 9.0)


async def test_instances_syncing_at_once_take_turns(db_pool: asyncpg.Pool) -> None:
    # Several instances reload on one SIGHUP (CONTRACT §9): the second sync
    # waits for the first and then finds its rows, instead of colliding.
    async def one() -> None:
        async with db_pool.acquire() as c:
            await _sync(c, [_demo()], [NUMBER])

    await asyncio.gather(*(one() for _ in range(4)))
    async with db_pool.acquire() as c:
        creates = [e for e in await _audit(c) if e["action"] == "account.create"]
        assert len(creates) == 1


async def test_a_sync_that_changes_nothing_writes_no_audit_row(conn: asyncpg.Connection) -> None:
    await _sync(conn, [_demo()], [NUMBER])
    count = len(await _audit(conn))
    await _sync(conn, [_demo()], [NUMBER])
    assert len(await _audit(conn)) == count


async def test_a_field_the_file_sets_is_refused_to_the_operator(conn: asyncpg.Connection) -> None:
    await _sync(conn, [_demo()])
    with pytest.raises(Conflict) as info:
        await directory.patch_account(conn, ACTOR, "demo", {"verified": False, "max_tps": 1.0})
    assert (info.value.code, info.value.field) == ("managed_by_config", "max_tps")
    with pytest.raises(Conflict) as info:
        await directory.put_smpp(
            conn, ACTOR, "demo", system_id="x", password="p", max_binds=1, allowed_ips=[]
        )
    assert info.value.code == "managed_by_config"
    key_id = (await directory.list_api_keys(conn, "demo"))[0]["key_id"]
    with pytest.raises(Conflict) as info:
        await directory.revoke_api_key(conn, ACTOR, "demo", key_id)
    assert info.value.code == "managed_by_config"
    # Nothing of the refused patch was written.
    account = await directory.get_account(conn, "demo")
    assert account is not None and account["verified"] is True and account["max_tps"] == 5.0


async def test_managed_fields_from_a_table_that_sets_no_credentials(
    conn: asyncpg.Connection,
) -> None:
    plain = AccountConfig(id="plain", credit=Decimal("3"), verified=False)
    await _sync(conn, [plain], fields={"plain": frozenset({"id", "credit", "verified"})})
    account = await directory.get_account(conn, "plain")
    assert account is not None and account["managed_fields"] == ["verified"]
    # What the file does not set stays the operator's, credit top-ups too.
    await directory.patch_account(conn, ACTOR, "plain", {"max_tps": 2})


async def test_without_account_fields_the_keys_off_their_default_are_the_files(
    conn: asyncpg.Connection,
) -> None:
    await directory.sync_config(conn, [AccountConfig(id="a", max_tps=3.0)], [], {})
    account = await directory.get_account(conn, "a")
    assert account is not None and account["managed_fields"] == ["max_tps"]


async def test_a_second_webhook_secret_from_the_file_is_stored_and_never_shown(
    conn: asyncpg.Connection,
) -> None:
    # CONTRACT §3: during a rotation the account holds two secrets.
    cfg = AccountConfig(id="r", webhook_secret="old-secret", webhook_secret_next="new-secret")
    await directory.sync_config(conn, [cfg], [], {})
    (row,) = (await directory.load(conn)).accounts
    assert (row.webhook_secret, row.webhook_secret_next) == ("old-secret", "new-secret")
    account = await directory.get_account(conn, "r")
    assert account is not None and "new-secret" not in json.dumps(account, default=str)
    assert "webhook_secret_next" in account["managed_fields"]
    # The rotation ends: the new secret becomes the only one.
    await directory.sync_config(conn, [AccountConfig(id="r", webhook_secret="new-secret")], [], {})
    (row,) = (await directory.load(conn)).accounts
    assert (row.webhook_secret, row.webhook_secret_next) == ("new-secret", "")


async def test_an_account_removed_from_the_file_is_locked_and_loses_its_config_rows(
    conn: asyncpg.Connection,
) -> None:
    other = AccountConfig(id="other")
    await _sync(conn, [_demo(), other], [NUMBER], {"demo": DEMO_FIELDS, "other": frozenset({"id"})})
    made = await directory.create_api_key(conn, ACTOR, "demo", "made by API", None)
    await _sync(conn, [other], [], {"other": frozenset({"id"})})
    account = await directory.get_account(conn, "demo")
    assert account is not None
    assert account["locked"] is True and account["lock_reason"] == REMOVED_FROM_CONFIG
    assert account["managed_fields"] is None and account["smpp"] is None
    assert [k["key_id"] for k in await directory.list_api_keys(conn, "demo")] == [made["key_id"]]
    assert await directory.list_numbers(conn, limit=10, after=None) == []
    last = await _last_audit(conn)
    assert (last["actor"], last["action"], last["target"]) == ("config", "account.patch", "demo")
    assert last["after"]["lock_reason"] == REMOVED_FROM_CONFIG
    # The operator manages it now...
    await directory.patch_account(conn, ACTOR, "demo", {"max_tps": 1.0})
    # ...and back in the file, the lock the sync set is lifted.
    await _sync(conn, [_demo(), other], [], {"demo": DEMO_FIELDS, "other": frozenset({"id"})})
    account = await directory.get_account(conn, "demo")
    assert account is not None and account["locked"] is False and account["lock_reason"] == ""


async def test_an_operator_lock_survives_a_sync(conn: asyncpg.Connection) -> None:
    await _sync(conn, [_demo()])
    await directory.patch_account(conn, ACTOR, "demo", {"locked": True, "lock_reason": "fraud"})
    await _sync(conn, [_demo()])
    account = await directory.get_account(conn, "demo")
    assert account is not None and account["locked"] and account["lock_reason"] == "fraud"


async def test_config_keys_follow_the_file_and_api_keys_are_untouched(
    conn: asyncpg.Connection,
) -> None:
    await _sync(conn, [_demo(api_keys=["k1", "k2"])])
    made = await directory.create_api_key(conn, ACTOR, "demo", "mine", None)
    await _sync(conn, [_demo(api_keys=["k2", "k3"])])
    keys = await directory.list_api_keys(conn, "demo")
    digests = {k.key_id: k.digest for k in (await directory.load(conn)).api_keys}
    config_digests = {d for kid, d in digests.items() if kid.startswith("cfg_")}
    assert config_digests == {directory.api_key_digest("k2"), directory.api_key_digest("k3")}
    assert made["key_id"] in digests
    assert {k["managed_by_config"] for k in keys if k["key_id"] == made["key_id"]} == {False}
    assert all(k["name"] == "config" for k in keys if k["managed_by_config"])
    actions = [(e["action"], e["actor"]) for e in await _audit(conn)]
    assert ("api_key.delete", "config") in actions


async def test_the_stored_hash_is_kept_while_the_password_is_the_files(
    conn: asyncpg.Connection,
) -> None:
    await _sync(conn, [_demo()])
    first = (await directory.load(conn)).smpp[0].password_hash
    await _sync(conn, [_demo()])
    assert (await directory.load(conn)).smpp[0].password_hash == first
    await _sync(conn, [_demo(smpp=AccountSmpp(system_id="demo", password="new-pass"))])
    changed = (await directory.load(conn)).smpp[0].password_hash
    assert changed != first and verify_password("new-pass", changed)


async def test_two_config_accounts_may_swap_system_ids(conn: asyncpg.Connection) -> None:
    fields = {"a": frozenset({"id", "smpp"}), "b": frozenset({"id", "smpp"})}

    def pair(a: str, b: str) -> list[AccountConfig]:
        return [
            AccountConfig(id="a", smpp=AccountSmpp(system_id=a, password="pa")),
            AccountConfig(id="b", smpp=AccountSmpp(system_id=b, password="pb")),
        ]

    await _sync(conn, pair("x", "y"), fields=fields)
    await _sync(conn, pair("y", "x"), fields=fields)
    smpp = {s.account_id: s.system_id for s in (await directory.load(conn)).smpp}
    assert smpp == {"a": "y", "b": "x"}


async def test_a_config_system_id_of_another_accounts_credentials_is_refused(
    conn: asyncpg.Connection,
) -> None:
    await _new_account(conn, "acme")
    await directory.put_smpp(
        conn, ACTOR, "acme", system_id="demo", password="pw", max_binds=1, allowed_ips=[]
    )
    with pytest.raises(Conflict) as info:
        await _sync(conn, [_demo()])
    assert info.value.code == "system_id_taken"
    # One transaction: nothing of the sync was written.
    assert await directory.get_account(conn, "demo") is None


async def test_config_numbers_follow_the_file_and_api_numbers_are_untouched(
    conn: asyncpg.Connection,
) -> None:
    second = NumberConfig(number="+14155550102", account="demo", type="toll_free", rate=2.0)
    await _sync(conn, [_demo()], [NUMBER, second])
    await directory.put_number(
        conn, ACTOR, "MYSHOP", account_id="demo", type="alphanumeric", rate=None
    )
    with pytest.raises(Conflict) as info:
        await directory.put_number(
            conn, ACTOR, "+14155550101", account_id="demo", type="toll_free", rate=None
        )
    assert info.value.code == "managed_by_config"
    with pytest.raises(Conflict):
        await directory.delete_number(conn, ACTOR, "+14155550102")
    await _sync(conn, [_demo()], [second])
    numbers = await directory.list_numbers(conn, limit=10, after=None)
    assert [n["number"] for n in numbers] == ["+14155550102", "MYSHOP"]
    assert numbers[0] == {
        "number": "+14155550102",
        "account": "demo",
        "type": "toll_free",
        "rate": 2.0,
    }
    last = await _last_audit(conn)
    assert (last["actor"], last["action"], last["target"]) == (
        "config",
        "number.delete",
        "+14155550101",
    )


async def test_config_sender_ids_follow_the_file_and_the_operators_stay(
    conn: asyncpg.Connection,
) -> None:
    """CONTRACT §6 "Sender-ID rules": an account's `sender_ids` in the file
    become its registrations, changed and removed with the file; one an
    operator registered stays, and the file's are not the operator's to
    change (409 managed_by_config)."""
    fields = {"demo": DEMO_FIELDS | {"sender_ids", "allowed_countries"}}
    acme = SenderIdConfig(id="ACME", countries=["AE", "SA"])
    shop = SenderIdConfig(id="SHOP", countries=["AE"])
    await _sync(conn, [_demo(sender_ids=[acme, shop], allowed_countries=["AE"])], fields=fields)
    await directory.put_sender_id(conn, ACTOR, "demo", "OPS", ["QA"])
    with pytest.raises(Conflict) as info:
        await directory.put_sender_id(conn, ACTOR, "demo", "ACME", ["QA"])
    assert info.value.code == "managed_by_config"
    loaded = await directory.load(conn)
    assert sorted((r.sender_id, r.countries) for r in loaded.sender_ids) == [
        ("ACME", ("AE", "SA")),
        ("OPS", ("QA",)),
        ("SHOP", ("AE",)),
    ]
    assert loaded.accounts[0].allowed_countries == ("AE",)

    acme = SenderIdConfig(id="ACME", countries=["AE"])
    await _sync(conn, [_demo(sender_ids=[acme])], fields=fields)
    loaded = await directory.load(conn)
    assert sorted((r.sender_id, r.countries) for r in loaded.sender_ids) == [
        ("ACME", ("AE",)),
        ("OPS", ("QA",)),
    ]
    actions = [(a["action"], a["target"]) for a in await _audit(conn)][:3]
    assert sorted(a for a in actions if a[0].startswith("sender_id.")) == [
        ("sender_id.delete", "demo/SHOP"),
        ("sender_id.put", "demo/ACME"),
    ]
    # A sync that changes nothing writes nothing.
    before = len(await _audit(conn))
    await _sync(conn, [_demo(sender_ids=[acme])], fields=fields)
    assert len(await _audit(conn)) == before


# -- operator changes: each with its audit row and NOTIFY ---------------------------


async def _expect_change(
    conn: asyncpg.Connection, heard: Heard, action: str, target: str
) -> dict[str, Any]:
    assert await heard.next() == target
    entry = await _last_audit(conn)
    assert (entry["actor"], entry["action"], entry["target"]) == (ACTOR, action, target)
    return entry


async def test_create_account(conn: asyncpg.Connection, heard: Heard) -> None:
    shown, secret = await directory.create_account(
        conn,
        ACTOR,
        {
            "id": "acme",
            "currency": "GBP",
            "credit": Decimal("12.50"),
            "max_tps": 3,
            "verified": False,
            "allowed_countries": ["GB"],
        },
    )
    assert len(secret) >= 40
    assert (
        shown["id"] == "acme" and shown["currency"] == "GBP" and shown["credit"] == Decimal("12.50")
    )
    assert (
        shown["max_tps"] == 3.0
        and shown["verified"] is False
        and shown["allowed_countries"] == ["GB"]
    )
    assert shown["managed_fields"] is None and shown["smpp"] is None
    assert isinstance(shown["created_at"], datetime)
    assert await directory.get_account(conn, "acme") == shown
    entry = await _expect_change(conn, heard, "account.create", "acme")
    assert entry["before"] is None and entry["after"]["credit"] == "12.50"
    assert (await directory.load(conn)).accounts[0].webhook_secret == secret
    assert await balance_identity(conn, "acme") == (Decimal("12.50"), Decimal("12.50"))
    with pytest.raises(Conflict) as info:
        await _new_account(conn, "acme")
    assert (info.value.code, info.value.field) == ("account_exists", "id")


async def test_patch_account(conn: asyncpg.Connection, heard: Heard) -> None:
    await _new_account(conn)
    await heard.next()
    changes = {
        "locked": True,
        "lock_reason": "unpaid",
        "max_tps": 2,
        "daily_alarm": 5,
        "daily_limit": 10,
        "credit_limit": Decimal("50"),
        "callback_url": "https://a.example/cb",
        "inbound_url": "https://a.example/in",
        "alert_url": "https://a.example/alert",
        "allowed_ips": ["10.0.0.0/8"],
        "stop_reply": "bye",
        "start_reply": "hi",
        "help_reply": "help",
        "templates_required": True,
        "timezone": "Europe/Paris",
        "price_plan": "wholesale",
        "allowed_countries": ["FR", "DE"],
        "verified": False,
    }
    after = await directory.patch_account(conn, ACTOR, "acme", changes)
    for name, value in changes.items():
        assert after[name] == value, name
    entry = await _expect_change(conn, heard, "account.patch", "acme")
    assert entry["before"]["locked"] is False and entry["after"]["locked"] is True
    row = (await directory.load(conn)).accounts[0]
    assert row.allowed_countries == ("FR", "DE") and row.credit_limit == Decimal("50")
    # Unlocking clears the lock's reason.
    unlocked = await directory.patch_account(conn, ACTOR, "acme", {"locked": False})
    assert unlocked["locked"] is False and unlocked["lock_reason"] == ""
    with pytest.raises(NotFound):
        await directory.patch_account(conn, ACTOR, "nobody", {"locked": True})


async def test_api_keys(conn: asyncpg.Connection, heard: Heard) -> None:
    await _new_account(conn)
    await heard.next()
    expires = datetime.now(UTC) + timedelta(days=30)
    made = await directory.create_api_key(conn, ACTOR, "acme", "ci", expires)
    assert set(made) == {"key_id", "key", "name", "created_at", "expires_at"}
    assert made["key"].startswith("sk_") and made["key_id"].startswith("key_")
    assert made["expires_at"] == expires
    entry = await _expect_change(conn, heard, "api_key.create", made["key_id"])
    assert made["key"] not in json.dumps(entry, default=str)
    snapshot = await directory.load(conn)
    assert snapshot.api_keys == (
        directory.ApiKeyRow(made["key_id"], "acme", directory.api_key_digest(made["key"]), expires),
    )
    listed = await directory.list_api_keys(conn, "acme")
    assert listed == [
        {
            "key_id": made["key_id"],
            "name": "ci",
            "created_at": made["created_at"],
            "last_used_at": None,
            "expires_at": expires,
            "managed_by_config": False,
        }
    ]
    await directory.revoke_api_key(conn, ACTOR, "acme", made["key_id"])
    await _expect_change(conn, heard, "api_key.revoke", made["key_id"])
    assert (await directory.load(conn)).api_keys == ()
    assert await directory.list_api_keys(conn, "acme") == []
    with pytest.raises(NotFound):  # already revoked
        await directory.revoke_api_key(conn, ACTOR, "acme", made["key_id"])
    with pytest.raises(NotFound):
        await directory.create_api_key(conn, ACTOR, "nobody", "x", None)
    with pytest.raises(NotFound):
        await directory.list_api_keys(conn, "nobody")


async def test_a_key_of_another_account_cannot_be_revoked_through_this_one(
    conn: asyncpg.Connection,
) -> None:
    await _new_account(conn, "a")
    await _new_account(conn, "b")
    made = await directory.create_api_key(conn, ACTOR, "a", "k", None)
    with pytest.raises(NotFound):
        await directory.revoke_api_key(conn, ACTOR, "b", made["key_id"])


async def test_put_smpp(conn: asyncpg.Connection, heard: Heard) -> None:
    await _new_account(conn)
    await heard.next()
    shown = await directory.put_smpp(
        conn,
        ACTOR,
        "acme",
        system_id="acme",
        password="s3cret",
        max_binds=2,
        allowed_ips=["10.1.0.0/16"],
    )
    assert shown == {"system_id": "acme", "max_binds": 2, "allowed_ips": ["10.1.0.0/16"]}
    entry = await _expect_change(conn, heard, "smpp.put", "acme")
    assert entry["before"] is None and entry["after"] == shown
    (smpp,) = (await directory.load(conn)).smpp
    assert "s3cret" not in smpp.password_hash and verify_password("s3cret", smpp.password_hash)
    account = await directory.get_account(conn, "acme")
    assert account is not None and account["smpp"] == shown
    again = await directory.put_smpp(
        conn, ACTOR, "acme", system_id="acme2", password="other", max_binds=1, allowed_ips=[]
    )
    entry = await _expect_change(conn, heard, "smpp.put", "acme")
    assert entry["before"] == shown and entry["after"] == again
    await _new_account(conn, "rival")
    with pytest.raises(Conflict) as info:
        await directory.put_smpp(
            conn, ACTOR, "rival", system_id="acme2", password="x", max_binds=1, allowed_ips=[]
        )
    assert (info.value.code, info.value.field) == ("system_id_taken", "system_id")
    with pytest.raises(NotFound):
        await directory.put_smpp(
            conn, ACTOR, "nobody", system_id="n", password="x", max_binds=1, allowed_ips=[]
        )


async def test_add_credit(conn: asyncpg.Connection, heard: Heard) -> None:
    await _new_account(conn)
    await heard.next()
    entry = await directory.add_credit(conn, ACTOR, "acme", Decimal("5.25"), "invoice 7")
    assert (entry.kind, entry.amount, entry.balance, entry.actor) == (
        "top_up",
        Decimal("5.25"),
        Decimal("15.25"),
        ACTOR,
    )
    audit = await _expect_change(conn, heard, "credit.add", "acme")
    assert audit["before"] == {"credit": "10"} and audit["after"]["balance"] == "15.25"
    down = await directory.add_credit(conn, ACTOR, "acme", Decimal("-1"), "correction")
    assert down.kind == "adjustment" and down.balance == Decimal("14.25")
    assert await balance_identity(conn, "acme") == (Decimal("14.25"), Decimal("14.25"))
    with pytest.raises(NotFound):
        await directory.add_credit(conn, ACTOR, "nobody", Decimal("1"), "x")


async def test_an_unverified_account_takes_no_top_up_but_an_adjustment(
    conn: asyncpg.Connection,
) -> None:
    await _new_account(conn, verified=False)
    with pytest.raises(Conflict) as info:
        await directory.add_credit(conn, ACTOR, "acme", Decimal("1"), "x")
    assert info.value.code == "account_unverified"
    await directory.add_credit(conn, ACTOR, "acme", Decimal("-1"), "fee")
    assert await balance_identity(conn, "acme") == (Decimal("9"), Decimal("9"))


async def test_numbers(conn: asyncpg.Connection, heard: Heard) -> None:
    await _new_account(conn, "a")
    await _new_account(conn, "b")
    await heard.next()
    await heard.next()
    shown = await directory.put_number(
        conn, ACTOR, "+14155550199", account_id="a", type="long_code", rate=0.5
    )
    assert shown == {"number": "+14155550199", "account": "a", "type": "long_code", "rate": 0.5}
    await _expect_change(conn, heard, "number.put", "+14155550199")
    # Re-assigned to another account.
    moved = await directory.put_number(
        conn, ACTOR, "+14155550199", account_id="b", type="toll_free", rate=None
    )
    entry = await _expect_change(conn, heard, "number.put", "+14155550199")
    assert entry["before"] == shown and entry["after"] == moved
    assert (await directory.load(conn)).numbers == (
        directory.NumberRow("+14155550199", "b", "toll_free", None),
    )
    with pytest.raises(NotFound) as missing:
        await directory.put_number(
            conn, ACTOR, "+1", account_id="nobody", type="long_code", rate=None
        )
    assert missing.value.what == "account"
    await directory.delete_number(conn, ACTOR, "+14155550199")
    await _expect_change(conn, heard, "number.delete", "+14155550199")
    with pytest.raises(NotFound) as gone:
        await directory.delete_number(conn, ACTOR, "+14155550199")
    assert gone.value.what == "number"


async def test_sender_ids(conn: asyncpg.Connection, heard: Heard) -> None:
    await _new_account(conn)
    await heard.next()
    shown = await directory.put_sender_id(conn, ACTOR, "acme", "ACME", ["AE", "SA"])
    assert shown == {"sender_id": "ACME", "countries": ["AE", "SA"]}
    await _expect_change(conn, heard, "sender_id.put", "acme/ACME")
    await directory.put_sender_id(conn, ACTOR, "acme", "ACME", ["AE"])
    entry = await _expect_change(conn, heard, "sender_id.put", "acme/ACME")
    assert entry["before"]["countries"] == ["AE", "SA"] and entry["after"]["countries"] == ["AE"]
    await directory.put_sender_id(conn, ACTOR, "acme", "ACMEPAY", ["GB"])
    await heard.next()
    assert [s["sender_id"] for s in await directory.list_sender_ids(conn, "acme")] == [
        "ACME",
        "ACMEPAY",
    ]
    assert (await directory.load(conn)).sender_ids[0] == directory.SenderIdRow(
        "acme", "ACME", ("AE",)
    )
    await directory.delete_sender_id(conn, ACTOR, "acme", "ACME")
    await _expect_change(conn, heard, "sender_id.delete", "acme/ACME")
    with pytest.raises(NotFound):
        await directory.delete_sender_id(conn, ACTOR, "acme", "ACME")
    with pytest.raises(NotFound):
        await directory.put_sender_id(conn, ACTOR, "nobody", "X", ["GB"])
    with pytest.raises(NotFound):
        await directory.list_sender_ids(conn, "nobody")


async def test_a_refused_change_writes_nothing_and_notifies_nobody(
    conn: asyncpg.Connection, heard: Heard
) -> None:
    await _new_account(conn, verified=False)
    await heard.next()
    count = len(await _audit(conn))
    with pytest.raises(Conflict):
        await directory.add_credit(conn, ACTOR, "acme", Decimal("1"), "x")
    with pytest.raises(Conflict):
        await _new_account(conn)
    with pytest.raises(NotFound):
        await directory.delete_number(conn, ACTOR, "+1555")
    await asyncio.sleep(0.1)
    assert heard.none_pending() and len(await _audit(conn)) == count


async def test_no_secret_reaches_the_audit_log(conn: asyncpg.Connection) -> None:
    await _sync(conn, [_demo()])
    secret = await _new_account(conn)
    made = await directory.create_api_key(conn, ACTOR, "acme", "k", None)
    await directory.put_smpp(
        conn, ACTOR, "acme", system_id="acme", password="pw-acme", max_binds=1, allowed_ips=[]
    )
    await directory.revoke_api_key(conn, ACTOR, "acme", made["key_id"])
    hashes = [s.password_hash for s in (await directory.load(conn)).smpp]
    text = json.dumps(await _audit(conn), default=str)
    for leaked in [secret, made["key"], "pw-acme", "demo-pass", "demo-key", "demo-secret", *hashes]:
        assert leaked not in text
    for digest in (directory.api_key_digest(made["key"]), directory.api_key_digest("demo-key")):
        assert digest.hex() not in text


# -- reads -------------------------------------------------------------------------


async def test_lists_page_in_order(conn: asyncpg.Connection) -> None:
    for name in ("c", "a", "e", "b", "d"):
        await _new_account(conn, name)
        await directory.put_number(
            conn,
            ACTOR,
            f"+1415555010{ord(name) - 96}",
            account_id=name,
            type="long_code",
            rate=None,
        )
    first = await directory.list_accounts(conn, limit=2, after=None)
    second = await directory.list_accounts(conn, limit=2, after=first[-1]["id"])
    third = await directory.list_accounts(conn, limit=2, after=second[-1]["id"])
    assert [[a["id"] for a in page] for page in (first, second, third)] == [
        ["a", "b"],
        ["c", "d"],
        ["e"],
    ]
    numbers = await directory.list_numbers(conn, limit=3, after=None)
    rest = await directory.list_numbers(conn, limit=3, after=numbers[-1]["number"])
    assert [n["account"] for n in numbers + rest] == ["a", "b", "c", "d", "e"]
    newest = await directory.list_audit(conn, limit=4, before=None)
    older = await directory.list_audit(conn, limit=100, before=newest[-1]["id"])
    ids = [e["id"] for e in newest + older]
    assert ids == sorted(ids, reverse=True) and len(ids) == 10 == len(set(ids))
    assert newest[0]["action"] == "number.put" and older[-1]["action"] == "account.create"


async def test_load_is_the_whole_directory(conn: asyncpg.Connection) -> None:
    await _sync(
        conn,
        [_demo(allowed_ips=["10.0.0.0/8"])],
        [NUMBER],
        {"demo": DEMO_FIELDS | {"allowed_ips"}},
    )
    await _new_account(conn, "acme", locked=True, lock_reason="kyc")
    await directory.put_sender_id(conn, ACTOR, "acme", "ACME", ["AE"])
    snapshot = await directory.load(conn)
    acme, demo = snapshot.accounts
    assert demo.id == "demo" and demo.allowed_ips == ("10.0.0.0/8",) and demo.max_tps == 5.0
    assert demo.managed_fields == frozenset(
        {"api_keys", "allowed_ips", "currency", "max_tps", "smpp", "webhook_secret"}
    )
    assert acme.locked and acme.lock_reason == "kyc" and acme.managed_fields is None
    assert acme.credit_limit == Decimal(0) and acme.timezone == "UTC"
    assert "demo-secret" not in repr(demo)
    assert [s.system_id for s in snapshot.smpp] == ["demo"]
    assert snapshot.sender_ids == (directory.SenderIdRow("acme", "ACME", ("AE",)),)


async def test_touch_api_keys_keeps_the_latest_use(conn: asyncpg.Connection) -> None:
    await _new_account(conn)
    a = await directory.create_api_key(conn, ACTOR, "acme", "a", None)
    b = await directory.create_api_key(conn, ACTOR, "acme", "b", None)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    await directory.touch_api_keys(conn, {a["key_id"]: t0 + timedelta(hours=1), b["key_id"]: t0})
    await directory.touch_api_keys(conn, {a["key_id"]: t0, "key_unknown": t0})
    used = {k["key_id"]: k["last_used_at"] for k in await directory.list_api_keys(conn, "acme")}
    assert used == {a["key_id"]: t0 + timedelta(hours=1), b["key_id"]: t0}
    await directory.touch_api_keys(conn, {})
