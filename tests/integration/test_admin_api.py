"""The operator API (CONTRACT §8) over real HTTP, on a real PostgreSQL with
the real directory: authentication, every route, the problems of admin_http
(400, 401, 404, 409, 422, 429, 503), pagination, the audit log, and that no
secret is shown but in the answers that show one once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest

from smsrouter.connectors.admin_api import AdminApi
from smsrouter.router.auth_throttle import AuthThrottle
from smsrouter.router.config import AccountConfig, AccountSmpp, NumberConfig
from smsrouter.router.store import directory

OPS_TOKEN = "ops-token-0123456789abcdefghij"
AUDITOR_TOKEN = "auditor-token-0123456789abcdef"
PLANS = frozenset({"gold"})


class Admin:
    """A client of one running AdminApi, remembering every answer's text."""

    def __init__(self, session: aiohttp.ClientSession, api: AdminApi) -> None:
        self.session = session
        self.api = api
        self.seen: list[str] = []

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = OPS_TOKEN,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        async with self.session.request(
            method, "/admin/v1" + path, data=data, headers=headers
        ) as response:
            text = await response.text()
            self.seen.append(text)
            if response.status == 204:
                assert text == ""
                return 204, None
            if response.status >= 400:
                assert response.content_type == "application/problem+json"
            return response.status, json.loads(text)


@pytest.fixture
async def admin(db_pool: asyncpg.Pool) -> AsyncIterator[Admin]:
    # These tests list and count accounts: they start from an empty
    # directory, without the funded accounts of tests/integration/conftest.py.
    await db_pool.execute("DELETE FROM accounts")
    api = AdminApi(
        db_pool, [("ops", OPS_TOKEN), ("auditor", AUDITOR_TOKEN)], price_plans=lambda: PLANS
    )
    await api.server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{api.server.port}") as session:
            yield Admin(session, api)
    finally:
        await api.server.stop()


async def _account(admin: Admin, account_id: str, **fields: Any) -> dict[str, Any]:
    status, body = await admin.call("POST", "/accounts", {"id": account_id, **fields})
    assert status == 201, body
    return body


def _fields(problem: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: e["code"] for e in problem["errors"]}


# ----------------------------------------------------------- authentication


async def test_a_missing_or_unknown_token_is_401_and_a_known_one_names_the_actor(
    admin: Admin,
) -> None:
    for token in (None, "not-a-token-of-the-config-file"):
        status, body = await admin.call("GET", "/accounts", token=token)
        assert status == 401
        assert body["code"] == "unauthorized"
    async with admin.session.get("/admin/v1/accounts") as response:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    status, _ = await admin.call("POST", "/accounts", {"id": "acme"}, token=AUDITOR_TOKEN)
    assert status == 201
    status, audit = await admin.call("GET", "/audit")
    assert [(e["actor"], e["action"], e["target"]) for e in audit["entries"]] == [
        ("auditor", "account.create", "acme")
    ]


async def test_failed_tokens_are_throttled_right_ones_too(db_pool: asyncpg.Pool) -> None:
    api = AdminApi(
        db_pool, [("ops", OPS_TOKEN)], price_plans=lambda: PLANS,
        auth_throttle=AuthThrottle(limit=3, window=60, cooldown=60),
    )  # fmt: skip
    await api.server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{api.server.port}") as session:
            admin = Admin(session, api)
            for _ in range(3):
                assert (await admin.call("GET", "/accounts", token="wrong-guess"))[0] == 401
            status, body = await admin.call("GET", "/accounts")
            assert status == 429
            assert body["code"] == "auth_throttled"
    finally:
        await api.server.stop()


# ----------------------------------------------------------- accounts


