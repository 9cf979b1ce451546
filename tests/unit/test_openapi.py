"""The OpenAPI documents (CONTRACT §3, §8) against the servers they describe:
valid OpenAPI 3.1, one operation for each route of the route tables and no
other, request bodies with the fields the server decodes, patterns that
accept what the server's checks accept. What the running servers answer is
tests/e2e/test_openapi.py's."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate
from openapi_spec_validator.versions.shortcuts import get_spec_version

from smsrouter.connectors import (
    admin_api,
    admin_requests,
    admin_webhook_secret,
    http_api,
    status_page,
    template_api,
)
from smsrouter.connectors.openapi_admin import admin_document
from smsrouter.connectors.openapi_public import public_document
from smsrouter.connectors.send_request import SendRequest
from smsrouter.router.admission import FieldError
from smsrouter.router.messages import Status

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def _public_routes() -> dict[str, dict[str, Any]]:
    return http_api.HttpApi(None).routes  # type: ignore[arg-type]


def _admin_routes() -> dict[str, dict[str, Any]]:
    # With a status source: the status page's routes are in the table too.
    api = admin_api.AdminApi(None, [], price_plans=frozenset, status=dict)  # type: ignore[arg-type]
    return api.routes


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def _routes(table: dict[str, dict[str, Any]]) -> set[tuple[str, str]]:
    # The server answers HEAD for every GET by itself (RFC 9110 §9.3.2).
    return {(path, method.upper()) for path, methods in table.items() for method in methods}


def _schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


@pytest.mark.parametrize("build", [public_document, admin_document])
def test_each_document_is_valid_openapi_3_1(build: Any) -> None:
    document = build()
    validate(document)
    assert get_spec_version(document).minor == "1"
    # Served as JSON: the document survives its own encoding.
    assert msgspec.json.decode(msgspec.json.encode(document)) == document


@pytest.mark.parametrize(
    ("build", "routes"), [(public_document, _public_routes), (admin_document, _admin_routes)]
)
def test_the_document_names_every_route_of_its_server_and_no_other(build: Any, routes: Any) -> None:
    documented, served = _operations(build()), _routes(routes())
    assert served - documented == set(), "routes missing from the document"
    assert documented - served == set(), "documented routes the server lacks"


@pytest.mark.parametrize("build", [public_document, admin_document])
def test_every_path_parameter_is_declared_with_the_route(build: Any) -> None:
    for path, item in build()["paths"].items():
        in_path = set(re.findall(r"\{([^}]+)\}", path))
        for method in (m for m in item if m in METHODS):
            parameters = item.get("parameters", []) + item[method].get("parameters", [])
            declared = {p["name"] for p in parameters if p["in"] == "path"}
            assert declared == in_path, (path, method)


@pytest.mark.parametrize("build", [public_document, admin_document])
def test_every_error_is_a_problem_and_every_route_needs_its_credential_unless_open(
    build: Any,
) -> None:
    document = build()
    shared = document["components"]["responses"]
    open_routes = {"/v1/openapi.json", "/metrics", "/healthz", "/readyz"}
    # The status page takes the operator token as Basic authentication too.
    basic_too = {status_page.DATA, *status_page.ASSETS}
    for path, item in document["paths"].items():
        for method in (m for m in item if m in METHODS):
            operation = item[method]
            for status, answer in operation["responses"].items():
                if "$ref" in answer:
                    answer = shared[answer["$ref"].rsplit("/", 1)[1]]
                if int(status) >= 400:
                    assert list(answer["content"]) == ["application/problem+json"], (path, status)
            if path in open_routes:
                assert operation["security"] == [], path
            elif path in basic_too:
                assert operation["security"] == [{"operatorToken": []}, {"operatorBasic": []}]
                assert "401" in operation["responses"], path
            else:
                assert "security" not in operation, path  # the document's: bearer
                assert "401" in operation["responses"], path
    assert document["security"] in ([{"apiKey": []}], [{"operatorToken": []}])


def _struct_fields(shape: type[msgspec.Struct]) -> tuple[set[str], set[str]]:
    fields = msgspec.structs.fields(shape)
    return {f.encode_name for f in fields}, {f.encode_name for f in fields if f.required}


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("AccountCreate", admin_requests.AccountCreate),
        ("AccountPatch", admin_requests.AccountPatch),
        ("ApiKeyCreate", admin_requests.ApiKeyCreate),
        ("SmppPut", admin_requests.SmppPut),
        ("CreditAdd", admin_requests.CreditAdd),
        ("SenderIdPut", admin_requests.SenderIdPut),
        ("NumberPut", admin_requests.NumberPut),
    ],
)
def test_an_operator_body_has_the_fields_of_its_struct_and_no_other(
    name: str, shape: type[msgspec.Struct]
) -> None:
    schema = _schema(admin_document(), name)
    names, required = _struct_fields(shape)
    assert set(schema["properties"]) == names
    assert set(schema["required"]) == required
    # admin_api._decode answers 422 for a field the Struct does not name.
    assert schema["additionalProperties"] is False


def test_the_send_body_has_the_fields_the_server_decodes() -> None:
    schema = _schema(public_document(), "SendRequest")
    names, required = _struct_fields(SendRequest)
    assert set(schema["properties"]) == names
    assert set(schema["required"]) == required
    # Unknown fields are ignored (SendRequest does not forbid them).
    assert "additionalProperties" not in schema


def test_the_template_bodies_have_the_fields_the_server_reads() -> None:
    create = _schema(public_document(), "TemplateCreate")
    assert set(create["properties"]) == template_api._CREATE_FIELDS
    assert create["additionalProperties"] is False
    reject = _schema(admin_document(), "TemplateReject")
    assert set(reject["properties"]) == {"reason"}
    assert reject["additionalProperties"] is False


@pytest.mark.parametrize(
    ("secret", "accepted"),
    [
        ("a" * 16, True),
        ("a" * 15, False),
        ("a b" * 8, False),
        ("a\x01" * 8, False),
        ("é" * 1024, True),
        ("x" * 1025, False),
    ],
)
def test_the_next_webhook_secret_schema_takes_what_the_server_takes(
    secret: str, accepted: bool
) -> None:
    schema = _schema(admin_document(), "WebhookSecretPut")["properties"]["next"]
    matches = (
        schema["minLength"] <= len(secret) <= schema["maxLength"]
        and re.search(schema["pattern"], secret) is not None
    )
    assert matches is accepted
    assert (admin_webhook_secret.secret_errors(secret) == []) is accepted


def test_the_statuses_a_list_filters_on_are_those_a_message_has() -> None:
    document = public_document()
    listed = next(
        p for p in document["paths"]["/v1/messages"]["get"]["parameters"] if p["name"] == "status"
    )
    assert listed["schema"]["enum"] == list(http_api._SHOWN_STATUSES)
    assert set(http_api._SHOWN_STATUSES) == {s.value for s in Status}


_MONEY_TEXT = st.text(alphabet="0123456789.+- e", max_size=24)


@given(_MONEY_TEXT)
def test_the_money_pattern_accepts_what_the_server_accepts(written: str) -> None:
    amount = _schema(admin_document(), "CreditAdd")["properties"]["amount"]
    errors: list[FieldError] = []
    admin_api._money("amount", written, errors)
    assert bool(re.search(amount["pattern"], written)) == (errors == [])


@given(_MONEY_TEXT)
def test_the_credit_limit_pattern_accepts_what_the_server_accepts(written: str) -> None:
    limit = _schema(admin_document(), "AccountPatch")["properties"]["credit_limit"]
    errors: list[FieldError] = []
    amount = admin_api._non_negative_money("credit_limit", written, errors)
    # "-0" is zero, which the server takes; the document asks for no sign.
    if amount is not None and amount == 0 and written.startswith("-"):
        return
    assert bool(re.search(limit["pattern"], written)) == (errors == [])
