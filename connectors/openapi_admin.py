"""The OpenAPI 3.1 document of the operator API (CONTRACT §8, `GET
/admin/v1/openapi.json`): every route of `AdminApi.routes`, the bodies of
connectors/admin_requests.py with the checks connectors/admin_api.py makes
of their values, every answer, errors as RFC 9457 problems.

Limits are read from the modules that enforce them. tests/unit/test_openapi.py
holds the document to the route table and to the request Structs;
tests/e2e/test_openapi.py runs schemathesis against a running daemon with it.
"""

from __future__ import annotations

from smsrouter.connectors import (
    admin_api,
    admin_requests,
    admin_senders,
    admin_webhook_secret,
    status_page,
    template_api,
)
from smsrouter.connectors.openapi_public import public_schemas
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
from smsrouter.router import status
from smsrouter.router.health import Breaker
from smsrouter.router.sender_states import FLAGGED, SUSPENDED
from smsrouter.router.senders import NumberType
from smsrouter.router.store import templates as template_rows

SCHEME = "operatorToken"
# The status page also takes the token as the password of HTTP Basic
# authentication, which a browser asks for (connectors/status_page.py).
BASIC = "operatorBasic"
PREFIX = admin_api.PREFIX

# Every route: a token of [admin] tokens (CONTRACT §8), the failed guesses
# of an address throttled (§11); a read or change meets the database.
AUTH_ERRORS: dict[int, tuple[str, ...]] = {401: ("unauthorized",), 429: ("auth_throttled",)}
_TOKEN_OR_BASIC: list[Schema] = [{SCHEME: []}, {BASIC: []}]
# A change the directory's state refuses (router/store/directory.py Conflict).
MANAGED: dict[int, tuple[str, ...]] = {409: ("managed_by_config",)}

# Money of admin_api._money: at most 12 integer digits and 6 decimals.
_MONEY = (
    f"^[+-]?0*[0-9]{{1,{admin_api.MAX_INTEGER_DIGITS}}}(\\.[0-9]{{1,{admin_api.MAX_DECIMALS}}})?$"
)
_NON_NEGATIVE_MONEY = _MONEY.replace("^[+-]?", "^[+]?")
_URL = string(
    'An http or https URL, or "" for none.',
    maxLength=admin_api.MAX_URL,
    pattern="^(https?://[^\\s]+)?$",
)
_COUNTRY = string("ISO 3166 alpha-2.", pattern="^[A-Z]{2}$")
_IPS = {
    "type": "array",
    "items": string("An IP address or network (CIDR)."),
    "description": "Where requests may come from; empty: anywhere.",
}
_COUNT = {"type": "integer", "minimum": 0, "maximum": admin_api.MAX_COUNT}
_FINGERPRINT = string(
    "`sha256:` and the first 16 hex digits of the SHA-256 of the secret.",
    pattern="^sha256:[0-9a-f]{16}$",
)
_NUMBER_TYPES = [t.value for t in NumberType]


def _reply(what: str) -> Schema:
    return string(f"The reply to {what}; empty: the default.", maxLength=admin_api.MAX_REPLY)


def _account_settings() -> dict[str, Schema]:
    """What a PATCH may set (admin_requests.AccountPatch), with the checks
    admin_api._patch_checks makes of each."""
    return {
        "verified": {"type": "boolean"},
        "locked": {"type": "boolean"},
        "lock_reason": string(maxLength=admin_api.MAX_LOCK_REASON),
        "max_tps": {
            "type": "number",
            "minimum": 0,
            "description": "Messages per second over all binds and requests; 0: no cap.",
        },
        "daily_alarm": _COUNT,
        "daily_limit": _COUNT,
        "credit_limit": string(
            "How far below zero the balance may go: a decimal string.",
            pattern=_NON_NEGATIVE_MONEY,
        ),
        "callback_url": _URL,
        "inbound_url": _URL,
        "alert_url": _URL,
        "allowed_ips": _IPS,
        "stop_reply": _reply("STOP"),
        "start_reply": _reply("START"),
        "help_reply": _reply("HELP"),
        "templates_required": {"type": "boolean"},
        "timezone": string("An IANA time zone, e.g. Europe/Paris."),
        "price_plan": string('A configured [[price_plans]] name, or "".'),
        "allowed_countries": {
            "type": "array",
            "items": _COUNTRY,
            "description": "Destinations allowed; empty: all.",
        },
        "callback_sent": {
            "type": "boolean",
            "description": "Also call callback_url when a message is sent, not only when it ends.",
        },
    }