async def test_accounts_are_created_read_listed_and_patched(admin: Admin) -> None:
    async with admin.session.post(
        "/admin/v1/accounts",
        json={"id": "acme", "currency": "USD", "credit": "12.50", "verified": False,
              "callback_url": "https://acme.example/dlr", "allowed_ips": ["10.0.0.0/8"],
              "timezone": "Europe/Paris", "price_plan": "gold", "allowed_countries": ["FR"]},
        headers={"Authorization": f"Bearer {OPS_TOKEN}"},
    ) as response:  # fmt: skip
        assert response.status == 201
        assert response.headers["Location"] == "/admin/v1/accounts/acme"
        created = await response.json()
    assert len(created.pop("webhook_secret")) >= 32
    assert created["id"] == "acme"
    assert created["currency"] == "USD"
    assert Decimal(created["credit"]) == Decimal("12.50")
    assert created["verified"] is False
    assert created["callback_url"] == "https://acme.example/dlr"
    assert created["allowed_ips"] == ["10.0.0.0/8"]
    assert created["timezone"] == "Europe/Paris"
    assert created["price_plan"] == "gold"
    assert created["allowed_countries"] == ["FR"]
    assert created["managed_fields"] is None
    assert created["smpp"] is None

    status, shown = await admin.call("GET", "/accounts/acme")
    assert status == 200
    assert shown == created

    status, patched = await admin.call(
        "PATCH", "/accounts/acme",
        {"locked": True, "lock_reason": "unpaid", "max_tps": 5, "daily_limit": 1000,
         "credit_limit": "100.25", "stop_reply": "Bye", "templates_required": True},
    )  # fmt: skip
    assert status == 200, patched
    assert patched["locked"] is True
    assert patched["lock_reason"] == "unpaid"
    assert patched["max_tps"] == 5
    assert patched["daily_limit"] == 1000
    assert Decimal(patched["credit_limit"]) == Decimal("100.25")
    assert patched["stop_reply"] == "Bye"
    assert patched["templates_required"] is True
    assert patched["callback_url"] == "https://acme.example/dlr"  # not sent: unchanged

    # An empty patch changes nothing and is not audited.
    status, same = await admin.call("PATCH", "/accounts/acme", {})
    assert status == 200
    assert same == patched

    status, listed = await admin.call("GET", "/accounts")
    assert status == 200
    assert listed == {"accounts": [patched], "next": None}

    status, audit = await admin.call("GET", "/audit")
    assert [(e["actor"], e["action"], e["target"]) for e in audit["entries"]] == [
        ("ops", "account.patch", "acme"),
        ("ops", "account.create", "acme"),
    ]
    change = audit["entries"][0]
    assert change["before"]["locked"] is False
    assert change["after"]["locked"] is True


async def test_an_account_created_twice_is_409_account_exists(admin: Admin) -> None:
    await _account(admin, "acme")
    status, body = await admin.call("POST", "/accounts", {"id": "acme"})
    assert status == 409
    assert body["code"] == "account_exists"


async def test_unknown_things_are_404(admin: Admin) -> None:
    await _account(admin, "acme")
    for method, path, body in [
        ("GET", "/accounts/nobody", None),
        ("PATCH", "/accounts/nobody", {"locked": True}),
        ("GET", "/accounts/nobody/ledger", None),
        ("POST", "/accounts/nobody/credit", {"amount": "1", "reference": "r"}),
        ("POST", "/accounts/nobody/api-keys", {"name": "k"}),
        ("DELETE", "/accounts/acme/api-keys/key_0000000000000000", None),
        ("PUT", "/accounts/nobody/smpp", {"system_id": "s", "password": "p", "max_binds": 1}),
        ("DELETE", "/numbers/%2B14155550999", None),
    ]:
        status, problem = await admin.call(method, path, body)
        assert (status, problem["code"]) == (404, "not_found"), (method, path, problem)


# ----------------------------------------------------------- 400 and 422


