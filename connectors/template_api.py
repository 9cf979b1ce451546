"""Templates over HTTP (CONTRACT §6 "Templates", §3, §8).

The app API's `POST/GET /v1/templates` and `GET /v1/templates/{id}`, the
operator API's list, approve and reject, and the part of `POST
/v1/messages` that turns `"template"` and `"params"` into the text to send.
`connectors/http_api.py` and `connectors/admin_api.py` route to these; the
rows are `router/store/templates.py`'s, the rendering `router/templates.py`'s.

Bodies are read as plain JSON objects and checked here field by field, so
that every bad field is named in one 422 (and no msgspec Struct is needed:
this module is compiled in the optional build).
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import msgspec

from smsrouter.connectors.cursors import key_cursor, key_of_cursor
from smsrouter.connectors.http_server import Request, Response
from smsrouter.connectors.problems import (
    field_errors,
    json_response,
    list_query,
    nul_errors,
    on_connection,
    problem,
    store_read,
    within,
)
from smsrouter.connectors.send_request import SendRequest
from smsrouter.router.accounts import Account
from smsrouter.router.admission import FieldError
from smsrouter.router.content import KINDS
from smsrouter.router.store import templates as store
from smsrouter.router.store.directory import Conflict
from smsrouter.router.templates import ParamsError, parse_template, render

MAX_NAME = 64
_NAME = re.compile(r"[A-Za-z0-9_.\- ]{1,64}", re.ASCII)
MAX_REASON = 500
DEFAULT_PAGE = 50
MAX_PAGE = 500
_CREATE_FIELDS = frozenset({"name", "text", "kind"})


class _Refused(Exception):
    """Stops reading a request with this answer."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


# ----------------------------------------------------------- POST /v1/messages


def resolve_template(req: SendRequest, account: Account) -> tuple[str | None, list[FieldError]]:
    """A send's text from its template: exactly one of `text` and
    `template`; the template an approved one of the account; its params
    filling it. On success `req.text` is the rendered text (what is stored
    and sent) and `req.kind` the template's unless the request gave one;
    returns the template id and the field errors."""
    if req.template is None:
        if req.params is not None:
            return None, [FieldError("params", "invalid", "params go with a template")]
        if req.text is None:
            return None, [FieldError("text", "required", "text or template is required")]
        return None, []
    if req.text is not None:
        return None, [FieldError("template", "invalid", "send text or template, not both")]
    template = account.templates.get(req.template)
    if template is None:
        # Only approved ones are held here: pending, rejected, another
        # account's or no such template are told apart by GET /v1/templates.
        return None, [
            FieldError(
                "template",
                "template_not_approved",
                f"{req.template!r} is not an approved template of this account",
            )
        ]
    try:
        req.text = render(template, req.params or {})
    except ParamsError as bad:
        return None, [FieldError(f"params.{p.name}", p.code, p.detail) for p in bad.problems]
    if req.kind is None:
        req.kind = template.kind
    return template.id, []


# ----------------------------------------------------------- reading bodies


def _object(raw: bytes) -> dict[str, Any]:
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise _Refused(problem(400, "Malformed JSON", str(exc), kind="malformed-json")) from None
    if not isinstance(doc, dict):
        raise _Refused(
            problem(400, "Malformed JSON", "the body must be a JSON object", kind="malformed-json")
        )
    nul = nul_errors(raw)
    if nul:
        raise _Refused(field_errors(nul))
    return doc


def _template_create(raw: bytes) -> tuple[str, str, str | None]:
    """(name, text, kind) of a POST /v1/templates body; _Refused naming
    every bad field."""
    doc = _object(raw)
    errors = [
        FieldError(name, "unknown_field", "not a field of this request")
        for name in sorted(set(doc) - _CREATE_FIELDS)
    ]
    name, text, kind = doc.get("name"), doc.get("text"), doc.get("kind")
    if name is None:
        errors.append(FieldError("name", "required", "name is required"))
    elif not isinstance(name, str) or not _NAME.fullmatch(name):
        errors.append(
            FieldError("name", "invalid", f"1 to {MAX_NAME} of A-Z a-z 0-9 _ . - and space")
        )
    if text is None:
        errors.append(FieldError("text", "required", "text is required"))
    elif not isinstance(text, str):
        errors.append(FieldError("text", "invalid", "a string"))
    else:
        try:
            parse_template(text)
        except ValueError as bad:
            errors.append(FieldError("text", "invalid_template", str(bad)))
    if kind is not None and kind not in KINDS:
        errors.append(FieldError("kind", "invalid", "transactional or promotional"))
    if errors:
        raise _Refused(field_errors(errors))
    assert isinstance(name, str) and isinstance(text, str)
    return name, text, kind