def _status() -> Schema:
    """What router/status.py:StatusBoard.document answers: this process's
    state at the moment, no database query."""
    rate = nullable({"type": "number", "description": "Per second; null until two looks."})
    count = {"type": "integer", "minimum": 0}
    carrier = obj(
        {
            "name": string(),
            "binds_up": count,
            "binds_total": count,
            "health": {"type": "number", "minimum": 0, "maximum": 1},
            "breaker": string(enum=[b.value for b in Breaker]),
            "latency_ms": {"type": "number"},
            "submit_per_second": rate,
            "errors_per_second": rate,
            "submitted_total": count,
            "errors_total": count,
        }
    )
    busiest = obj(
        {
            "sender": string(),
            "country": nullable(string("When the queue is per destination country.")),
            "depth": count,
            "rate": {"type": "number"},
            "drain_seconds": nullable({"type": "number"}),
        }
    )
    error = obj(
        {
            "at": DATE_TIME,
            "first_at": DATE_TIME,
            "level": string(),
            "event": string(),
            "count": count,
            "details": {"type": "object"},
        }
    )
    senders = {"type": "array", "items": ref("SenderState"), "maxItems": status.MAX_SENDERS}
    return obj(
        {
            "instance": string(),
            "version": string(),
            "build": string(enum=["interpreted", "compiled"]),
            "at": DATE_TIME,
            "database": obj({"reachable": {"type": "boolean"}}),
            "messages": obj(
                {
                    "window_seconds": {"type": "number"},
                    **{
                        f"{what}_per_second": rate for what in ("in", "out", "rejected", "receipts")
                    },
                    **{f"{what}_total": count for what in ("in", "out", "rejected", "receipts")},
                }
            ),
            "carriers": {"type": "array", "items": carrier},
            "queues": obj(
                {
                    "depth": count,
                    "active": count,
                    "max_per_sender": count,
                    "busiest": {
                        "type": "array",
                        "items": busiest,
                        "maxItems": status.BUSIEST_QUEUES,
                    },
                }
            ),
            "senders": obj(
                {
                    "flagged_count": count,
                    "suspended_count": count,
                    "flagged": senders,
                    "suspended": senders,
                }
            ),
            "errors": {"type": "array", "items": error, "maxItems": status.MAX_ERRORS},
        },
        description="What the status page draws, every second.",
    )