async def test_every_bad_field_of_a_body_is_named_in_one_422(admin: Admin) -> None:
    status, body = await admin.call(
        "POST", "/accounts",
        {"id": "bad id!", "currency": "euro", "credit": 12.5, "credit_limit": "-1",
         "allowed_ips": ["10.0.0.0/8", "300.1.1.1"], "timezone": "Mars/Olympus",
         "callback_url": "ftp://acme.example/dlr", "inbound_url": "not a url",
         "allowed_countries": ["FR", "fra"], "price_plan": "platinum", "colour": "blue",
         "daily_limit": -1, "max_tps": "fast", "help_reply": "x" * 481},
    )  # fmt: skip
    assert status == 422
    assert body["code"] == "invalid_request"
    assert _fields(body) == {
        "colour": "unknown_field",
        "id": "invalid",
        "currency": "invalid",
        "credit": "invalid",
        "credit_limit": "invalid",
        "allowed_ips": "invalid",
        "timezone": "invalid",
        "callback_url": "invalid_url",
        "inbound_url": "invalid_url",
        "allowed_countries": "invalid",
        "price_plan": "unknown_price_plan",
        "daily_limit": "invalid",
        "max_tps": "invalid",
        "help_reply": "invalid",
    }
    status, _ = await admin.call("GET", "/accounts/acme")
    assert status == 404  # nothing was written
    status, audit = await admin.call("GET", "/audit")
    assert audit == {"entries": [], "next": None}


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"id": "a", "mood": "happy"}, "mood", "unknown_field"),
        ({"id": "a", "credit": 12.5}, "credit", "invalid"),
        ({"id": "a", "credit": 12}, "credit", "invalid"),
        ({"id": "a", "credit": "12.1234567"}, "credit", "invalid"),
        ({"id": "a", "credit": "1234567890123"}, "credit", "invalid"),
        ({"id": "a", "credit": "1e3"}, "credit", "invalid"),
        ({"id": "a", "credit": "NaN"}, "credit", "invalid"),
        ({"id": "a", "allowed_ips": ["10.0.0.300"]}, "allowed_ips", "invalid"),
        ({"id": "a", "allowed_ips": [10]}, "allowed_ips", "invalid"),
        ({"id": "a", "timezone": "Europe/Nowhere"}, "timezone", "invalid"),
        ({"id": "a", "timezone": "../../etc/passwd"}, "timezone", "invalid"),
        ({"id": "a", "alert_url": "javascript:alert(1)"}, "alert_url", "invalid_url"),
        ({"id": "a", "allowed_countries": ["fr"]}, "allowed_countries", "invalid"),
        ({"id": "a", "verified": "yes"}, "verified", "invalid"),
        ({"id": "a", "daily_alarm": 1.5}, "daily_alarm", "invalid"),
        ({"id": "a", "max_tps": -1}, "max_tps", "invalid"),
        ({"id": "a", "lock_reason": "x" * 501}, "lock_reason", "invalid"),
        ({"currency": "EUR"}, "id", "required"),
    ],
)
async def test_a_bad_field_is_422_naming_it(
    admin: Admin, body: dict[str, Any], field: str, code: str
) -> None:
    status, problem = await admin.call("POST", "/accounts", body)
    assert status == 422
    assert _fields(problem) == {field: code}


async def test_a_json_number_for_money_is_refused_with_its_own_detail(admin: Admin) -> None:
    await _account(admin, "acme")
    for method, path, body, field in [
        ("POST", "/accounts", {"id": "b", "credit": 5}, "credit"),
        ("PATCH", "/accounts/acme", {"credit_limit": 10.5}, "credit_limit"),
        ("POST", "/accounts/acme/credit", {"amount": 10, "reference": "r"}, "amount"),
    ]:
        status, problem = await admin.call(method, path, body)
        assert status == 422
        assert problem["errors"] == [
            {"field": field, "code": "invalid", "detail": "a decimal string, not a JSON number"}
        ]


async def test_malformed_json_is_400(admin: Admin) -> None:
    for raw in (b"{not json", b"[1, 2]", b""):
        status, problem = await admin.call("POST", "/accounts", raw=raw)
        assert status == 400
        assert problem["code"] == "malformed_json"


# ----------------------------------------------------------- config-managed accounts


async def _sync_config_account(db_pool: asyncpg.Pool) -> None:
    account = AccountConfig(
        id="cfg", api_keys=["sk_config_key_0123456789abcdef"],
        smpp=AccountSmpp(system_id="cfgsys", password="secret1"),
        callback_url="https://cfg.example/dlr", daily_limit=50,
    )  # fmt: skip
    number = NumberConfig(number="+14155550100", account="cfg", type="long_code")
    fields = frozenset({"id", "api_keys", "smpp", "callback_url", "daily_limit"})
    async with db_pool.acquire() as conn:
        await directory.sync_config(conn, [account], [number], {"cfg": fields})