def _reason(raw: bytes) -> str:
    """The `reason` of POST /admin/v1/templates/{id}/reject: 1 to 500 characters."""
    doc = _object(raw)
    errors = [
        FieldError(name, "unknown_field", "not a field of this request")
        for name in sorted(set(doc) - {"reason"})
    ]
    reason = doc.get("reason")
    if reason is None:
        errors.append(FieldError("reason", "required", "reason is required"))
    elif not isinstance(reason, str) or not 1 <= len(reason) <= MAX_REASON:
        errors.append(FieldError("reason", "invalid", f"1 to {MAX_REASON} characters"))
    if errors:
        raise _Refused(field_errors(errors))
    assert isinstance(reason, str)
    return reason


def _list_query(
    request: Request, allowed: frozenset[str], most: int, default: int
) -> tuple[int, str | None, str | None]:
    """(limit, after id, status) of a list's query; _Refused naming each bad one."""
    query = request.query
    limit, after, errors = list_query(query, allowed, key_of_cursor, default, most)
    status = query.get("status") or None
    if status is not None and status not in store.STATUSES:
        errors.append(FieldError("status", "invalid", "one of " + ", ".join(store.STATUSES)))
    if errors:
        raise _Refused(field_errors(errors))
    return limit, after, status


def _page(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    page, more = rows[:limit], len(rows) > limit
    return page, key_cursor(page[-1]["id"]) if more else None


def _no_template() -> Response:
    return problem(404, "Not found", "no such template", kind="not-found")


# ----------------------------------------------------------- /v1/templates


async def create_template(
    pool: asyncpg.Pool, request: Request, account: Account, timeout: float
) -> Response:
    """POST /v1/templates → 201 {"id", "name", "text", "kind", "status": "pending"}."""
    try:
        name, text, kind = _template_create(request.body)
    except _Refused as refused:
        return refused.response

    async def create() -> dict[str, Any] | Conflict:
        try:
            async with pool.acquire() as conn:
                return await store.create_template(conn, account.id, name, text, kind)
        except Conflict as taken:
            return taken

    created = await store_read(create(), timeout)
    if isinstance(created, Response):
        return created
    if isinstance(created, Conflict):
        return problem(409, "Conflict", created.detail, kind="template-exists", field=created.field)
    shown = store.customer_json(created)
    answer = json_response(201, shown)
    answer.headers = {"Location": f"/v1/templates/{shown['id']}"}
    return answer


async def list_templates(
    pool: asyncpg.Pool, request: Request, account: Account, timeout: float
) -> Response:
    """GET /v1/templates?status=&limit=&after= (CONTRACT §3 lists)."""
    try:
        limit, after, status = _list_query(
            request, frozenset({"limit", "after", "status"}), MAX_PAGE, DEFAULT_PAGE
        )
    except _Refused as refused:
        return refused.response

    async def read() -> list[dict[str, Any]]:
        async with pool.acquire() as conn:
            return await store.list_templates(
                conn, limit=limit + 1, after=after, account_id=account.id, status=status
            )

    rows = await store_read(read(), timeout)
    if isinstance(rows, Response):
        return rows
    page, next_cursor = _page(rows, limit)
    return json_response(
        200, {"templates": [store.customer_json(r) for r in page], "next": next_cursor}
    )


async def get_template(
    pool: asyncpg.Pool, request: Request, account: Account, timeout: float
) -> Response:
    """GET /v1/templates/{id}: another account's id is a 404 too."""
    template_id = request.match_info["id"]

    async def read() -> dict[str, Any] | None:
        async with pool.acquire() as conn:
            return await store.get_template(conn, template_id, account.id)

    row = await store_read(read(), timeout)
    if isinstance(row, Response):
        return row
    if row is None:
        return _no_template()
    return json_response(200, store.customer_json(row))


# ----------------------------------------------------------- /admin/v1/templates
#
# Run inside the operator API's handler wrapper, which answers the store's
# NotFound (404) and Conflict (409), a timeout and a lost database (503).


async def admin_list_templates(pool: asyncpg.Pool, request: Request, timeout: float) -> Response:
    """GET /admin/v1/templates?status=&account=&limit=&after=."""
    try:
        limit, after, status = _list_query(
            request, frozenset({"limit", "after", "status", "account"}), MAX_PAGE, 100
        )
    except _Refused as refused:
        return refused.response
    account_id = request.query.get("account") or None
    rows = await within(
        on_connection(
            pool,
            lambda conn: store.list_templates(
                conn, limit=limit + 1, after=after, account_id=account_id, status=status
            ),
        ),
        timeout,
    )
    page, next_cursor = _page(rows, limit)
    return json_response(200, {"templates": page, "next": next_cursor})


async def admin_decide_template(
    pool: asyncpg.Pool, request: Request, actor: str, timeout: float, *, approve: bool
) -> Response:
    """POST /admin/v1/templates/{id}/approve, and .../reject {"reason"}."""
    template_id = request.match_info["id"]
    reason = ""
    if not approve:
        try:
            reason = _reason(request.body)
        except _Refused as refused:
            return refused.response
    shown = await within(
        on_connection(
            pool,
            lambda conn: store.decide_template(
                conn, actor, template_id, approve=approve, reason=reason
            ),
        ),
        timeout,
    )
    return json_response(200, shown)
