"""The OpenAPI 3.1 document of the app API (CONTRACT §3, `GET
/v1/openapi.json`): every route of `HttpApi.routes`, what each reads and
every answer it gives, errors as RFC 9457 problems with their `code`s.

Limits are read from the modules that enforce them, so that the document
says what the server does. tests/unit/test_openapi.py holds it to the route
table and to the body the server decodes; tests/e2e/test_openapi.py runs
schemathesis against a running daemon with it.
"""

from __future__ import annotations

from smsrouter.connectors import http_api, template_api
from smsrouter.connectors.openapi_schemas import (
    BODY_ERRORS,
    DATE_TIME,
    LIST_ERRORS,
    NOT_FOUND,
    STORE_ERRORS,
    Schema,
    decimal,
    document,
    json_answer,
    json_body,
    no_content,
    nullable,
    obj,
    page,
    page_parameters,
    path_parameter,
    query,
    ref,
    responses,
    string,
)
from smsrouter.router.admission import MAX_PARTS
from smsrouter.router.content import KINDS
from smsrouter.router.messages import Status
from smsrouter.router.store import ledger
from smsrouter.router.store import opt_outs as opt_out_rows
from smsrouter.router.store import templates as template_rows

SCHEME = "apiKey"
# A phone number as the API takes it (router/admission.py parse_recipient
# also checks it is a valid number of its country).
E164 = "^\\+?[1-9][0-9]{6,14}$"

# Every /v1 route but the document itself: the account's API key, its
# state and where the request comes from (CONTRACT §3).
AUTH_ERRORS: dict[int, tuple[str, ...]] = {
    401: ("unauthorized",),
    403: ("account_locked", "ip_not_allowed"),
    429: ("auth_throttled",),
}
# A change through the status writer (opt-outs): it may not commit in time.
CHANGE_ERRORS: dict[int, tuple[str, ...]] = {
    503: ("commit_timeout", "store_unavailable", "store_timeout")
}
_OPEN: list[Schema] = []  # `security` of a route that needs no key

_STATUS_OF_MESSAGE = [s.value for s in Status]
# What a message's text was sent as: over HTTP gsm7 or ucs2; over SMPP
# (CONTRACT §4, data_coding 3 or binary) latin1 or binary too.
_ENCODINGS = ["gsm7", "ucs2", "latin1", "binary"]
_KIND = {"type": ["string", "null"], "enum": [*KINDS, None]}


def public_schemas() -> dict[str, Schema]:
    message_fields: dict[str, Schema] = {
        "id": string(format="uuid"),
        "from": string("The sender as stored: E.164 with +, a short code or an alphanumeric ID."),
        "to": string("The recipient, E.164 with +."),
        "status": string(enum=_STATUS_OF_MESSAGE),
        "error_code": nullable(
            string(
                "`smpp:0x0000000B` (a carrier's command_status), `dlr:<err>` (its receipt's) or"
                " the router's reason (`opted_out`, `no_route`, ...)."
            )
        ),
        "carrier": nullable(string()),
        "parts": {"type": "integer", "minimum": 1},
        "encoding": string(enum=_ENCODINGS),
        "price": decimal("The price of all its parts, in the account's currency."),
        "client_ref": nullable(string()),
        "created_at": DATE_TIME,
        "sent_at": nullable(DATE_TIME),
        "done_at": nullable(DATE_TIME),
        "send_at": nullable(DATE_TIME),
    }
    event = obj({"at": DATE_TIME, "status": string(), "detail": nullable(string())})
    accepted = obj(
        {
            "id": string(format="uuid"),
            "to": string("The recipient as the request wrote it."),
            "status": {"const": "accepted"},
            "parts": {"type": "integer", "minimum": 1, "maximum": MAX_PARTS},
            "encoding": string(enum=["gsm7", "ucs2"]),
            "price": decimal("The price of all its parts."),
        }
    )
    return {
        "SendRequest": _send_request(),
        "SendResult": obj(
            {
                "messages": {"type": "array", "items": accepted},
                "rejected": {"type": "array", "items": ref("Refusal")},
            },
            description="202: the accepted messages are durably stored.",
        ),
        "MessageSummary": obj(message_fields),
        "Message": obj(
            {**message_fields, "events": {"type": "array", "items": event}},
            description="A message and its history.",
        ),
        "MessagePage": page("messages", ref("MessageSummary"), "Newest first."),
        "Balance": obj(
            {
                "credit": decimal("The balance."),
                "currency": string("ISO 4217."),
                "credit_limit": decimal("How far below zero the balance may go."),
            }
        ),
        "LedgerEntry": obj(
            {
                "id": {"type": "integer"},
                "account": string(),
                "at": DATE_TIME,
                "kind": string(
                    enum=[ledger.RESERVE, ledger.REFUND, ledger.TOP_UP, ledger.ADJUSTMENT]
                ),
                "amount": decimal("Signed: a reserve is negative."),
                "balance": decimal("The balance after this entry."),
                "message_id": nullable(string(format="uuid")),
                "messages": {"type": "integer", "minimum": 0},
                "reference": nullable(string()),
            },
            description="A change of the balance.",
        ),
        "LedgerPage": page("entries", ref("LedgerEntry"), "Newest first."),
        "OptOut": obj(
            {
                "number": string("E.164 with +."),
                "source": string(
                    "Who opted it out: the subscriber's STOP, the account, an operator's import.",
                    enum=[
                        opt_out_rows.SUBSCRIBER_SOURCE,
                        opt_out_rows.ACCOUNT_SOURCE,
                        opt_out_rows.IMPORT_SOURCE,
                    ],
                ),
                "created_at": nullable(DATE_TIME),
            }
        ),
        "OptOutPage": page("opt_outs", ref("OptOut"), "In number order."),
        "TemplateCreate": obj(
            {
                "name": string(
                    "Unique within the account.",
                    pattern=f"^[A-Za-z0-9_. -]{{1,{template_api.MAX_NAME}}}$",
                ),
                "text": string(
                    "The text with `{name}` placeholders, e.g. `Your code is {code}`.", minLength=1
                ),
                "kind": _KIND,
            },
            required=("name", "text"),
            closed=True,
        ),
        "Template": obj(
            {
                "id": string(),
                "name": string(),
                "text": string(),
                "kind": _KIND,
                "status": string(enum=list(template_rows.STATUSES)),
                "reason": string("Why it was rejected; empty otherwise."),
                "created_at": DATE_TIME,
                "decided_at": nullable(DATE_TIME),
            }
        ),
        "TemplatePage": page("templates", ref("Template"), "In id order."),
        "Readiness": obj(
            {
                "ready": {"type": "boolean"},
                "database": {"type": "boolean"},
                "carriers": {
                    "type": "object",
                    "additionalProperties": {"type": "boolean"},
                    "description": "Each carrier: at least one bind up.",
                },
            }
        ),
    }


