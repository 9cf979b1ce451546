"""The OpenAPI documents (CONTRACT §3, §8) against the running daemon: both
are served (the operator's behind its token), valid OpenAPI 3.1, and what
the servers answer conforms to them. schemathesis generates requests from
each document, valid ones and invalid ones, a bounded number per operation
and the same ones on every run; every answer must be no 5xx, of a status
the operation documents, of the documented media type and schema (errors:
the problem with one of the documented codes), with the documented headers,
and an invalid request must be refused (4xx: the document is no stricter
than the server). A short scenario per API then walks the successes
fuzzing rarely reaches (a message accepted and read back; an account
created, changed, credited), and the requests that once answered 500."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import hypothesis
import hypothesis.errors
import schemathesis
from hypothesis import HealthCheck, Phase
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from smsrouter.connectors.openapi_admin import admin_document
from smsrouter.connectors.openapi_public import public_document
from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess

OPS_TOKEN = "ops-token-0123456789abcdef"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
KEY = {"Authorization": "Bearer key-a"}
SENDER = "12345"

CONFIG = f"""
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "a"
api_keys = ["key-a"]
credit = "1000000"
[[numbers]]
number = "{SENDER}"
account = "a"
type = "short_code"
[admin]
listen = "127.0.0.1:0"
tokens = [{{ name = "ops", token = "{OPS_TOKEN}" }}]
[shutdown]
drain_seconds = 1
"""

# (operation label, its path parameters, {"body"/"query"/...: ...}, the
# status expected)
Step = tuple[str, dict[str, Any], dict[str, Any], int]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Examples per operation and generation mode, more for the bodies with
# the most fields: about 600 requests in all over both documents, the
# same ones on every run.
EXAMPLES = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 5}
MORE_EXAMPLES = {
    "POST /v1/messages": {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 30},
    "POST /admin/v1/accounts": {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 15},
    "PATCH /admin/v1/accounts/{id}": {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 15},
}


def _admin_url(router: RouterProcess) -> str:
    return f"http://127.0.0.1:{router.admin_port}"


async def _started(start_router: StartRouter) -> RouterProcess:
    router = await start_router(CONFIG)
    await router.wait_for_event("carrier bound")
    return router


async def test_both_documents_are_served_and_valid(start_router: StartRouter) -> None:
    router = await _started(start_router)
    async with aiohttp.ClientSession() as http:
        # The app API's needs no key.
        async with http.get(router.base_url + "/v1/openapi.json") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            public = await resp.json()
        admin_url = _admin_url(router) + "/admin/v1/openapi.json"
        async with http.get(admin_url) as resp:
            assert resp.status == 401
            assert resp.content_type == "application/problem+json"
        async with http.get(admin_url, headers=OPS) as resp:
            assert resp.status == 200
            admin = await resp.json()
    assert public == public_document()
    assert admin == admin_document()
    for document in (public, admin):
        validate(document)
        assert document["openapi"] == "3.1.0"


Prepare = Callable[[Any, GenerationMode], None]


def _fuzz(
    document: dict[str, Any], base_url: str, headers: dict[str, str], prepare: Prepare
) -> tuple[Counter[int], list[str]]:
    """Every operation of the document, each mode's examples, each case
    `prepare`d first: the statuses answered, and the failures."""
    schema = schemathesis.openapi.from_dict(document)
    # The credential is the test's: a request without it is a 401 (and 20
    # of them a minute would throttle this address, CONTRACT §11).
    schema.config.generation.update(with_security_parameters=False)
    failures: list[str] = []
    answered: Counter[int] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in MORE_EXAMPLES.get(operation.label, EXAMPLES).items():
            run = _examples(operation, mode, examples, base_url, headers, prepare, answered)
            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                # Nothing to make invalid: no parameter, no body.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, FailureGroup) as failed:
                failures.append(f"{operation.label} ({mode.value}): {failed}")
    return answered, failures


def _examples(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    base_url: str,
    headers: dict[str, str],
    prepare: Prepare,
    answered: Counter[int],
) -> Callable[[], None]:
    """The run of one operation's examples in one mode."""
    # Invalid data must be refused (4xx): the document is no stricter than
    # the server.
    checks = CHECKS + [negative_data_rejection] * (mode is GenerationMode.NEGATIVE)

    @hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        prepare(case, mode)
        response = case.call(base_url=base_url, headers=headers, timeout=15)
        answered[response.status_code] += 1
        case.validate_response(response, checks=checks, headers=headers)

    return run  # type: ignore[no-any-return]