async def test_fields_the_config_file_sets_are_409_managed_by_config(
    admin: Admin, db_pool: asyncpg.Pool
) -> None:
    await _sync_config_account(db_pool)
    for field, value in (("callback_url", "https://other.example/"), ("daily_limit", 10)):
        status, problem = await admin.call("PATCH", "/accounts/cfg", {field: value})
        assert status == 409
        assert problem["code"] == "managed_by_config"
        assert problem["field"] == field
    status, patched = await admin.call("PATCH", "/accounts/cfg", {"daily_alarm": 40})
    assert status == 200
    assert patched["daily_alarm"] == 40

    status, problem = await admin.call(
        "PUT", "/accounts/cfg/smpp", {"system_id": "other", "password": "pw", "max_binds": 1}
    )
    assert (status, problem["code"]) == (409, "managed_by_config")
    status, keys = await admin.call("GET", "/accounts/cfg/api-keys")
    assert status == 200
    [config_key] = keys["api_keys"]
    assert config_key["managed_by_config"] is True
    status, problem = await admin.call("DELETE", f"/accounts/cfg/api-keys/{config_key['key_id']}")
    assert (status, problem["code"]) == (409, "managed_by_config")
    status, problem = await admin.call("DELETE", "/numbers/%2B14155550100")
    assert (status, problem["code"]) == (409, "managed_by_config")


# ----------------------------------------------------------- API keys


async def test_an_api_key_is_shown_once_listed_without_it_and_revoked(admin: Admin) -> None:
    await _account(admin, "acme")
    status, created = await admin.call(
        "POST", "/accounts/acme/api-keys", {"name": "backend", "expires_at": "2999-01-01T00:00:00Z"}
    )
    assert status == 201
    assert set(created) == {"key_id", "key", "name", "created_at", "expires_at"}
    assert created["key"].startswith("sk_")
    assert created["name"] == "backend"

    status, listed = await admin.call("GET", "/accounts/acme/api-keys")
    assert status == 200
    [key] = listed["api_keys"]
    assert key["key_id"] == created["key_id"]
    assert key["managed_by_config"] is False
    assert "key" not in key

    status, _ = await admin.call("DELETE", f"/accounts/acme/api-keys/{created['key_id']}")
    assert status == 204
    assert (await admin.call("GET", "/accounts/acme/api-keys"))[1] == {"api_keys": []}
    status, problem = await admin.call("DELETE", f"/accounts/acme/api-keys/{created['key_id']}")
    assert (status, problem["code"]) == (404, "not_found")


async def test_an_api_key_needs_a_name_and_a_future_expiry(admin: Admin) -> None:
    await _account(admin, "acme")
    status, problem = await admin.call(
        "POST", "/accounts/acme/api-keys", {"name": "", "expires_at": "2001-01-01T00:00:00Z"}
    )
    assert status == 422
    assert _fields(problem) == {"name": "invalid", "expires_at": "invalid"}
    status, problem = await admin.call(
        "POST", "/accounts/acme/api-keys", {"name": "k", "expires_at": "tomorrow"}
    )
    assert (status, _fields(problem)) == (422, {"expires_at": "invalid"})


# ----------------------------------------------------------- SMPP