def _send_request() -> Schema:
    """The body `connectors/send_request.py:SendRequest` decodes; fields it
    does not know are ignored. `null` reads as a field not sent."""
    most = http_api.MAX_BATCH
    body = obj(
        {
            "from": string(
                "A sender number of the account (E.164 with +, a short code) or a sender ID."
            ),
            "to": {
                "oneOf": [
                    string("One recipient, E.164."),
                    {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "maxItems": most,
                        "description": f"Up to {most} recipients (a verified account's).",
                    },
                ]
            },
            "text": nullable(
                string(
                    f"The text, at most {MAX_PARTS} parts; exactly one of text and template.",
                    minLength=1,
                )
            ),
            "template": nullable(string("The id of an approved template of the account.")),
            "params": nullable(
                {"type": "object", "description": "The template's placeholders and their values."}
            ),
            "callback_url": nullable(string("Where the final status is POSTed: http or https.")),
            "client_ref": nullable(
                string("Echoed in the callback.", maxLength=http_api.MAX_CLIENT_REF)
            ),
            "validity": nullable(
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": http_api.MAX_VALIDITY_SECONDS,
                    "description": "Seconds to deliver it in.",
                }
            ),
            "kind": _KIND,
            "send_at": nullable(
                string(
                    "Not sent before then; at most 35 days ahead, with its offset.",
                    format="date-time",
                )
            ),
        },
        required=("from", "to"),
        description="A message to one or more recipients.",
    )
    # Exactly one of text and template (connectors/template_api.py
    # resolve_template); params only with a template.
    null = {"type": "null"}
    body["oneOf"] = [
        {
            "required": ["text"],
            "properties": {"text": {"type": "string"}, "template": null, "params": null},
        },
        {"required": ["template"], "properties": {"template": {"type": "string"}, "text": null}},
    ]
    return body


