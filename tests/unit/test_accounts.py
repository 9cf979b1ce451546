"""The per-process account directory (router/accounts.py): built from a
snapshot of the rows, replaced whole; expired keys refused; key use
remembered for api_keys.last_used_at; SMPP passwords checked against their
scrypt hash once, then remembered without keeping the password."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from smsrouter.router.accounts import AccountDirectory, PasswordCheck, directory_of_config
from smsrouter.router.config import AccountConfig, AccountSmpp
from smsrouter.router.passwords import hash_password
from smsrouter.router.store.directory import ApiKeyRow, api_key_digest


def _directory() -> AccountDirectory:
    return AccountDirectory(
        [
            AccountConfig(
                id="a", api_keys=["key-a"], smpp=AccountSmpp(system_id="sa", password="pw")
            ),
            AccountConfig(id="b", api_keys=["key-b"], locked=True),
        ]
    )


def test_look_ups_by_key_system_id_and_id() -> None:
    accounts = _directory()
    a = accounts.by_api_key("key-a")
    assert a is not None and a.id == "a"
    assert accounts.by_system_id("sa") is a and accounts.get("a") is a
    assert accounts.by_api_key("nope") is None and accounts.by_system_id("nope") is None
    b = accounts.get("b")
    assert b is not None and b.locked and b.smpp_system_id is None
    assert {x.id for x in accounts} == {"a", "b"}


def test_a_new_snapshot_replaces_everything() -> None:
    accounts = _directory()
    rows = directory_of_config([AccountConfig(id="c", api_keys=["key-c"])])
    accounts.apply(rows)
    assert accounts.by_api_key("key-a") is None and accounts.get("a") is None
    assert accounts.by_system_id("sa") is None
    c = accounts.by_api_key("key-c")
    assert c is not None and c.id == "c"


def test_an_expired_key_is_refused_and_use_is_remembered() -> None:
    rows = directory_of_config([AccountConfig(id="a")])
    now = datetime.now(UTC)
    keys = (
        ApiKeyRow("key_live", "a", api_key_digest("live"), now + timedelta(hours=1)),
        ApiKeyRow("key_old", "a", api_key_digest("old"), now - timedelta(seconds=1)),
        ApiKeyRow("key_orphan", "gone", api_key_digest("orphan"), None),
    )
    accounts = AccountDirectory()
    accounts.apply(replace(rows, api_keys=keys))
    assert accounts.by_api_key("old") is None
    assert accounts.by_api_key("orphan") is None  # a key of no account in the snapshot
    assert accounts.by_api_key("live") is not None
    used = accounts.take_used()
    assert set(used) == {"key_live"} and used["key_live"] >= now
    assert accounts.take_used() == {}


def test_the_directory_shows_no_secret() -> None:
    accounts = _directory()
    a = accounts.get("a")
    assert a is not None
    assert "pw" not in repr(a).split("smpp_system_id")[0]
    assert "scrypt$" not in repr(a) and "key-a" not in repr(a)


async def test_a_password_is_hashed_once_then_known_by_its_hmac() -> None:
    check = PasswordCheck()
    encoded = await asyncio.to_thread(hash_password, "secret8")
    assert not check.known("secret8", encoded)
    assert await check.check("secret8", encoded)
    assert check.known("secret8", encoded)
    assert not check.known("secret9", encoded)
    assert not await check.check("secret9", encoded)
    # What is remembered is not the password.
    assert all(b"secret8" not in mac for mac in check._known.values())