def _walk(
    document: dict[str, Any],
    base_url: str,
    headers: dict[str, str],
    steps: list[Step],
) -> list[dict[str, Any]]:
    """Each step (operation label, its path parameters, {"body"/"query": ...},
    the status expected), validated like a fuzzed case; the answers."""
    schema = schemathesis.openapi.from_dict(document)
    answers = []
    for label, path_parameters, parts, expected in steps:
        operation = schema.find_operation_by_label(label)
        assert operation is not None, label
        case = operation.Case(path_parameters=path_parameters, **parts)
        response = case.call(base_url=base_url, headers=headers, timeout=15)
        assert response.status_code == expected, (label, response.status_code, response.text)
        case.validate_response(response, checks=CHECKS, headers=headers)
        json_body = response.content and "json" in str(response.headers.get("content-type"))
        answers.append(response.json() if json_body else {})
    return answers


async def test_the_app_api_answers_as_its_document_says(start_router: StartRouter) -> None:
    router = await _started(start_router)
    document = public_document()
    # A round balance, as asyncpg reads it (Decimal('1.00E+6')), is still
    # a plain decimal string.
    (balance,) = await asyncio.to_thread(
        _walk, document, router.base_url, KEY, [("GET /v1/balance", {}, {}, 200)]
    )
    assert balance["credit"] == "1000000", balance
    answered, failures = await asyncio.to_thread(
        _fuzz, document, router.base_url, KEY, _a_sender_of_the_account
    )
    assert failures == [], "\n\n".join(failures)
    print("app API, statuses answered:", sorted(answered.items()))
    assert answered.total() >= 100, answered
    assert answered[202] > 0, answered  # messages accepted, not only refused

    def steps(*given: Step) -> list[dict[str, Any]]:
        return _walk(document, router.base_url, KEY, list(given))

    one = {"from": SENDER, "to": "+14155550123", "text": "hello", "client_ref": "r1"}
    batch = {"from": SENDER, "to": ["+14155550124", "nonsense"], "text": "hi"}
    (sent, _, _) = await asyncio.to_thread(
        steps,
        ("POST /v1/messages", {}, {"body": one}, 202),
        ("POST /v1/messages", {}, {"body": batch}, 202),
        ("POST /v1/templates", {}, {"body": {"name": "otp", "text": "code {code}"}}, 201),
    )
    message_id = sent["messages"][0]["id"]
    await asyncio.to_thread(
        steps,
        ("GET /v1/messages/{id}", {"id": message_id}, {}, 200),
        ("GET /v1/messages", {}, {"query": {"limit": 1}}, 200),
        ("GET /v1/balance", {}, {}, 200),
        ("GET /v1/ledger", {}, {"query": {"limit": 2}}, 200),
        ("PUT /v1/opt-outs/{number}", {"number": "+14155550199"}, {}, 201),
        ("GET /v1/opt-outs", {}, {}, 200),
        ("DELETE /v1/opt-outs/{number}", {"number": "+14155550199"}, {}, 204),
        ("GET /v1/templates", {}, {"query": {"status": "pending"}}, 200),
        ("GET /healthz", {}, {}, 200),
        ("GET /readyz", {}, {}, 200),
        ("GET /metrics", {}, {}, 200),
    )
    # What once answered 500 (or 503, failing the commit of every request
    # batched with it): a NUL, which PostgreSQL text cannot hold; a time
    # outside UTC's years; a validity beyond any date.
    send = {"from": SENDER, "to": "+14155550123", "text": "x"}
    await asyncio.to_thread(
        steps,
        ("POST /v1/messages", {}, {"body": {**send, "text": "a\x00b"}}, 422),
        ("POST /v1/messages", {}, {"body": {**send, "client_ref": "\x00"}}, 422),
        ("POST /v1/messages", {}, {"body": {**send, "validity": 10**12}}, 422),
        ("POST /v1/messages", {}, {"body": {**send, "send_at": "0001-01-01T00:00:00+14:00"}}, 422),
        ("POST /v1/templates", {}, {"body": {"name": "nul", "text": "\x00"}}, 422),
        ("GET /v1/messages", {}, {"query": {"client_ref": "\x00"}}, 400),
        ("GET /v1/messages", {}, {"query": {"since": "9999-12-31T23:59:59-14:00"}}, 422),
        ("GET /v1/templates/{id}", {"id": "a\x00"}, {}, 400),
        ("POST /v1/messages", {}, {"body": send}, 202),
    )