async def test_smpp_credentials_are_put_and_a_taken_system_id_is_409(admin: Admin) -> None:
    await _account(admin, "acme")
    await _account(admin, "other")
    status, smpp = await admin.call(
        "PUT", "/accounts/acme/smpp",
        {"system_id": "acme", "password": "pw123456", "max_binds": 4, "allowed_ips": ["10.0.0.1"]},
    )  # fmt: skip
    assert status == 200
    assert smpp == {"system_id": "acme", "max_binds": 4, "allowed_ips": ["10.0.0.1"]}
    assert (await admin.call("GET", "/accounts/acme"))[1]["smpp"] == smpp

    status, problem = await admin.call(
        "PUT", "/accounts/other/smpp", {"system_id": "acme", "password": "x", "max_binds": 1}
    )
    assert status == 409
    assert problem["code"] == "system_id_taken"

    status, problem = await admin.call(
        "PUT", "/accounts/acme/smpp",
        {"system_id": "a" * 16, "password": "p" * 9, "max_binds": 0, "allowed_ips": ["x"]},
    )  # fmt: skip
    assert status == 422
    assert _fields(problem) == {
        "system_id": "invalid", "password": "invalid", "max_binds": "invalid",
        "allowed_ips": "invalid",
    }  # fmt: skip
    assert "p" * 9 not in json.dumps(problem)


# ----------------------------------------------------------- credit and ledger


async def test_credit_is_added_and_paged_through_the_ledger(admin: Admin) -> None:
    await _account(admin, "acme", credit="10")
    amounts = ["5.25", "-1.5", "100", "0.000001", "-3"]
    for i, amount in enumerate(amounts):
        status, entry = await admin.call(
            "POST", "/accounts/acme/credit", {"amount": amount, "reference": f"inv-{i}"}
        )
        assert status == 201, entry
        assert Decimal(entry["amount"]) == Decimal(amount)
        assert entry["kind"] == ("top_up" if Decimal(amount) > 0 else "adjustment")
        assert entry["account"] == "acme"
        assert entry["actor"] == "ops"
        assert entry["reference"] == f"inv-{i}"
    assert Decimal(entry["balance"]) == Decimal("10") + sum(Decimal(a) for a in amounts)

    references: list[str] = []
    after = None
    for expected in (2, 2, 1):
        path = "/accounts/acme/ledger?limit=2" + (f"&after={after}" if after else "")
        status, page = await admin.call("GET", path)
        assert status == 200
        assert len(page["entries"]) == expected
        references += [e["reference"] for e in page["entries"]]
        after = page["next"]
    assert after is None
    assert references == [f"inv-{i}" for i in reversed(range(5))]  # newest first

    status, account = await admin.call("GET", "/accounts/acme")
    assert Decimal(account["credit"]) == Decimal(entry["balance"])


async def test_a_top_up_of_an_unverified_account_is_409_but_an_adjustment_passes(
    admin: Admin,
) -> None:
    await _account(admin, "new", verified=False, credit="5")
    status, problem = await admin.call(
        "POST", "/accounts/new/credit", {"amount": "10", "reference": "r"}
    )
    assert (status, problem["code"]) == (409, "account_unverified")
    status, entry = await admin.call(
        "POST", "/accounts/new/credit", {"amount": "-1", "reference": "r"}
    )
    assert (status, entry["kind"]) == (201, "adjustment")


async def test_a_credit_amount_must_be_a_bounded_non_zero_decimal_string(admin: Admin) -> None:
    await _account(admin, "acme")
    for amount in ("0", "0.000", "1.0000001", "9999999999999", "12,50", " 1", "+", "1_000"):
        status, problem = await admin.call(
            "POST", "/accounts/acme/credit", {"amount": amount, "reference": "r"}
        )
        assert (status, _fields(problem)) == (422, {"amount": "invalid"}), amount
    status, problem = await admin.call(
        "POST", "/accounts/acme/credit", {"amount": "1", "reference": ""}
    )
    assert (status, _fields(problem)) == (422, {"reference": "invalid"})
    status, entry = await admin.call(
        "POST", "/accounts/acme/credit", {"amount": "999999999999.999999", "reference": "max"}
    )
    assert (status, entry["amount"]) == (201, "999999999999.999999")


# ----------------------------------------------------------- sender IDs


