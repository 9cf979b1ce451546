"""Webhook secret rotation through the operator API (CONTRACT §3, §8) on a
real PostgreSQL: set the next secret, promote it or call the rotation off;
fingerprints only in answers and audit rows; the file's secret is the
file's (409 managed_by_config); every process reloads on the NOTIFY; and
callback_sent is an operator-patchable field."""

from __future__ import annotations

import asyncio
import hashlib
import json

import asyncpg
import pytest

from smsrouter.router.accounts import AccountDirectory
from smsrouter.router.config import AccountConfig
from smsrouter.router.store import directory
from smsrouter.router.store.directory import Directory
from smsrouter.router.store.directory_watch import DirectoryWatch
from tests.integration.test_admin_api import Admin, admin

__all__ = ["admin"]  # a fixture, used by name

NEXT = "whsec-next-0123456789abcdef"
LATER = "whsec-later-abcdef0123456789"


def _fp(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


async def _created(admin: Admin, account_id: str = "acme") -> str:
    status, body = await admin.call("POST", "/accounts", {"id": account_id})
    assert status == 201, body
    secret: str = body["webhook_secret"]
    return secret


async def _secrets(db_pool: asyncpg.Pool, account_id: str = "acme") -> tuple[str, str]:
    row = await db_pool.fetchrow(
        "SELECT webhook_secret, webhook_secret_next FROM accounts WHERE id = $1", account_id
    )
    return row[0], row[1]


async def test_a_rotation_sets_the_next_secret_then_promotes_it(
    admin: Admin, db_pool: asyncpg.Pool
) -> None:
    first = await _created(admin)
    status, state = await admin.call("GET", "/accounts/acme/webhook-secret")
    assert (status, state) == (200, {"current": _fp(first), "next": None,
                                     "managed_by_config": False})  # fmt: skip

    status, state = await admin.call("PUT", "/accounts/acme/webhook-secret", {"next": NEXT})
    assert (status, state) == (200, {"current": _fp(first), "next": _fp(NEXT),
                                     "managed_by_config": False})  # fmt: skip
    assert await _secrets(db_pool) == (first, NEXT)

    status, state = await admin.call("POST", "/accounts/acme/webhook-secret/promote")
    assert (status, state["current"], state["next"]) == (200, _fp(NEXT), None)
    assert await _secrets(db_pool) == (NEXT, "")

    status, problem = await admin.call("POST", "/accounts/acme/webhook-secret/promote")
    assert (status, problem["code"], problem["field"]) == (409, "no_next_secret", "next")

    status, audit = await admin.call("GET", "/audit")
    rotation = [e for e in audit["entries"] if e["action"].startswith("webhook_secret.")]
    assert [(e["actor"], e["action"], e["target"]) for e in rotation] == [
        ("ops", "webhook_secret.promote", "acme"),
        ("ops", "webhook_secret.put_next", "acme"),
    ]
    assert rotation[1]["before"] == {"current": _fp(first), "next": None}
    assert rotation[1]["after"] == {"current": _fp(first), "next": _fp(NEXT)}
    assert rotation[0]["after"] == {"current": _fp(NEXT), "next": None}
    # No answer the API gave after the account's creation holds a secret.
    assert not any(secret in text for text in admin.seen[1:] for secret in (first, NEXT))


async def test_a_rotation_called_off_leaves_the_current_secret(
    admin: Admin, db_pool: asyncpg.Pool
) -> None:
    first = await _created(admin)
    await admin.call("PUT", "/accounts/acme/webhook-secret", {"next": NEXT})
    # Another next secret replaces the first one; the same one again is no change.
    assert (await admin.call("PUT", "/accounts/acme/webhook-secret", {"next": LATER}))[0] == 200
    assert (await admin.call("PUT", "/accounts/acme/webhook-secret", {"next": LATER}))[0] == 200
    assert await _secrets(db_pool) == (first, LATER)
    assert await admin.call("DELETE", "/accounts/acme/webhook-secret/next") == (204, None)
    assert await admin.call("DELETE", "/accounts/acme/webhook-secret/next") == (204, None)
    assert await _secrets(db_pool) == (first, "")
    _, audit = await admin.call("GET", "/audit")
    actions = [e["action"] for e in audit["entries"] if e["action"].startswith("webhook_secret.")]
    assert actions == [
        "webhook_secret.delete_next",
        "webhook_secret.put_next",
        "webhook_secret.put_next",
    ]


async def test_bad_next_secrets_are_refused_without_echoing_them(
    admin: Admin, db_pool: asyncpg.Pool
) -> None:
    first = await _created(admin)
    for body in ({"next": "short-secret"}, {"next": "has a space in it 0123"},
                 {"next": "line\nend-0123456789abc"}, {"next": 12345678901234567}):  # fmt: skip
        status, problem = await admin.call("PUT", "/accounts/acme/webhook-secret", body)
        assert (status, problem["errors"][0]["field"]) == (422, "next"), problem
        assert str(body["next"]) not in json.dumps(problem)
    status, problem = await admin.call(
        "PUT", "/accounts/acme/webhook-secret", {"next": NEXT, "current": "x"}
    )
    assert status == 422 and {e["field"] for e in problem["errors"]} == {"current"}
    assert NEXT not in json.dumps(problem)
    status, problem = await admin.call("PUT", "/accounts/acme/webhook-secret", {})
    assert (status, problem["errors"][0]["code"]) == (422, "required")
    status, problem = await admin.call(
        "PUT", "/accounts/acme/webhook-secret", raw=b'{"next": "whsec-unterminated'
    )
    assert (status, problem["code"]) == (400, "malformed_json")
    assert "unterminated" not in problem["detail"]
    status, problem = await admin.call("PUT", "/accounts/acme/webhook-secret", {"next": first})
    assert (status, problem["code"]) == (409, "secret_in_use")
    assert first not in json.dumps(problem)
    status, problem = await admin.call("PUT", "/accounts/nobody/webhook-secret", {"next": NEXT})
    assert (status, problem["code"]) == (404, "not_found")
    assert (await admin.call("GET", "/accounts/nobody/webhook-secret"))[0] == 404
    assert await _secrets(db_pool) == (first, "")


@pytest.mark.parametrize(
    ("fields", "managed"),
    [
        ({"webhook_secret": "file-secret-0123456789"}, "webhook_secret"),
        ({"webhook_secret_next": "file-next-0123456789"}, "webhook_secret_next"),
    ],
)
async def test_a_secret_the_config_file_sets_is_409_managed_by_config(
    admin: Admin, db_pool: asyncpg.Pool, fields: dict[str, str], managed: str
) -> None:
    account = AccountConfig(id="cfg", **fields)  # type: ignore[arg-type]
    async with db_pool.acquire() as conn:
        await directory.sync_config(conn, [account], [], {"cfg": frozenset({"id", *fields})})
    before = await _secrets(db_pool, "cfg")
    status, state = await admin.call("GET", "/accounts/cfg/webhook-secret")
    assert status == 200 and state["managed_by_config"] is True
    for method, path, body in (
        ("PUT", "/accounts/cfg/webhook-secret", {"next": NEXT}),
        ("POST", "/accounts/cfg/webhook-secret/promote", None),
        ("DELETE", "/accounts/cfg/webhook-secret/next", None),
    ):
        status, problem = await admin.call(method, path, body)
        assert (status, problem["code"], problem["field"]) == (409, "managed_by_config", managed)
    assert await _secrets(db_pool, "cfg") == before


async def test_an_account_of_the_file_without_a_secret_is_the_operators_to_rotate(
    admin: Admin, db_pool: asyncpg.Pool
) -> None:
    async with db_pool.acquire() as conn:
        await directory.sync_config(conn, [AccountConfig(id="cfg")], [], {"cfg": frozenset({"id"})})
    assert (await admin.call("PUT", "/accounts/cfg/webhook-secret", {"next": NEXT}))[0] == 200
    assert (await admin.call("POST", "/accounts/cfg/webhook-secret/promote"))[0] == 200
    # A reload of the file (SIGHUP) keeps what the operator set.
    async with db_pool.acquire() as conn:
        await directory.sync_config(conn, [AccountConfig(id="cfg")], [], {"cfg": frozenset({"id"})})
    assert await _secrets(db_pool, "cfg") == (NEXT, "")


async def test_every_process_signs_with_both_secrets_after_the_notify(
    admin: Admin, db_pool: asyncpg.Pool
) -> None:
    first = await _created(admin)
    accounts = AccountDirectory()
    snapshots: asyncio.Queue[Directory] = asyncio.Queue()

    def applied(snapshot: Directory) -> None:
        accounts.apply(snapshot)
        snapshots.put_nowait(snapshot)

    watch = DirectoryWatch(db_pool, applied)
    await watch.reload()
    watch.start()
    try:
        await asyncio.sleep(0.3)  # the watch is listening
        await admin.call("PUT", "/accounts/acme/webhook-secret", {"next": NEXT})
        while accounts.get("acme").webhook_secrets != (first, NEXT):  # type: ignore[union-attr]
            await asyncio.wait_for(snapshots.get(), 5)
        await admin.call("POST", "/accounts/acme/webhook-secret/promote")
        while accounts.get("acme").webhook_secrets != (NEXT,):  # type: ignore[union-attr]
            await asyncio.wait_for(snapshots.get(), 5)
    finally:
        await watch.stop()


async def test_callback_sent_is_patched_and_shown(admin: Admin) -> None:
    await _created(admin)
    status, account = await admin.call("GET", "/accounts/acme")
    assert account["callback_sent"] is False
    status, account = await admin.call("PATCH", "/accounts/acme", {"callback_sent": True})
    assert (status, account["callback_sent"]) == (200, True)
    status, problem = await admin.call("PATCH", "/accounts/acme", {"callback_sent": "yes"})
    assert (status, problem["errors"][0]["field"]) == (422, "callback_sent")
    status, created = await admin.call("POST", "/accounts", {"id": "b", "callback_sent": True})
    assert (status, created["callback_sent"]) == (201, True)