async def test_the_operator_api_answers_as_its_document_says(
    start_router: StartRouter, database_url: str
) -> None:
    router = await _started(start_router)
    document = admin_document()
    base_url = _admin_url(router)
    await asyncio.to_thread(
        _walk, document, base_url, OPS, [("POST /admin/v1/accounts", {}, {"body": FUZZED}, 201)]
    )
    answered, failures = await asyncio.to_thread(
        _fuzz, document, base_url, OPS, _an_existing_account
    )
    assert failures == [], "\n\n".join(failures)
    print("operator API, statuses answered:", sorted(answered.items()))
    assert answered.total() >= 200, answered
    assert answered[200] > 0 and answered[201] > 0, answered

    def steps(*given: Step) -> list[dict[str, Any]]:
        return _walk(document, base_url, OPS, list(given))

    account = {"id": "walked", "credit": "5", "allowed_countries": ["US"]}
    answers = await asyncio.to_thread(
        steps,
        ("POST /admin/v1/accounts", {}, {"body": account}, 201),
        ("PATCH /admin/v1/accounts/{id}", {"id": "walked"}, {"body": {"max_tps": 5}}, 200),
        ("GET /admin/v1/accounts", {}, {"query": {"limit": 1}}, 200),
        ("POST /admin/v1/accounts/{id}/api-keys", {"id": "walked"}, {"body": {"name": "k"}}, 201),
        ("GET /admin/v1/accounts/{id}/api-keys", {"id": "walked"}, {}, 200),
        (
            "PUT /admin/v1/accounts/{id}/smpp",
            {"id": "walked"},
            {"body": {"system_id": "walked", "password": "pw123456", "max_binds": 2}},
            200,
        ),
        (
            "POST /admin/v1/accounts/{id}/credit",
            {"id": "walked"},
            {"body": {"amount": "10.50", "reference": "r"}},
            201,
        ),
        ("GET /admin/v1/accounts/{id}/ledger", {"id": "walked"}, {}, 200),
        ("GET /admin/v1/accounts/{id}", {"id": "walked"}, {}, 200),
        (
            "PUT /admin/v1/accounts/{id}/webhook-secret",
            {"id": "walked"},
            {"body": {"next": "next-secret-0123456789"}},
            200,
        ),
        ("GET /admin/v1/accounts/{id}/webhook-secret", {"id": "walked"}, {}, 200),
        ("POST /admin/v1/accounts/{id}/webhook-secret/promote", {"id": "walked"}, {}, 200),
        ("DELETE /admin/v1/accounts/{id}/webhook-secret/next", {"id": "walked"}, {}, 204),
        (
            "PUT /admin/v1/accounts/{id}/sender-ids/{sender_id}",
            {"id": "walked", "sender_id": "ACME"},
            {"body": {"countries": ["AE"]}},
            200,
        ),
        ("GET /admin/v1/accounts/{id}/sender-ids", {"id": "walked"}, {}, 200),
        (
            "PUT /admin/v1/numbers/{number}",
            {"number": "+14155550777"},
            {"body": {"account": "walked", "type": "long_code", "rate": 1}},
            200,
        ),
        ("GET /admin/v1/numbers", {}, {}, 200),
        (
            "POST /admin/v1/accounts/{id}/opt-outs/import",
            {"id": "walked"},
            {"body": "+14155550100\nnonsense\n", "media_type": "text/plain"},
            200,
        ),
        ("GET /admin/v1/opt-outs", {}, {"query": {"account": "walked"}}, 200),
        ("GET /admin/v1/audit", {}, {"query": {"limit": 5}}, 200),
        ("DELETE /admin/v1/numbers/{number}", {"number": "+14155550777"}, {}, 204),
    )
    key_id = answers[3]["key_id"]
    await asyncio.to_thread(
        steps,
        (
            "DELETE /admin/v1/accounts/{id}/api-keys/{key_id}",
            {"id": "walked", "key_id": key_id},
            {},
            204,
        ),
    )
    # What once answered 500: a NUL (PostgreSQL text cannot hold one), a
    # time outside UTC's years.
    far = "9999-12-31T23:59:59-14:00"
    await asyncio.to_thread(
        steps,
        ("GET /admin/v1/accounts/{id}", {"id": "a\x00"}, {}, 400),
        ("GET /admin/v1/opt-outs", {}, {"query": {"account": "\x00"}}, 400),
        ("PATCH /admin/v1/accounts/{id}", {"id": "walked"}, {"body": {"lock_reason": "\x00"}}, 422),
        (
            "POST /admin/v1/accounts/{id}/credit",
            {"id": "walked"},
            {"body": {"amount": "1", "reference": "\x00"}},
            422,
        ),
        (
            "POST /admin/v1/accounts/{id}/api-keys",
            {"id": "walked"},
            {"body": {"name": "k", "expires_at": far}},
            422,
        ),
    )
    # A template of the app API, decided here.
    template = await _create_template(router, "walked-otp")
    await asyncio.to_thread(
        steps,
        ("GET /admin/v1/templates", {}, {"query": {"status": "pending"}}, 200),
        ("POST /admin/v1/templates/{id}/approve", {"id": template}, {}, 200),
        ("POST /admin/v1/templates/{id}/reject", {"id": template}, {"body": {"reason": "x"}}, 409),
    )
    # A suspended sender, as the opt-out rate would leave it (CONTRACT §6).
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO sender_states"
            " (number, account_id, state, opt_outs, recipients, rate, decided_by)"
            " VALUES ($1, 'a', 'suspended', 12, 100, 0.12, 'test')",
            SENDER,
        )
    finally:
        await conn.close()
    (listed, _) = await asyncio.to_thread(
        steps,
        ("GET /admin/v1/senders", {}, {"query": {"state": "suspended"}}, 200),
        ("POST /admin/v1/senders/{number}/resume", {"number": SENDER}, {}, 200),
    )
    assert [s["number"] for s in listed["senders"]] == [SENDER]
    # The status page takes the token as a Basic password too.
    basic = {"Authorization": "Basic " + base64.b64encode(f"ops:{OPS_TOKEN}".encode()).decode()}
    await asyncio.to_thread(
        _walk,
        document,
        base_url,
        basic,
        [("GET /admin/v1/status", {}, {}, 200), ("GET /status", {}, {}, 200)],
    )


def _a_sender_of_the_account(case: Any, mode: GenerationMode) -> None:
    """A valid send's sender and recipient: its other fields then reach
    the admission and the commit, not only the first check."""
    send = case.operation.label == "POST /v1/messages" and isinstance(case.body, dict)
    if send and mode is GenerationMode.POSITIVE:
        case.body["from"] = SENDER
        case.body["to"] = "+14155550123"


# The account the operator API's valid cases change (the config's is the
# file's: most changes of it are 409 managed_by_config).
FUZZED = {"id": "fuzzed", "credit": "100"}


def _an_existing_account(case: Any, mode: GenerationMode) -> None:
    of_account = case.operation.path.startswith("/admin/v1/accounts/{id}")
    if of_account and mode is GenerationMode.POSITIVE:
        case.path_parameters["id"] = FUZZED["id"]


async def _create_template(router: RouterProcess, name: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            router.base_url + "/v1/templates", json={"name": name, "text": "{code}"}, headers=KEY
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
        created: dict[str, Any] = await resp.json()
        return str(created["id"])