async def test_sender_ids_are_put_listed_and_deleted(admin: Admin) -> None:
    await _account(admin, "acme")
    status, put = await admin.call("PUT", "/accounts/acme/sender-ids/ACME", {"countries": ["AE"]})
    assert status == 200
    assert put == {"sender_id": "ACME", "countries": ["AE"]}
    status, put = await admin.call(
        "PUT", "/accounts/acme/sender-ids/ACME", {"countries": ["AE", "SA"]}
    )
    assert put == {"sender_id": "ACME", "countries": ["AE", "SA"]}
    status, listed = await admin.call("GET", "/accounts/acme/sender-ids")
    assert status == 200
    assert [(s["sender_id"], s["countries"]) for s in listed["sender_ids"]] == [
        ("ACME", ["AE", "SA"])
    ]
    status, _ = await admin.call("DELETE", "/accounts/acme/sender-ids/ACME")
    assert status == 204
    assert (await admin.call("GET", "/accounts/acme/sender-ids"))[1] == {"sender_ids": []}

    status, problem = await admin.call("PUT", "/accounts/acme/sender-ids/ACME", {"countries": []})
    assert (status, _fields(problem)) == (422, {"countries": "required"})
    status, problem = await admin.call(
        "PUT", "/accounts/acme/sender-ids/TOO-LONG-SENDER", {"countries": ["ae"]}
    )
    assert (status, _fields(problem)) == (422, {"sender_id": "invalid", "countries": "invalid"})


# ----------------------------------------------------------- numbers


async def test_numbers_are_put_listed_paged_and_deleted(admin: Admin) -> None:
    await _account(admin, "acme")
    numbers = ["+14155550101", "+14155550102", "12345", "ACME"]
    types = ["long_code", "toll_free", "short_code", "alphanumeric"]
    for number, kind in zip(numbers, types, strict=True):
        path = "/numbers/" + number.replace("+", "%2B")
        status, put = await admin.call("PUT", path, {"account": "acme", "type": kind, "rate": 2})
        assert status == 200, put
        assert put == {"number": number, "account": "acme", "type": kind, "rate": 2}

    listed: list[str] = []
    after = None
    for expected in (3, 1):
        path = "/numbers?limit=3" + (f"&after={after}" if after else "")
        status, page = await admin.call("GET", path)
        assert status == 200
        assert len(page["numbers"]) == expected
        listed += [n["number"] for n in page["numbers"]]
        after = page["next"]
    assert after is None
    assert listed == sorted(numbers)

    status, _ = await admin.call("DELETE", "/numbers/%2B14155550101")
    assert status == 204
    status, page = await admin.call("GET", "/numbers")
    assert "+14155550101" not in [n["number"] for n in page["numbers"]]


async def test_a_number_for_an_unknown_account_or_of_a_bad_form_is_422(admin: Admin) -> None:
    status, problem = await admin.call(
        "PUT", "/numbers/%2B14155550101", {"account": "nobody", "type": "long_code"}
    )
    assert (status, _fields(problem)) == (422, {"account": "unknown_account"})
    status, problem = await admin.call(
        "PUT", "/numbers/14155550101", {"account": "acme", "type": "landline", "rate": 0}
    )
    assert status == 422
    assert _fields(problem) == {"number": "invalid", "type": "invalid", "rate": "invalid"}


# ----------------------------------------------------------- pagination


async def test_accounts_and_the_audit_log_page_by_cursor(admin: Admin) -> None:
    ids = [f"acc{i}" for i in range(5)]
    for account_id in reversed(ids):
        await _account(admin, account_id)

    seen: list[str] = []
    after = account_cursor = None
    for expected in (2, 2, 1):
        path = "/accounts?limit=2" + (f"&after={after}" if after else "")
        status, page = await admin.call("GET", path)
        assert status == 200
        assert len(page["accounts"]) == expected
        seen += [a["id"] for a in page["accounts"]]
        after = page["next"]
        account_cursor = account_cursor or after
    assert after is None
    assert seen == ids

    status, first = await admin.call("GET", "/audit?limit=3")
    assert [e["target"] for e in first["entries"]] == ["acc0", "acc1", "acc2"]  # newest first
    status, rest = await admin.call("GET", f"/audit?limit=3&after={first['next']}")
    assert [e["target"] for e in rest["entries"]] == ["acc3", "acc4"]
    assert rest["next"] is None

    for query, field in (
        ("limit=0", "limit"), ("limit=501", "limit"), ("limit=x", "limit"),
        ("after=garbage!", "after"), ("colour=blue", "colour"),
    ):  # fmt: skip
        status, problem = await admin.call("GET", f"/accounts?{query}")
        assert status == 422, query
        assert list(_fields(problem)) == [field]
    # A cursor of another list is no position in this one.
    status, problem = await admin.call("GET", f"/audit?after={account_cursor}")
    assert (status, _fields(problem)) == (422, {"after": "invalid"})
    status, problem = await admin.call("GET", "/accounts?after=" + first["next"])
    assert (status, _fields(problem)) == (422, {"after": "invalid"})


