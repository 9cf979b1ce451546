"""RFC 9457 problems and JSON answers, shared by the app API (CONTRACT §3)
and the operator API (CONTRACT §8): one shape of error, one `code` list."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import msgspec

from smsrouter.connectors.http_server import Response, reason
from smsrouter.router.admission import FieldError

PROBLEM_BASE = "https://smsrouter.dev/problems/"
# Retry-After of a 503 for a database that is down or did not answer in time.
RETRY_AFTER_STORE = 1

# What a read meets when the database is away or refusing: 503, not 500
# (CONTRACT §11: while PostgreSQL is unreachable, ingress answers 503).
STORE_DOWN: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)


_json = msgspec.json.Encoder(decimal_format="string")


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat().replace("+00:00", "Z")


def problem(
    status: int, title: str, detail: str, *, kind: str, headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:  # fmt: skip
    """An RFC 9457 problem. Its `code` (CONTRACT §3) is the kind in snake
    case unless `code=` names another."""
    body = {
        "type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail,
        "code": kind.replace("-", "_"),
    }  # fmt: skip
    body.update(extra)
    return Response(
        status, _json.encode(body), content_type="application/problem+json", headers=headers
    )


def json_response(status: int, body: Any) -> Response:
    return Response(status, _json.encode(body))


def field_errors(errors: list[FieldError]) -> Response:
    return problem(
        422,
        "Invalid request",
        "; ".join(f"{e.field}: {e.detail}" for e in errors),
        kind="invalid-request",
        errors=[{"field": e.field, "code": e.code, "detail": e.detail} for e in errors],
    )


# The `code` (CONTRACT §3) of each error the HTTP server answers itself. Its
# only 503 refuses a connection: over the per-address cap, or at the
# file-descriptor limit (CONTRACT §11).
SERVER_CODES = {
    400: "malformed_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_content_encoding",
    417: "expectation_failed",
    431: "header_too_large",
    503: "too_many_connections",
    505: "http_version_not_supported",
}


def server_error(status: int, detail: str, headers: Mapping[str, str] | None) -> Response:
    """Errors the HTTP server answers itself (404, 405, 413, ...), as problems too."""
    if status == 500:
        return problem(
            500, "Internal error", "the request could not be completed", kind="internal",
            code="internal",
        )  # fmt: skip
    return problem(
        status,
        reason(status),
        detail,
        kind=f"http-{status}",
        headers=dict(headers) if headers else None,
        code=SERVER_CODES.get(status, f"http_{status}"),
    )


def store_unavailable() -> Response:
    return problem(
        503, "Service unavailable", "the message store is unavailable; retry later",
        kind="store-unavailable", code="store_unavailable",
        headers={"Retry-After": str(RETRY_AFTER_STORE)},
    )  # fmt: skip


def store_timeout(timeout: float) -> Response:
    return problem(
        503, "Service unavailable",
        f"the message store did not answer within {timeout:g} s; retry later",
        kind="store-timeout", code="store_timeout",
        headers={"Retry-After": str(RETRY_AFTER_STORE)},
    )  # fmt: skip


def rfc3339(value: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None and in_utc_range(at) else None


def in_utc_range(at: datetime) -> bool:
    """Whether the time exists in UTC, as the database stores it:
    0001-01-01T00:00:00+14:00 would be in year 0, 9999-12-31T23:59-14:00
    in year 10000."""
    try:
        at.astimezone(UTC)
    except OverflowError:
        return False
    return True


# JSON spells U+0000 only so; PostgreSQL text cannot hold it.
ESCAPED_NUL = b"\\u0000"
NUL_DETAIL = "must not contain the NUL character (U+0000)"


def holds_nul(value: Any) -> bool:
    """Whether a decoded JSON value holds U+0000 in a string or a key."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    return False