def _schemas() -> dict[str, Schema]:
    shared = public_schemas()
    settings = _account_settings()
    smpp = obj(
        {
            "system_id": string(),
            "max_binds": {"type": "integer"},
            "allowed_ips": {"type": "array", "items": string()},
        },
        description="The account's SMPP credentials, the password aside.",
    )
    account = obj(
        {
            "id": string(),
            "currency": string(),
            "credit": decimal("The balance."),
            "credit_limit": decimal("How far below zero the balance may go."),
            "verified": {"type": "boolean"},
            "locked": {"type": "boolean"},
            "lock_reason": string(),
            "callback_url": string(),
            "inbound_url": string(),
            "alert_url": string(),
            "allowed_ips": {"type": "array", "items": string()},
            "max_tps": {"type": "number"},
            "daily_alarm": {"type": "integer"},
            "daily_limit": {"type": "integer"},
            "price_plan": string(),
            "timezone": string(),
            "stop_reply": string(),
            "start_reply": string(),
            "help_reply": string(),
            "templates_required": {"type": "boolean"},
            "allowed_countries": {"type": "array", "items": string()},
            "callback_sent": {"type": "boolean"},
            "managed_fields": nullable(
                {
                    "type": "array",
                    "items": string(),
                    "description": "The fields the config file sets (a PATCH of one is a"
                    " 409); null for an account the operator API created.",
                }
            ),
            "smpp": nullable(ref("Smpp")),
            "created_at": DATE_TIME,
        }
    )
    ledger_entry = shared["LedgerEntry"]
    sender: dict[str, Schema] = {
        "number": string(),
        "account": string(),
        "opt_outs": {"type": "integer", "description": "Subscribers who opted out, 24 h."},
        "recipients": {"type": "integer", "description": "Subscribers sent to, 24 h."},
        "rate": {"type": "number"},
        "since": DATE_TIME,
    }
    return {
        "Account": account,
        "AccountCreated": {
            "allOf": [
                ref("Account"),
                obj(
                    {"webhook_secret": string("Shown this once.")},
                    description="The account and its webhook secret.",
                ),
            ]
        },
        "AccountPage": page("accounts", ref("Account"), "By id."),
        "AccountCreate": obj(
            {
                "id": string(pattern="^[A-Za-z0-9_.-]{1,64}$"),
                "currency": string("ISO 4217.", pattern="^[A-Z]{3}$", default="EUR"),
                "credit": string(
                    "The initial balance: a decimal string.",
                    pattern=_NON_NEGATIVE_MONEY,
                    default="0",
                ),
                **settings,
            },
            required=("id",),
            closed=True,
        ),
        "AccountPatch": obj(
            settings,
            required=(),
            closed=True,
            description="Only the fields sent change (RFC 7396).",
        ),
        "ApiKeyCreate": obj(
            {
                "name": string(minLength=1, maxLength=admin_api.MAX_KEY_NAME),
                "expires_at": nullable(
                    string("In the future, with its offset.", format="date-time")
                ),
            },
            required=("name",),
            closed=True,
        ),
        "ApiKeyCreated": obj(
            {
                "key_id": string(),
                "key": string("The key itself, shown this once."),
                "name": string(),
                "created_at": DATE_TIME,
                "expires_at": nullable(DATE_TIME),
            }
        ),
        "ApiKey": obj(
            {
                "key_id": string(),
                "name": string(),
                "created_at": DATE_TIME,
                "last_used_at": nullable(DATE_TIME),
                "expires_at": nullable(DATE_TIME),
                "managed_by_config": {"type": "boolean"},
            }
        ),
        "ApiKeyList": obj({"api_keys": {"type": "array", "items": ref("ApiKey")}}),
        "SmppPut": obj(
            {
                "system_id": string(
                    "Printable ASCII (SMPP 3.4 §5.2.1).",
                    minLength=1,
                    maxLength=admin_api.MAX_SYSTEM_ID,
                    pattern="^[ -~]+$",
                ),
                "password": string(
                    "Printable ASCII (SMPP 3.4 §5.2.2); stored as a slow salted hash.",
                    minLength=1,
                    maxLength=admin_api.MAX_PASSWORD,
                    pattern="^[ -~]+$",
                ),
                "max_binds": {"type": "integer", "minimum": 1, "maximum": admin_api.MAX_BINDS},
                "allowed_ips": {**_IPS, "default": []},
            },
            required=("system_id", "password", "max_binds"),
            closed=True,
        ),
        "Smpp": smpp,
        "CreditAdd": obj(
            {
                "amount": string(
                    "A decimal string, not zero; negative for an adjustment.", pattern=_MONEY
                ),
                "reference": string(minLength=1, maxLength=admin_api.MAX_REFERENCE),
            },
            closed=True,
        ),
        "LedgerEntry": obj(
            {**ledger_entry["properties"], "actor": nullable(string("The operator token's name."))},
            description=ledger_entry["description"],
        ),
        "LedgerPage": page("entries", ref("LedgerEntry"), "Newest first."),
        "SenderIdPut": obj(
            {"countries": {"type": "array", "items": _COUNTRY, "minItems": 1}}, closed=True
        ),
        "SenderId": obj({"sender_id": string(), "countries": {"type": "array", "items": string()}}),
        "SenderIdList": obj({"sender_ids": {"type": "array", "items": ref("SenderId")}}),
        "NumberPut": obj(
            {
                "account": string(minLength=1),
                "type": string(enum=_NUMBER_TYPES),
                "rate": nullable(
                    {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "description": "Parts per second; null: the type's rate.",
                    }
                ),
            },
            required=("account", "type"),
            closed=True,
        ),
        "Number": obj(
            {
                "number": string(),
                "account": string(),
                "type": string(enum=_NUMBER_TYPES),
                "rate": nullable({"type": "number"}),
            }
        ),
        "NumberPage": page("numbers", ref("Number"), "By number."),
        "AuditEntry": obj(
            {
                "id": {"type": "integer"},
                "at": DATE_TIME,
                "actor": string("The token's name (or config, or account:<id>)."),
                "action": string("E.g. account.patch, api_key.revoke."),
                "target": string(),
                "before": {"type": ["object", "null"]},
                "after": {"type": ["object", "null"]},
            }
        ),
        "AuditPage": page("entries", ref("AuditEntry"), "Newest first."),
        "OptOutEntry": obj(
            {"account": string(), **shared["OptOut"]["properties"]},
        ),
        "OptOutPage": page("opt_outs", ref("OptOutEntry"), "By account, then number."),
        "OptOutImport": obj(
            {
                "received": {"type": "integer", "minimum": 0},
                "added": {"type": "integer", "minimum": 0},
                "invalid": {
                    "type": "array",
                    "items": obj({"line": {"type": "integer"}, "value": string()}),
                    "maxItems": admin_requests.MAX_INVALID_SHOWN,
                },
                "invalid_count": {"type": "integer", "minimum": 0},
            }
        ),
        "SenderState": obj(
            {**sender, "state": string(enum=[FLAGGED, SUSPENDED])},
            description="A flagged or suspended sender number and its opt-out rate over 24 h.",
        ),
        "SenderPage": page("senders", ref("SenderState"), "By number."),
        "SenderResumed": obj(
            {**sender, "state": {"const": "active"}, "resumed_by": string("The token's name.")},
            description="The number as it stood before it was resumed.",
        ),
        "Template": obj(
            {
                **shared["Template"]["properties"],
                "account": string(),
                "decided_by": nullable(string("The operator token's name.")),
            }
        ),
        "TemplatePage": page("templates", ref("Template"), "By id."),
        "WebhookSecretPut": obj(
            {
                "next": string(
                    "The secret that signs beside the current one until promoted.",
                    minLength=admin_webhook_secret.MIN_SECRET,
                    maxLength=admin_webhook_secret.MAX_SECRET,
                    pattern="^[^\\s\\x00-\\x1f\\x7f]+$",
                )
            },
            closed=True,
        ),
        "WebhookSecrets": obj(
            {
                "current": nullable(_FINGERPRINT),
                "next": nullable(_FINGERPRINT),
                "managed_by_config": {
                    "type": "boolean",
                    "description": "The config file sets the secret: no change here (409).",
                },
            },
            description="The account's webhook secrets by fingerprint, never the secrets.",
        ),
        "Status": _status(),
        "TemplateReject": obj(
            {"reason": string(minLength=1, maxLength=template_api.MAX_REASON)}, closed=True
        ),
    }