# ----------------------------------------------------------- secrets


async def test_no_answer_or_audit_entry_holds_a_secret_but_the_shown_once_answers(
    admin: Admin, db_pool: asyncpg.Pool
) -> None:
    created = await _account(admin, "acme", verified=True)
    webhook_secret = created["webhook_secret"]
    create_account_answer = admin.seen[-1]
    status, key = await admin.call("POST", "/accounts/acme/api-keys", {"name": "k"})
    assert status == 201
    create_key_answer = admin.seen[-1]
    password = "Pw4smpp!"
    await admin.call(
        "PUT", "/accounts/acme/smpp", {"system_id": "acme", "password": password, "max_binds": 2}
    )
    await admin.call("PATCH", "/accounts/acme", {"callback_url": "https://acme.example/x"})
    await admin.call("POST", "/accounts/acme/credit", {"amount": "5", "reference": "r"})
    await admin.call("PUT", "/numbers/%2B14155550101", {"account": "acme", "type": "long_code"})
    await admin.call("PUT", "/accounts/acme/sender-ids/ACME", {"countries": ["AE"]})
    await admin.call("DELETE", f"/accounts/acme/api-keys/{key['key_id']}")
    for path in ("/accounts", "/accounts/acme", "/accounts/acme/api-keys", "/audit",
                 "/accounts/acme/ledger", "/numbers", "/accounts/acme/sender-ids"):  # fmt: skip
        assert (await admin.call("GET", path))[0] == 200

    secrets = (webhook_secret, key["key"], password)
    for answer in admin.seen:
        shown = [s for s in secrets if s in answer]
        if answer == create_account_answer:
            assert shown == [webhook_secret]
        elif answer == create_key_answer:
            assert shown == [key["key"]]
        else:
            assert shown == [], answer
    stored = await db_pool.fetch("SELECT before::text, after::text FROM audit_log")
    assert len(stored) == 8
    for row in stored:
        for secret in (*secrets, "scrypt$"):
            assert secret not in (row["before"] or "") + (row["after"] or "")


# ----------------------------------------------------------- the database away


async def test_a_database_that_is_away_is_503(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    api = AdminApi(pool, [("ops", OPS_TOKEN)], price_plans=lambda: PLANS)
    await api.server.start("127.0.0.1", 0)
    try:
        await pool.close()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{api.server.port}") as session:
            admin = Admin(session, api)
            status, problem = await admin.call("GET", "/accounts")
            assert status == 503
            assert problem["code"] == "store_unavailable"
    finally:
        await api.server.stop()


async def test_a_database_that_does_not_answer_in_time_is_503(db_pool: asyncpg.Pool) -> None:
    api = AdminApi(db_pool, [("ops", OPS_TOKEN)], price_plans=lambda: PLANS, request_timeout=0.5)
    await api.server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{api.server.port}") as session:
            admin = Admin(session, api)
            await _account(admin, "late")
            async with db_pool.acquire() as holder, holder.transaction():
                # The account's row stays locked past the request's deadline.
                await holder.execute("SELECT 1 FROM accounts WHERE id = 'late' FOR UPDATE")
                status, problem = await admin.call("PATCH", "/accounts/late", {"locked": True})
            assert status == 503
            assert problem["code"] == "store_timeout"
            status, account = await admin.call("GET", "/accounts/late")
            assert (status, account["locked"]) == (200, False)
    finally:
        await api.server.stop()
