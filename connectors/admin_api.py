"""The operator API (CONTRACT §8): accounts, API keys, SMPP credentials,
credit, numbers, sender IDs and the audit log, over HTTP on `[admin] listen`.

Every request names its operator by a token of `[admin] tokens`, kept here
only as a SHA-256 digest; the token's name is the actor of every change the
directory (router/store/directory.py) writes and audits. A body is checked
whole before the database is touched, and every bad field of it is named in
one 422. Errors are RFC 9457 problems with the app API's codes
(connectors/problems.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
import re
import zoneinfo
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import msgspec
import structlog
from msgspec import UNSET
from yarl import URL

from smsrouter.connectors.admin_requests import (
    MAX_IMPORT_BYTES,
    MAX_IMPORT_LINES,
    MONEY_FIELDS,
    PATCH_FIELDS,
    AccountCreate,
    AccountPatch,
    ApiKeyCreate,
    CreditAdd,
    NumberPut,
    SenderIdPut,
    SmppPut,
    import_lines,
)
from smsrouter.connectors.admin_senders import SenderRoutes
from smsrouter.connectors.admin_webhook_secret import WebhookSecretRoutes
from smsrouter.connectors.bearer import bearer_credential, unknown_credential
from smsrouter.connectors.cursors import id_cursor, id_of_cursor, key_cursor, key_of_cursor
from smsrouter.connectors.http_server import (
    HEADER_TIMEOUT,
    MAX_CONNECTIONS_PER_IP,
    HttpServer,
    Request,
    Response,
)
from smsrouter.connectors.openapi_schemas import encode as encode_document
from smsrouter.connectors.problems import (
    NUL_DETAIL,
    STORE_DOWN,
    field_errors,
    holds_nul,
    json_response,
    on_connection,
    problem,
    rfc3339,
    server_error,
    store_timeout,
    store_unavailable,
    within,
)
from smsrouter.connectors.status_page import StatusPage, StatusSource
from smsrouter.connectors.template_api import admin_decide_template, admin_list_templates
from smsrouter.router.admission import FieldError
from smsrouter.router.auth_throttle import AuthThrottle
from smsrouter.router.opt_outs import OptOutList
from smsrouter.router.senders import NumberType, canonical_sender, classify_sender
from smsrouter.router.store import directory, ledger
from smsrouter.router.store import opt_outs as opt_out_rows

log = structlog.get_logger("admin")

PREFIX = "/admin/v1"
# Seconds a request waits for the database before it is answered 503
# (CONTRACT §11 "A hung database"), as the app API does.
REQUEST_TIMEOUT = 10.0
# Lists (admin_http: `?limit=` 1..500, default 100).
DEFAULT_PAGE = 100
MAX_PAGE = 500
_LIST_PARAMETERS = frozenset({"limit", "after"})
# Money (admin_http): at most 12 integer digits and 6 decimals, written out
# in plain decimal notation.
MAX_INTEGER_DIGITS = 12
MAX_DECIMALS = 6
_DECIMAL = re.compile(r"[+-]?([0-9]+)(?:\.([0-9]+))?", re.ASCII)
# The replies to STOP, START and HELP (admin_http: at most 480 characters,
# three concatenated GSM-7 parts).
MAX_REPLY = 480
MAX_LOCK_REASON = 500
MAX_URL = 2048
MAX_KEY_NAME = 100
MAX_REFERENCE = 200
# SMPP 3.4 §5.2.1 and §5.2.2: system_id and password are C-Octet Strings of
# at most 16 and 9 octets, the terminating NUL included.
MAX_SYSTEM_ID = 15
MAX_PASSWORD = 8
MAX_BINDS = 100
# daily_alarm and daily_limit are PostgreSQL integers.
MAX_COUNT = 2**31 - 1
# An alphanumeric sender is at most 11 characters (3GPP TS 23.040 §9.1.2.5),
# an E.164 number at most 15 digits (ITU-T E.164 §6).
MAX_ALPHANUMERIC = 11
MAX_E164_DIGITS = 15
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_COUNTRY = re.compile(r"[A-Z]{2}", re.ASCII)
_NUMBER_TYPES = tuple(t.value for t in NumberType)

T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)
Handler = Callable[[Request, str], Awaitable[Response]]
ServerHandler = Callable[[Request], Awaitable[Response]]
Check = Callable[[str, Any, list[FieldError]], Any]


class _Answer(Exception):
    """Stops a handler with this response (a 400 or 422 found while reading
    the request)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class AdminApi:
    def __init__(
        self,
        pool: asyncpg.Pool,
        tokens: Sequence[tuple[str, str]],
        *,
        price_plans: Callable[[], Collection[str]],
        request_timeout: float = REQUEST_TIMEOUT,
        header_timeout: float = HEADER_TIMEOUT,
        max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP,
        auth_throttle: AuthThrottle | None = None,
        opt_outs: OptOutList | None = None,
        status: StatusSource | None = None,
    ) -> None:
        self.pool = pool
        # This process's opt-out lists: an import joins them as it commits
        # (the other processes reload the account on its NOTIFY).
        self.opt_outs = opt_outs
        # CONTRACT §8: tokens are stored hashed. A token is looked up by its
        # digest, so no comparison runs over the token itself.
        self._token_names = {_digest(token): name for name, token in tokens}
        self.price_plans = price_plans
        self.request_timeout = request_timeout
        # Failed authentications per source address (CONTRACT §11); the
        # daemon may share one with the other ingresses.
        self.auth_throttle = auth_throttle if auth_throttle is not None else AuthThrottle()
        account = PREFIX + "/accounts/{id}"
        self.routes: dict[str, dict[str, ServerHandler]] = {
            PREFIX + "/accounts": {
                "POST": self._authed(self.create_account),
                "GET": self._authed(self.list_accounts),
            },
            account: {
                "GET": self._authed(self.get_account),
                "PATCH": self._authed(self.patch_account),
            },
            account + "/api-keys": {
                "POST": self._authed(self.create_api_key),
                "GET": self._authed(self.list_api_keys),
            },
            account + "/api-keys/{key_id}": {"DELETE": self._authed(self.revoke_api_key)},
            account + "/smpp": {"PUT": self._authed(self.put_smpp)},
            account + "/credit": {"POST": self._authed(self.add_credit)},
            account + "/ledger": {"GET": self._authed(self.list_ledger)},
            account + "/sender-ids": {"GET": self._authed(self.list_sender_ids)},
            account + "/sender-ids/{sender_id}": {
                "PUT": self._authed(self.put_sender_id),
                "DELETE": self._authed(self.delete_sender_id),
            },
            PREFIX + "/numbers": {"GET": self._authed(self.list_numbers)},
            PREFIX + "/numbers/{number}": {
                "PUT": self._authed(self.put_number),
                "DELETE": self._authed(self.delete_number),
            },
            PREFIX + "/audit": {"GET": self._authed(self.list_audit)},
            PREFIX + "/opt-outs": {"GET": self._authed(self.list_opt_outs)},
            account + "/opt-outs/import": {"POST": self._authed(self.import_opt_outs)},
            PREFIX + "/senders": {"GET": self._authed(SenderRoutes(self._store).list)},
            PREFIX + "/senders/{number}/resume": {
                "POST": self._authed(SenderRoutes(self._store).resume)
            },
            PREFIX + "/templates": {"GET": self._authed(self.list_templates)},
            PREFIX + "/templates/{id}/approve": {"POST": self._authed(self.approve_template)},
            PREFIX + "/templates/{id}/reject": {"POST": self._authed(self.reject_template)},
            **self._webhook_secret_routes(account),
            PREFIX + "/openapi.json": {"GET": self._authed(self.openapi)},
        }
        if status is not None:
            # CONTRACT §8: GET /status, drawn from what `status` builds.
            page = StatusPage(status, self._token_name, self.auth_throttle)
            self.routes.update(page.routes)
        self.server = HttpServer(
            self.routes,
            # Only an import may carry a list of up to MAX_IMPORT_LINES numbers.
            body_limits={account + "/opt-outs/import": MAX_IMPORT_BYTES},
            error_response=server_error,
            header_timeout=header_timeout,
            max_connections_per_ip=max_connections_per_ip,
        )
        # CONTRACT §8: the document of this API, built once; behind the
        # token like every route of this listener. Imported here: it reads
        # this module's limits.
        from smsrouter.connectors.openapi_admin import admin_document

        self._openapi = encode_document(admin_document())

    def _webhook_secret_routes(self, account: str) -> dict[str, dict[str, ServerHandler]]:
        """CONTRACT §3 rotation: connectors/admin_webhook_secret.py."""
        secret = WebhookSecretRoutes(self._store)
        return {
            account + "/webhook-secret": {
                "GET": self._authed(secret.show),
                "PUT": self._authed(secret.put_next),
            },
            account + "/webhook-secret/promote": {"POST": self._authed(secret.promote)},
            account + "/webhook-secret/next": {"DELETE": self._authed(secret.clear_next)},
        }

    # ----------------------------------------------------------- plumbing

    def _authed(self, handler: Handler) -> ServerHandler:
        async def wrapper(request: Request) -> Response:
            refused = self._refusal(request)
            if isinstance(refused, Response):
                return refused
            response = await self._answer(handler, request, refused)
            if request.method not in ("GET", "HEAD") and response.status < 300:
                # Who changed what; the audit log holds the values.
                log.info("operator change", actor=refused, method=request.method, path=request.path)
            return response

        return wrapper

    def _refusal(self, request: Request) -> Response | str:
        """The 401/429 answer, or the name of the request's token."""
        token = bearer_credential(
            request, self.auth_throttle, what="operator token", ingress="admin"
        )
        if isinstance(token, Response):
            return token
        name = self._token_names.get(_digest(token))
        if name is None:
            return unknown_credential(
                request, self.auth_throttle, what="operator token", ingress="admin"
            )
        return name

    def _token_name(self, token: str) -> str | None:
        return self._token_names.get(_digest(token))

    async def _answer(self, handler: Handler, request: Request, actor: str) -> Response:
        """Run the handler; its refusals and the directory's become problems."""
        try:
            return await handler(request, actor)
        except _Answer as answer:
            return answer.response
        except directory.NotFound as missing:
            return _not_found(missing)
        except directory.Conflict as conflict:
            return _conflict(conflict)
        except TimeoutError:
            # Before STORE_DOWN: TimeoutError is an OSError.
            return store_timeout(self.request_timeout)
        except STORE_DOWN:
            return store_unavailable()

    async def _store(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """One directory call on a pooled connection, within request_timeout
        (CONTRACT §11 "A hung database"), waiting for the connection included."""
        return await within(on_connection(self.pool, work), self.request_timeout)

    # ----------------------------------------------------------- accounts

    async def create_account(self, request: Request, actor: str) -> Response:
        body, errors = _decode(request.body, AccountCreate)
        fields = self._patch_changes(body, errors)
        if not _ACCOUNT_ID.fullmatch(body.id):
            errors.append(FieldError("id", "invalid", "1 to 64 of A-Z a-z 0-9 _ . -"))
        if not _CURRENCY.fullmatch(body.currency):
            errors.append(FieldError("currency", "invalid", "3 upper-case letters (ISO 4217)"))
        credit = _non_negative_money("credit", body.credit, errors)
        _refuse(errors)
        fields.update(id=body.id, currency=body.currency, credit=credit)
        account, webhook_secret = await self._store(
            lambda conn: directory.create_account(conn, actor, fields)
        )
        # The webhook secret is shown here once (CONTRACT §8: minus secrets
        # everywhere else).
        created = json_response(201, {**account, "webhook_secret": webhook_secret})
        created.headers = {"Location": f"{PREFIX}/accounts/{body.id}"}
        return created

    async def list_accounts(self, request: Request, actor: str) -> Response:
        limit, after = _page(request)
        after_id = _key_position(after)
        rows = await self._store(
            lambda conn: directory.list_accounts(conn, limit=limit + 1, after=after_id)
        )
        page, more = rows[:limit], len(rows) > limit
        return json_response(
            200, {"accounts": page, "next": key_cursor(page[-1]["id"]) if more else None}
        )

    async def get_account(self, request: Request, actor: str) -> Response:
        account_id = request.match_info["id"]
        account = await self._store(lambda conn: directory.get_account(conn, account_id))
        if account is None:
            return _no_account(account_id)
        return json_response(200, account)

    async def patch_account(self, request: Request, actor: str) -> Response:
        account_id = request.match_info["id"]
        body, errors = _decode(request.body, AccountPatch)
        changes = self._patch_changes(body, errors)
        _refuse(errors)
        if not changes:
            # An empty patch changes nothing (RFC 7396) and writes no audit row.
            return await self.get_account(request, actor)
        account = await self._store(
            lambda conn: directory.patch_account(conn, actor, account_id, changes)
        )
        return json_response(200, account)

    def _patch_changes(self, body: AccountPatch, errors: list[FieldError]) -> dict[str, Any]:
        """The fields the body sets, checked and converted (money to Decimal)."""
        checks = self._patch_checks()
        changes: dict[str, Any] = {}
        for name in PATCH_FIELDS:
            value = getattr(body, name)
            if value is not UNSET:
                changes[name] = checks[name](name, value, errors)
        return changes

    def _patch_checks(self) -> dict[str, Check]:
        return {
            "verified": _as_sent,
            "locked": _as_sent,
            "lock_reason": _text_check(0, MAX_LOCK_REASON),
            "max_tps": _non_negative_number,
            "daily_alarm": _count,
            "daily_limit": _count,
            "credit_limit": _non_negative_money,
            "callback_url": _url,
            "inbound_url": _url,
            "alert_url": _url,
            "allowed_ips": _ip_list,
            "stop_reply": _text_check(0, MAX_REPLY),
            "start_reply": _text_check(0, MAX_REPLY),
            "help_reply": _text_check(0, MAX_REPLY),
            "templates_required": _as_sent,
            "timezone": _zone,
            "price_plan": self._price_plan,
            "allowed_countries": _country_list_check(0),
            "callback_sent": _as_sent,
        }

    def _price_plan(self, field: str, value: str, errors: list[FieldError]) -> str:
        # Read at each request: SIGHUP may have changed [[price_plans]].
        if value and value not in self.price_plans():
            errors.append(FieldError(field, "unknown_price_plan", "not a configured price plan"))
        return value

    # ----------------------------------------------------------- API keys

    async def create_api_key(self, request: Request, actor: str) -> Response:
        account_id = request.match_info["id"]
        body, errors = _decode(request.body, ApiKeyCreate)
        name = _text("name", body.name, errors, 1, MAX_KEY_NAME)
        expires_at = (
            None if body.expires_at is None else _future("expires_at", body.expires_at, errors)
        )
        _refuse(errors)
        # The only answer that holds the key (CONTRACT §8: shown once).
        created = await self._store(
            lambda conn: directory.create_api_key(conn, actor, account_id, name, expires_at)
        )
        return json_response(201, created)

    async def list_api_keys(self, request: Request, actor: str) -> Response:
        account_id = request.match_info["id"]
        keys = await self._store(lambda conn: directory.list_api_keys(conn, account_id))
        return json_response(200, {"api_keys": keys})

    async def revoke_api_key(self, request: Request, actor: str) -> Response:
        account_id, key_id = request.match_info["id"], request.match_info["key_id"]
        await self._store(lambda conn: directory.revoke_api_key(conn, actor, account_id, key_id))
        return Response(204)

    # ----------------------------------------------------------- SMPP

    async def put_smpp(self, request: Request, actor: str) -> Response:
        account_id = request.match_info["id"]
        body, errors = _decode(request.body, SmppPut)
        # Neither value is echoed in a detail: the password is a secret.
        if not _c_octets(body.system_id, MAX_SYSTEM_ID):
            errors.append(
                FieldError(
                    "system_id", "invalid", f"1 to {MAX_SYSTEM_ID} printable ASCII characters"
                )
            )
        if not _c_octets(body.password, MAX_PASSWORD):
            errors.append(
                FieldError("password", "invalid", f"1 to {MAX_PASSWORD} printable ASCII characters")
            )
        if not 1 <= body.max_binds <= MAX_BINDS:
            errors.append(FieldError("max_binds", "invalid", f"a whole number, 1 to {MAX_BINDS}"))
        allowed_ips = _ip_list("allowed_ips", body.allowed_ips, errors)
        _refuse(errors)
        shown = await self._store(
            lambda conn: directory.put_smpp(
                conn, actor, account_id, system_id=body.system_id, password=body.password,
                max_binds=body.max_binds, allowed_ips=allowed_ips,
            )
        )  # fmt: skip
        return json_response(200, shown)

    # ----------------------------------------------------------- credit

    async def add_credit(self, request: Request, actor: str) -> Response:
        account_id = request.match_info["id"]
        body, errors = _decode(request.body, CreditAdd)
        amount = _money("amount", body.amount, errors)
        if amount is not None and amount == 0:
            errors.append(FieldError("amount", "invalid", "must not be zero"))
        reference = _text("reference", body.reference, errors, 1, MAX_REFERENCE)
        if amount is None or errors:
            raise _Answer(field_errors(errors))
        entry = await self._store(
            lambda conn: directory.add_credit(conn, actor, account_id, amount, reference)
        )
        return json_response(201, entry.as_json(with_actor=True))

    async def list_ledger(self, request: Request, actor: str) -> Response:
        account_id = request.match_info["id"]
        limit, after = _page(request)
        before = _id_position(after)

        async def read(conn: asyncpg.Connection) -> list[ledger.LedgerEntry] | None:
            if await directory.get_account(conn, account_id) is None:
                return None
            return await ledger.list_ledger(conn, account_id, limit=limit + 1, before=before)

        entries = await self._store(read)
        if entries is None:
            return _no_account(account_id)
        page, more = entries[:limit], len(entries) > limit
        return json_response(
            200,
            {
                "entries": [e.as_json(with_actor=True) for e in page],
                "next": id_cursor(page[-1].id) if more else None,
            },
        )

    # ----------------------------------------------------------- sender IDs

    async def put_sender_id(self, request: Request, actor: str) -> Response:
        account_id, sender_id = request.match_info["id"], request.match_info["sender_id"]
        body, errors = _decode(request.body, SenderIdPut)
        _sender("sender_id", sender_id, errors)
        countries = _country_list_check(1)("countries", body.countries, errors)
        _refuse(errors)
        shown = await self._store(
            lambda conn: directory.put_sender_id(conn, actor, account_id, sender_id, countries)
        )
        return json_response(200, shown)

    async def delete_sender_id(self, request: Request, actor: str) -> Response:
        account_id, sender_id = request.match_info["id"], request.match_info["sender_id"]
        await self._store(
            lambda conn: directory.delete_sender_id(conn, actor, account_id, sender_id)
        )
        return Response(204)

    async def list_sender_ids(self, request: Request, actor: str) -> Response:
        account_id = request.match_info["id"]
        rows = await self._store(lambda conn: directory.list_sender_ids(conn, account_id))
        return json_response(200, {"sender_ids": rows})

    # ----------------------------------------------------------- numbers

    async def put_number(self, request: Request, actor: str) -> Response:
        number = request.match_info["number"]
        body, errors = _decode(request.body, NumberPut)
        _sender("number", number, errors)
        if not body.account:
            errors.append(FieldError("account", "required", "an account id"))
        if body.type not in _NUMBER_TYPES:
            errors.append(FieldError("type", "invalid", "one of " + ", ".join(_NUMBER_TYPES)))
        if body.rate is not None and not (math.isfinite(body.rate) and body.rate > 0):
            errors.append(FieldError("rate", "invalid", "parts per second, more than 0"))
        _refuse(errors)
        try:
            shown = await self._store(
                lambda conn: directory.put_number(
                    conn, actor, number, account_id=body.account, type=body.type, rate=body.rate
                )
            )
        except directory.NotFound:
            # The only thing a PUT of a number can miss is its account: a
            # field of the body (admin_http: 422 naming "account").
            return field_errors([FieldError("account", "unknown_account", "no such account")])
        return json_response(200, shown)

    async def delete_number(self, request: Request, actor: str) -> Response:
        number = request.match_info["number"]
        await self._store(lambda conn: directory.delete_number(conn, actor, number))
        return Response(204)

    async def list_numbers(self, request: Request, actor: str) -> Response:
        limit, after = _page(request)
        after_number = _key_position(after)
        rows = await self._store(
            lambda conn: directory.list_numbers(conn, limit=limit + 1, after=after_number)
        )
        page, more = rows[:limit], len(rows) > limit
        return json_response(
            200, {"numbers": page, "next": key_cursor(page[-1]["number"]) if more else None}
        )

    # ----------------------------------------------------------- audit

    async def list_audit(self, request: Request, actor: str) -> Response:
        """Newest first: a page goes on with the entries older than its last."""
        limit, after = _page(request)
        before = _id_position(after)
        rows = await self._store(
            lambda conn: directory.list_audit(conn, limit=limit + 1, before=before)
        )
        page, more = rows[:limit], len(rows) > limit
        return json_response(
            200, {"entries": page, "next": id_cursor(page[-1]["id"]) if more else None}
        )

    # ----------------------------------------------------------- opt-outs

    async def list_opt_outs(self, request: Request, actor: str) -> Response:
        """GET /admin/v1/opt-outs[?account=ID]: one account's list in number
        order, or every account's in (account, number) order (CONTRACT §8)."""
        limit, after = _page(request, _LIST_PARAMETERS | {"account"})
        account_id = request.query.get("account") or None
        position = _key_position(after)
        if account_id is None:
            return await self._list_all_opt_outs(limit, position)
        account = account_id

        async def read(conn: asyncpg.Connection) -> list[dict[str, Any]] | None:
            if await directory.get_account(conn, account) is None:
                return None
            return await opt_out_rows.list_opt_outs(conn, account, limit=limit + 1, after=position)

        rows = await self._store(read)
        if rows is None:
            return _no_account(account)
        page, more = rows[:limit], len(rows) > limit
        return json_response(
            200,
            {
                "opt_outs": [{"account": account, **r} for r in page],
                "next": key_cursor(page[-1]["number"]) if more else None,
            },
        )

    async def _list_all_opt_outs(self, limit: int, position: str | None) -> Response:
        after: tuple[str, str] | None = None
        if position is not None:
            account_id, tab, number = position.partition("\t")
            if not tab:
                raise _Answer(field_errors([_bad_cursor()]))
            after = (account_id, number)
        rows = await self._store(
            lambda conn: opt_out_rows.list_all_opt_outs(conn, limit=limit + 1, after=after)
        )
        page, more = rows[:limit], len(rows) > limit
        last = page[-1] if more else None
        return json_response(
            200,
            {
                "opt_outs": page,
                "next": None
                if last is None
                else key_cursor(f"{last['account']}\t{last['number']}"),
            },
        )

    async def import_opt_outs(self, request: Request, actor: str) -> Response:
        """POST /admin/v1/accounts/{id}/opt-outs/import: a text/plain list,
        one E.164 number per line (CONTRACT §6: an aggregator migrating
        customers brings their lists). Invalid lines are skipped and
        answered, the first MAX_INVALID_SHOWN of them."""
        account_id = request.match_info["id"]
        media = (request.header("content-type") or "").partition(";")[0].strip().lower()
        if media != "text/plain":
            return problem(
                415, "Unsupported media type",
                "the body is a text/plain list, one E.164 number per line",
                kind="unsupported-media-type",
            )  # fmt: skip
        # Parsed beside the event loop: numbers outside NANP go through
        # libphonenumber (tens of microseconds each), which would hold the
        # loop for seconds over a full request.
        lines = await asyncio.to_thread(import_lines, request.body)
        if lines is None:
            return problem(
                413, "Too many lines",
                f"at most {MAX_IMPORT_LINES} lines a request; send a longer list in parts",
                kind="too-many-lines",
            )  # fmt: skip
        added = await self._store(
            lambda conn: opt_out_rows.import_opt_outs(
                conn, actor, account_id, lines.numbers, lines.received
            )
        )
        if self.opt_outs is not None:
            self.opt_outs.add_many(account_id, lines.numbers)
        return json_response(
            200,
            {
                "received": lines.received,
                "added": added,
                "invalid": [{"line": n, "value": v} for n, v in lines.invalid],
                "invalid_count": lines.invalid_count,
            },
        )

    # ----------------------------------------------------------- the document

    async def openapi(self, request: Request, actor: str) -> Response:
        return Response(200, self._openapi)

    # ----------------------------------------------------------- templates

    async def list_templates(self, request: Request, actor: str) -> Response:
        return await admin_list_templates(self.pool, request, self.request_timeout)

    async def approve_template(self, request: Request, actor: str) -> Response:
        return await admin_decide_template(
            self.pool, request, actor, self.request_timeout, approve=True
        )

    async def reject_template(self, request: Request, actor: str) -> Response:
        return await admin_decide_template(
            self.pool, request, actor, self.request_timeout, approve=False
        )


# ----------------------------------------------------------- answers


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _refuse(errors: list[FieldError]) -> None:
    if errors:
        raise _Answer(field_errors(errors))


def _not_found(missing: directory.NotFound) -> Response:
    return problem(404, "Not found", f"no such {missing.what}", kind="not-found")


def _no_account(account_id: str) -> Response:
    return problem(404, "Not found", f"no account {account_id!r}", kind="not-found")


def _conflict(conflict: directory.Conflict) -> Response:
    extra: dict[str, Any] = {} if conflict.field is None else {"field": conflict.field}
    return problem(
        409, "Conflict", conflict.detail, kind=conflict.code.replace("_", "-"),
        code=conflict.code, **extra,
    )  # fmt: skip


# ----------------------------------------------------------- reading requests


def _decode(raw: bytes, shape: type[S]) -> tuple[S, list[FieldError]]:
    """The body as `shape`, and the errors of its unknown and mistyped
    fields (those left out of it, so that the values of the others can still
    be checked and every bad field named in one 422). _Answer for malformed
    JSON or a body that is no object (400), or one without a required field
    of the right type (422)."""
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise _Answer(problem(400, "Malformed JSON", str(exc), kind="malformed-json")) from None
    if not isinstance(doc, dict):
        raise _Answer(
            problem(400, "Malformed JSON", "the body must be a JSON object", kind="malformed-json")
        )
    fields = {f.encode_name: f for f in msgspec.structs.fields(shape)}
    errors = [
        FieldError(name, "unknown_field", "not a field of this request")
        for name in doc
        if name not in fields
    ]
    known: dict[str, Any] = {}
    complete = True
    for name, info in fields.items():
        if name not in doc:
            if info.required:
                errors.append(FieldError(name, "required", f"{name} is required"))
                complete = False
            continue
        error = _type_error(name, doc[name], info.type)
        if error is None and holds_nul(doc[name]):
            error = FieldError(name, "invalid", NUL_DETAIL)
        if error is None:
            known[name] = doc[name]
        else:
            errors.append(error)
            complete = complete and not info.required
    if not complete:
        raise _Answer(field_errors(errors))
    return msgspec.convert(known, shape), errors


def _type_error(name: str, value: Any, kind: Any) -> FieldError | None:
    if name in MONEY_FIELDS and isinstance(value, int | float) and not isinstance(value, bool):
        # CONTRACT §3: money is a decimal string, so that it is never rounded.
        return FieldError(name, "invalid", "a decimal string, not a JSON number")
    try:
        msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        # "Expected `str`, got `int` - at `$[1]`": the position within the field.
        return FieldError(name, "invalid", str(exc).replace("`$", f"`{name}"))
    return None


def _page(
    request: Request, parameters: frozenset[str] = _LIST_PARAMETERS
) -> tuple[int, str | None]:
    """`?limit=` and `?after=` of a list; 422 for anything not in `parameters`."""
    query = request.query
    errors = [
        FieldError(name, "unknown", "not a parameter of this list")
        for name in sorted(set(query) - parameters)
    ]
    limit = DEFAULT_PAGE
    raw_limit = query.get("limit")
    if raw_limit:
        limit = int(raw_limit) if raw_limit.isascii() and raw_limit.isdigit() else 0
        if not 1 <= limit <= MAX_PAGE:
            errors.append(FieldError("limit", "invalid", f"a whole number, 1 to {MAX_PAGE}"))
    _refuse(errors)
    return limit, query.get("after") or None


def _key_position(after: str | None) -> str | None:
    if after is None:
        return None
    key = key_of_cursor(after)
    if key is None:
        raise _Answer(field_errors([_bad_cursor()]))
    return key


def _id_position(after: str | None) -> int | None:
    if after is None:
        return None
    row_id = id_of_cursor(after)
    if row_id is None:
        raise _Answer(field_errors([_bad_cursor()]))
    return row_id


def _bad_cursor() -> FieldError:
    return FieldError("after", "invalid", "not a cursor this API gave")


# ----------------------------------------------------------- field checks
#
# Each takes (field, value, errors), appends what is wrong with the value and
# returns it as the directory takes it.


def _as_sent(field: str, value: Any, errors: list[FieldError]) -> Any:
    return value


def _text(field: str, value: str, errors: list[FieldError], least: int, most: int) -> str:
    if not least <= len(value) <= most:
        errors.append(FieldError(field, "invalid", f"{least} to {most} characters"))
    return value


def _text_check(least: int, most: int) -> Check:
    def check(field: str, value: str, errors: list[FieldError]) -> str:
        return _text(field, value, errors, least, most)

    return check


def _non_negative_number(field: str, value: float, errors: list[FieldError]) -> float:
    if not (math.isfinite(value) and value >= 0):
        errors.append(FieldError(field, "invalid", "a number, 0 or more"))
    return value


def _count(field: str, value: int, errors: list[FieldError]) -> int:
    if not 0 <= value <= MAX_COUNT:
        errors.append(FieldError(field, "invalid", f"a whole number, 0 to {MAX_COUNT}"))
    return value


def _money(field: str, value: str, errors: list[FieldError]) -> Decimal | None:
    """A decimal string in plain notation within the bounds of admin_http."""
    written = _DECIMAL.fullmatch(value)
    if written is None:
        errors.append(FieldError(field, "invalid", 'a decimal string such as "12.50"'))
        return None
    whole, decimals = written.group(1), written.group(2) or ""
    if len(whole.lstrip("0")) > MAX_INTEGER_DIGITS:
        errors.append(FieldError(field, "invalid", f"at most {MAX_INTEGER_DIGITS} integer digits"))
        return None
    if len(decimals) > MAX_DECIMALS:
        errors.append(FieldError(field, "invalid", f"at most {MAX_DECIMALS} decimal places"))
        return None
    return Decimal(value)


def _non_negative_money(field: str, value: str, errors: list[FieldError]) -> Decimal | None:
    amount = _money(field, value, errors)
    if amount is not None and amount < 0:
        errors.append(FieldError(field, "invalid", "must not be negative"))
    return amount


def _url(field: str, value: str, errors: list[FieldError]) -> str:
    """An http(s) URL, or "" for none (CONTRACT §3: http or https)."""
    if value == "":
        return value
    try:
        url = URL(value)
    except ValueError:
        url = URL()
    if (
        len(value) > MAX_URL
        or any(ch.isspace() or not ch.isprintable() for ch in value)
        or url.scheme not in ("http", "https")
        or not url.host
    ):
        errors.append(FieldError(field, "invalid_url", 'an http or https URL, or ""'))
    return value


def _ip_list(field: str, value: list[str], errors: list[FieldError]) -> list[str]:
    for i, ip in enumerate(value):
        try:
            ipaddress.ip_network(ip, strict=False)
        except ValueError:
            errors.append(FieldError(field, "invalid", f"[{i}] is not an IP address or network"))
    return value


def _zone(field: str, value: str, errors: list[FieldError]) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        errors.append(FieldError(field, "invalid", "an IANA time zone such as Europe/Paris"))
    return value


def _country_list_check(least: int) -> Check:
    def check(field: str, value: list[str], errors: list[FieldError]) -> list[str]:
        if len(value) < least:
            errors.append(FieldError(field, "required", f"at least {least} country"))
        for i, code in enumerate(value):
            if not _COUNTRY.fullmatch(code):
                errors.append(
                    FieldError(field, "invalid", f"[{i}] is not an ISO 3166 alpha-2 code")
                )
        return value

    return check


def _future(field: str, value: str, errors: list[FieldError]) -> datetime | None:
    at = rfc3339(value)
    if at is None:
        errors.append(FieldError(field, "invalid", "an RFC 3339 time with its offset"))
    elif at <= datetime.now(UTC):
        errors.append(FieldError(field, "invalid", "must be in the future"))
    return at


def _c_octets(value: str, most: int) -> bool:
    """1 to `most` printable ASCII characters: an SMPP C-Octet String."""
    return 1 <= len(value) <= most and value.isascii() and value.isprintable()


def _sender(field: str, value: str, errors: list[FieldError]) -> None:
    """A number as the router writes it (router/senders.py): E.164 with
    "+", a short code's digits, or an alphanumeric sender ID."""
    try:
        kind = classify_sender(value)
        canonical = canonical_sender(value) == value
    except ValueError:
        kind, canonical = None, False
    if kind is NumberType.ALPHANUMERIC:
        valid = len(value) <= MAX_ALPHANUMERIC and all(
            ch.isascii() and (ch.isalnum() or ch == " ") for ch in value
        )
    else:
        valid = canonical and len(value) <= MAX_E164_DIGITS + 1
    if not valid:
        errors.append(
            FieldError(
                field, "invalid",
                "an E.164 number with + (%2B in a path), a short code or an alphanumeric sender",
            )
        )  # fmt: skip