def _paths() -> dict[str, Schema]:
    pages = page_parameters(admin_api.DEFAULT_PAGE, admin_api.MAX_PAGE)
    account_id = path_parameter("id", "The account's id.")
    account = PREFIX + "/accounts/{id}"
    read = (AUTH_ERRORS, NOT_FOUND, STORE_ERRORS)
    listed = (AUTH_ERRORS, LIST_ERRORS, STORE_ERRORS)
    change = (AUTH_ERRORS, BODY_ERRORS, NOT_FOUND, STORE_ERRORS)

    def ok(description: str, schema: str) -> Schema:
        return json_answer(description, ref(schema))

    return {
        PREFIX + "/accounts": {
            "post": {
                "operationId": "createAccount",
                "summary": "Create an account",
                "requestBody": json_body(ref("AccountCreate")),
                "responses": responses(
                    {
                        201: json_answer(
                            "Created; its webhook secret is shown this once.",
                            ref("AccountCreated"),
                            {"Location": {"$ref": "#/components/headers/Location"}},
                        )
                    },
                    AUTH_ERRORS,
                    BODY_ERRORS,
                    STORE_ERRORS,
                    {409: ("account_exists",)},
                ),
            },
            "get": {
                "operationId": "listAccounts",
                "summary": "Accounts by id",
                "parameters": pages,
                "responses": responses({200: ok("A page.", "AccountPage")}, *listed),
            },
        },
        account: {
            "parameters": [account_id],
            "get": {
                "operationId": "getAccount",
                "summary": "An account",
                "responses": responses({200: ok("The account.", "Account")}, *read),
            },
            "patch": {
                "operationId": "patchAccount",
                "summary": "Change an account's settings",
                "description": "A field the config file sets is refused 409 `managed_by_config`.",
                "requestBody": json_body(ref("AccountPatch")),
                "responses": responses(
                    {200: ok("The account as changed.", "Account")}, *change, MANAGED
                ),
            },
        },
        account + "/api-keys": {
            "parameters": [account_id],
            "post": {
                "operationId": "createApiKey",
                "summary": "A new API key, shown once",
                "requestBody": json_body(ref("ApiKeyCreate")),
                "responses": responses({201: ok("Created.", "ApiKeyCreated")}, *change),
            },
            "get": {
                "operationId": "listApiKeys",
                "summary": "The account's keys (not the keys themselves)",
                "responses": responses({200: ok("Oldest first.", "ApiKeyList")}, *read),
            },
        },
        account + "/api-keys/{key_id}": {
            "parameters": [account_id, path_parameter("key_id", "The key's id.")],
            "delete": {
                "operationId": "revokeApiKey",
                "summary": "Revoke a key (within 1 s everywhere)",
                "responses": responses({204: no_content("Revoked.")}, *read, MANAGED),
            },
        },
        account + "/smpp": {
            "parameters": [account_id],
            "put": {
                "operationId": "putSmpp",
                "summary": "Set the account's SMPP credentials",
                "requestBody": json_body(ref("SmppPut")),
                "responses": responses(
                    {200: ok("The credentials, the password aside.", "Smpp")},
                    *change,
                    {409: ("managed_by_config", "system_id_taken")},
                ),
            },
        },
        account + "/credit": {
            "parameters": [account_id],
            "post": {
                "operationId": "addCredit",
                "summary": "A top-up or (negative) an adjustment",
                "requestBody": json_body(ref("CreditAdd")),
                "responses": responses(
                    {201: ok("The ledger entry.", "LedgerEntry")},
                    *change,
                    {409: ("account_unverified",)},
                ),
            },
        },
        account + "/ledger": {
            "parameters": [account_id],
            "get": {
                "operationId": "listLedger",
                "summary": "The account's ledger, newest first",
                "parameters": pages,
                "responses": responses({200: ok("A page.", "LedgerPage")}, *listed, NOT_FOUND),
            },
        },
        account + "/sender-ids": {
            "parameters": [account_id],
            "get": {
                "operationId": "listSenderIds",
                "summary": "The account's registered sender IDs",
                "responses": responses({200: ok("By name.", "SenderIdList")}, *read),
            },
        },
        account + "/sender-ids/{sender_id}": {
            "parameters": [
                account_id,
                path_parameter(
                    "sender_id",
                    "An E.164 number with + (%2B), a short code or an alphanumeric sender ID.",
                ),
            ],
            "put": {
                "operationId": "putSenderId",
                "summary": "Register a sender ID for these countries",
                "requestBody": json_body(ref("SenderIdPut")),
                "responses": responses({200: ok("Registered.", "SenderId")}, *change, MANAGED),
            },
            "delete": {
                "operationId": "deleteSenderId",
                "summary": "Remove a registered sender ID",
                "responses": responses({204: no_content("Removed.")}, *read, MANAGED),
            },
        },
        account + "/webhook-secret": {
            "parameters": [account_id],
            "get": {
                "operationId": "getWebhookSecrets",
                "summary": "The account's webhook secrets, by fingerprint",
                "responses": responses({200: ok("The secrets.", "WebhookSecrets")}, *read),
            },
            "put": {
                "operationId": "putNextWebhookSecret",
                "summary": "Start a rotation: a next secret signs beside the current one",
                "requestBody": json_body(ref("WebhookSecretPut")),
                "responses": responses(
                    {200: ok("The secrets.", "WebhookSecrets")},
                    *change,
                    {409: ("managed_by_config", "secret_in_use")},
                ),
            },
        },
        account + "/webhook-secret/promote": {
            "parameters": [account_id],
            "post": {
                "operationId": "promoteWebhookSecret",
                "summary": "End a rotation: the next secret becomes the only one",
                "responses": responses(
                    {200: ok("The secrets.", "WebhookSecrets")},
                    *read,
                    {409: ("managed_by_config", "no_next_secret")},
                ),
            },
        },
        account + "/webhook-secret/next": {
            "parameters": [account_id],
            "delete": {
                "operationId": "deleteNextWebhookSecret",
                "summary": "Call a rotation off: the next secret stops signing",
                "responses": responses({204: no_content("Called off.")}, *read, MANAGED),
            },
        },
        PREFIX + "/numbers": {
            "get": {
                "operationId": "listNumbers",
                "summary": "Sender numbers by number",
                "parameters": pages,
                "responses": responses({200: ok("A page.", "NumberPage")}, *listed),
            },
        },
        PREFIX + "/numbers/{number}": {
            "parameters": [
                path_parameter(
                    "number", "An E.164 number with + (%2B), a short code or an alphanumeric ID."
                )
            ],
            "put": {
                "operationId": "putNumber",
                "summary": "Give a sender number to an account",
                "requestBody": json_body(ref("NumberPut")),
                "responses": responses({200: ok("The number.", "Number")}, *change, MANAGED),
            },
            "delete": {
                "operationId": "deleteNumber",
                "summary": "Remove a sender number",
                "responses": responses({204: no_content("Removed.")}, *read, MANAGED),
            },
        },
        PREFIX + "/audit": {
            "get": {
                "operationId": "listAudit",
                "summary": "Every change, newest first",
                "parameters": pages,
                "responses": responses({200: ok("A page.", "AuditPage")}, *listed),
            },
        },
        PREFIX + "/opt-outs": {
            "get": {
                "operationId": "listOptOuts",
                "summary": "Opt-outs of one account, or of all",
                "parameters": [
                    query("account", string(), "Only this account's (in number order)."),
                    *pages,
                ],
                "responses": responses({200: ok("A page.", "OptOutPage")}, *listed, NOT_FOUND),
            },
        },
        account + "/opt-outs/import": {
            "parameters": [account_id],
            "post": {
                "operationId": "importOptOuts",
                "summary": "Add a list of opted-out numbers to an account",
                "requestBody": {
                    "required": True,
                    "description": "One E.164 number per line, at most"
                    f" {admin_requests.MAX_IMPORT_LINES} lines; invalid lines are skipped.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "responses": responses(
                    {200: ok("What was read and added.", "OptOutImport")},
                    *read,
                    {413: ("too_many_lines",), 415: ("unsupported_media_type",)},
                ),
            },
        },
        PREFIX + "/senders": {
            "get": {
                "operationId": "listSenders",
                "summary": "Flagged and suspended sender numbers with their opt-out rates",
                "parameters": [
                    query("state", string(enum=[FLAGGED, SUSPENDED]), "Only in this state."),
                    *page_parameters(admin_senders.DEFAULT_PAGE, admin_senders.MAX_PAGE),
                ],
                "responses": responses({200: ok("A page.", "SenderPage")}, *listed),
            },
        },
        PREFIX + "/senders/{number}/resume": {
            "parameters": [path_parameter("number", "The sender number.")],
            "post": {
                "operationId": "resumeSender",
                "summary": "Lift a flag or a suspension",
                "responses": responses({200: ok("Resumed.", "SenderResumed")}, *read),
            },
        },
        PREFIX + "/templates": {
            "get": {
                "operationId": "listTemplates",
                "summary": "Templates by id",
                "parameters": [
                    query("status", string(enum=list(template_rows.STATUSES)), "Only this status."),
                    query("account", string(), "Only this account's."),
                    *page_parameters(admin_api.DEFAULT_PAGE, template_api.MAX_PAGE),
                ],
                "responses": responses({200: ok("A page.", "TemplatePage")}, *listed),
            },
        },
        PREFIX + "/templates/{id}/approve": {
            "parameters": [path_parameter("id", "The template's id.")],
            "post": {
                "operationId": "approveTemplate",
                "summary": "Approve a pending template",
                "responses": responses(
                    {200: ok("Approved.", "Template")}, *read, {409: ("template_not_pending",)}
                ),
            },
        },
        PREFIX + "/templates/{id}/reject": {
            "parameters": [path_parameter("id", "The template's id.")],
            "post": {
                "operationId": "rejectTemplate",
                "summary": "Reject a pending template, with the reason",
                "requestBody": json_body(ref("TemplateReject")),
                "responses": responses(
                    {200: ok("Rejected.", "Template")}, *change, {409: ("template_not_pending",)}
                ),
            },
        },
        status_page.DATA: {
            "get": {
                "operationId": "getStatus",
                "summary": "What the status page shows: this instance's state",
                "security": _TOKEN_OR_BASIC,
                "responses": responses({200: ok("The state now.", "Status")}, AUTH_ERRORS),
            }
        },
        **{
            path: _status_file(name, content_type)
            for path, (name, content_type) in status_page.ASSETS.items()
        },
        PREFIX + "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "responses": responses(
                    {200: json_answer("OpenAPI 3.1.", {"type": "object"})}, AUTH_ERRORS
                ),
            }
        },
    }