def nul_errors(raw: bytes) -> list[FieldError]:
    """A 422's errors for each field of a JSON object body holding U+0000
    (a value PostgreSQL cannot store: refused here, not failed at the
    commit, where a group commit would fail the requests batched with it).
    A scan of the raw bytes first: nearly every body has none."""
    if ESCAPED_NUL not in raw:
        return []
    doc = msgspec.json.decode(raw)
    if not isinstance(doc, dict):
        return []
    return [FieldError(name, "invalid", NUL_DETAIL) for name, v in doc.items() if holds_nul(v)]


def field_error_of(exc: msgspec.ValidationError) -> FieldError:
    """msgspec's "Expected `str`, got `int` - at `$.from`" → FieldError('from', …)."""
    text = str(exc)
    message, _, where = text.partition(" - at `$.")
    field = where.rstrip("`").split("[")[0].split(".")[0] if where else ""
    if not field and text.startswith("Object missing required field"):
        field = text.split("`")[1]
        return FieldError(field, "required", f"{field} is required")
    return FieldError(field or "(body)", "invalid", message)


def page_limit(raw: str | None, default: int, most: int) -> tuple[int, FieldError | None]:
    """A list's `limit` parameter (CONTRACT §3, §8): a whole number, 1 to `most`."""
    if not raw:
        return default, None
    limit = int(raw) if raw.isdigit() else 0
    if not 1 <= limit <= most:
        return default, FieldError("limit", "invalid", f"a whole number, 1 to {most}")
    return limit, None


T = TypeVar("T")


def list_query(
    query: Mapping[str, str],
    allowed: Collection[str],
    of_cursor: Callable[[str], T | None],
    default: int,
    most: int,
) -> tuple[int, T | None, list[FieldError]]:
    """A list's `limit` and `after` (CONTRACT §3, §8): the page size, the
    position the cursor names, and a FieldError for each parameter that is
    unknown or bad (the caller may add its own filters' before answering)."""
    errors = [
        FieldError(name, "unknown", "not a parameter of this list")
        for name in sorted(set(query) - set(allowed))
    ]
    limit, limit_error = page_limit(query.get("limit"), default, most)
    if limit_error is not None:
        errors.append(limit_error)
    position = None
    if query.get("after"):
        position = of_cursor(query["after"])
        if position is None:
            errors.append(FieldError("after", "invalid", "not a cursor this API gave"))
    return limit, position, errors


async def store_read(read: Awaitable[T], timeout: float) -> T | Response:
    """A read of the database for a request, at most `timeout` seconds
    (CONTRACT §11 "A hung database"): its result, or the 503 that answers a
    database that is away or too slow.

    The read is not awaited once given up: a cancelled asyncpg query gives
    its connection back to the pool only when the server has answered the
    cancel, which a hung server never does before `command_timeout` (60 s),
    and the request must not wait for that. It ends on its own (see
    `_abandon`)."""
    try:
        return await within(read, timeout)
    except TimeoutError:
        # Before STORE_DOWN: TimeoutError is an OSError.
        return store_timeout(timeout)
    except STORE_DOWN:
        return store_unavailable()


async def within(work: Awaitable[T], timeout: float) -> T:
    """`work`'s result, or TimeoutError once `timeout` seconds pass; then
    `work` is cancelled and left to end on its own (store_read says why)."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except asyncio.CancelledError:
        _abandon(task)  # the request itself was cancelled (its client left)
        raise
    if not done:
        _abandon(task)
        raise TimeoutError
    return task.result()


async def on_connection(
    pool: asyncpg.Pool, work: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    """`work` on a pooled connection (for `within`: the wait for the
    connection counts too)."""
    async with pool.acquire() as conn:
        return await work(conn)


# Reads given up at their deadline, until they end: kept so that none is
# collected while it still runs, their outcome retrieved when they end.
ABANDONED_READS: set[asyncio.Future[Any]] = set()


def _abandon(task: asyncio.Future[Any]) -> None:
    task.cancel()
    ABANDONED_READS.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Future[Any]) -> None:
    ABANDONED_READS.discard(task)
    if not task.cancelled():
        task.exception()  # a late failure of a read no one waits for