def _paths() -> dict[str, Schema]:
    default, most = http_api.DEFAULT_PAGE, http_api.MAX_PAGE
    pages = page_parameters(default, most)
    read = (AUTH_ERRORS, STORE_ERRORS)
    listed = (AUTH_ERRORS, LIST_ERRORS, STORE_ERRORS)
    number = path_parameter("number", "E.164, with + (or %2B).", string(pattern=E164))
    return {
        "/v1/messages": {
            "post": {
                "operationId": "sendMessage",
                "summary": "Send a message to one or more recipients",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "description": "A repeat answers what the first answered (24 h).",
                        "schema": string(minLength=1, maxLength=http_api.MAX_IDEMPOTENCY_KEY),
                    }
                ],
                "requestBody": json_body(ref("SendRequest")),
                "responses": responses(
                    {
                        202: json_answer(
                            "Stored: each accepted message, each refused recipient.",
                            ref("SendResult"),
                            {
                                "Idempotent-Replayed": {
                                    "description": "`true` when a repeat is answered.",
                                    "schema": {"type": "string", "enum": ["true"]},
                                }
                            },
                        )
                    },
                    AUTH_ERRORS,
                    BODY_ERRORS,
                    {
                        422: ("rejected", "idempotency_key_reused"),
                        429: ("throughput_exceeded", "recipient_velocity", "sender_queue_full"),
                        503: ("commit_timeout", "store_unavailable", "store_timeout"),
                    },
                ),
            },
            "get": {
                "operationId": "listMessages",
                "summary": "The account's messages, newest first",
                "parameters": [
                    query("status", string(enum=_STATUS_OF_MESSAGE), "Only in this status."),
                    query("client_ref", string(), "Only with this client_ref."),
                    query("since", string(format="date-time"), "Only created since then."),
                    *pages,
                ],
                "responses": responses({200: json_answer("A page.", ref("MessagePage"))}, *listed),
            },
        },
        "/v1/messages/{id}": {
            "get": {
                "operationId": "getMessage",
                "summary": "A message with its events",
                "parameters": [path_parameter("id", "Its id.", string(format="uuid"))],
                "responses": responses(
                    {200: json_answer("The message.", ref("Message"))}, NOT_FOUND, *read
                ),
            }
        },
        "/v1/balance": {
            "get": {
                "operationId": "getBalance",
                "summary": "The account's balance",
                "responses": responses({200: json_answer("The balance.", ref("Balance"))}, *read),
            }
        },
        "/v1/ledger": {
            "get": {
                "operationId": "listLedger",
                "summary": "Every change of the balance, newest first",
                "parameters": pages,
                "responses": responses({200: json_answer("A page.", ref("LedgerPage"))}, *listed),
            }
        },
        "/v1/opt-outs": {
            "get": {
                "operationId": "listOptOuts",
                "summary": "The account's opted-out numbers",
                "parameters": pages,
                "responses": responses({200: json_answer("A page.", ref("OptOutPage"))}, *listed),
            }
        },
        "/v1/opt-outs/{number}": {
            "put": {
                "operationId": "addOptOut",
                "summary": "Opt a number out of the account's messages",
                "parameters": [number],
                "responses": responses(
                    {
                        201: json_answer("Added.", ref("OptOut")),
                        200: json_answer("It was on the list already.", ref("OptOut")),
                    },
                    AUTH_ERRORS,
                    NOT_FOUND,
                    LIST_ERRORS,
                    CHANGE_ERRORS,
                ),
            },
            "delete": {
                "operationId": "removeOptOut",
                "summary": "Lift an opt-out the account added",
                "parameters": [number],
                "responses": responses(
                    {204: no_content("Removed.")},
                    AUTH_ERRORS,
                    NOT_FOUND,
                    LIST_ERRORS,
                    CHANGE_ERRORS,
                    # CONTRACT §6: a subscriber's STOP is lifted only by its START.
                    {409: ("opted_out_by_subscriber",)},
                ),
            },
        },
        "/v1/templates": {
            "post": {
                "operationId": "createTemplate",
                "summary": "Create a template, pending an operator's approval",
                "requestBody": json_body(ref("TemplateCreate")),
                "responses": responses(
                    {
                        201: json_answer(
                            "Created, pending.",
                            ref("Template"),
                            {"Location": {"$ref": "#/components/headers/Location"}},
                        )
                    },
                    AUTH_ERRORS,
                    BODY_ERRORS,
                    STORE_ERRORS,
                    {409: ("template_exists",)},
                ),
            },
            "get": {
                "operationId": "listTemplates",
                "summary": "The account's templates",
                "parameters": [
                    query(
                        "status", string(enum=list(template_rows.STATUSES)), "Only in this status."
                    ),
                    *page_parameters(template_api.DEFAULT_PAGE, template_api.MAX_PAGE),
                ],
                "responses": responses({200: json_answer("A page.", ref("TemplatePage"))}, *listed),
            },
        },
        "/v1/templates/{id}": {
            "get": {
                "operationId": "getTemplate",
                "summary": "A template of the account",
                "parameters": [path_parameter("id", "Its id.")],
                "responses": responses(
                    {200: json_answer("The template.", ref("Template"))}, NOT_FOUND, *read
                ),
            }
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": _OPEN,
                "responses": responses(
                    {200: json_answer("OpenAPI 3.1.", {"type": "object"})},
                ),
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus metrics",
                "security": _OPEN,
                "responses": responses(
                    {
                        200: {
                            "description": "The Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                ),
            }
        },
        "/healthz": {
            "get": {
                "operationId": "getHealth",
                "summary": "Alive",
                "description": "503 once the database has been unreachable for"
                " `[database] liveness_seconds`: restart the daemon.",
                "security": _OPEN,
                "responses": responses(
                    {200: json_answer("Alive.", obj({"status": {"const": "ok"}}))},
                    {503: ("database_unreachable",)},
                ),
            }
        },
        "/readyz": {
            "get": {
                "operationId": "getReadiness",
                "summary": "Ready: the database reachable and a carrier bound",
                "security": _OPEN,
                "responses": responses(
                    {200: json_answer("Ready.", ref("Readiness"))},
                    {503: ("not_ready",)},
                ),
            }
        },
    }


def public_document() -> Schema:
    return document(
        title="smsrouter app API",
        description=(
            "Send SMS and follow them. Every error is an RFC 9457 problem"
            " (`application/problem+json`) with a stable `code`; a 422 names each bad field"
            " in `errors`. Send `Authorization: Bearer <api key>`."
        ),
        paths=_paths(),
        schemas=public_schemas(),
        scheme=SCHEME,
        scheme_description="An API key of the account.",
    )