def _status_file(name: str, content_type: str) -> Schema:
    """GET of the status page or of its script or style sheet."""
    return {
        "get": {
            "operationId": "get" + "".join(part.title() for part in name.split(".")),
            "summary": f"The operator's status page: {name}",
            "security": _TOKEN_OR_BASIC,
            "responses": responses(
                {
                    200: {
                        "description": name,
                        "content": {content_type.partition(";")[0]: {"schema": {"type": "string"}}},
                    }
                },
                AUTH_ERRORS,
            ),
        }
    }


def admin_document() -> Schema:
    return document(
        title="smsrouter operator API",
        description=(
            "For an aggregator's own staff: accounts, keys, credentials, credit,"
            " numbers, sender IDs, opt-outs, senders, templates and the audit log. Every change"
            " is audited and takes effect on every instance within 1 s. Every error is an"
            " RFC 9457 problem (`application/problem+json`) with a stable `code`. Send"
            " `Authorization: Bearer <operator token>`."
        ),
        paths=_paths(),
        schemas=_schemas(),
        scheme=SCHEME,
        scheme_description="A token of `[admin] tokens`.",
        more_schemes={
            BASIC: {
                "type": "http",
                "scheme": "basic",
                "description": "The status page's routes: the operator token as the password"
                " of HTTP Basic authentication, any user name.",
            }
        },
    )
