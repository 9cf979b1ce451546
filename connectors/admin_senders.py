"""The operator API's sender numbers (CONTRACT §8 "Senders", §6 "Opt-out
rate"): the flagged and suspended numbers with their opt-out rates, and the
resume that lifts either state.

    GET  /admin/v1/senders?state=flagged|suspended&limit=&after=
    POST /admin/v1/senders/{number}/resume

Routed by AdminApi (its token check, its store timeout, its 404 for a
`directory.NotFound`); the rows are router/store/sender_states.py's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from smsrouter.connectors.cursors import key_cursor, key_of_cursor
from smsrouter.connectors.http_server import Request, Response
from smsrouter.connectors.problems import field_errors, json_response
from smsrouter.router.admission import FieldError
from smsrouter.router.sender_states import FLAGGED, SUSPENDED
from smsrouter.router.senders import canonical_sender
from smsrouter.router.store import sender_states
from smsrouter.router.store.directory import NotFound

Store = Callable[[Callable[[asyncpg.Connection], Awaitable[Any]]], Awaitable[Any]]

DEFAULT_PAGE = 100
MAX_PAGE = 500
_PARAMETERS = frozenset({"state", "limit", "after"})
_STATES = (FLAGGED, SUSPENDED)


class SenderRoutes:
    def __init__(self, store: Store) -> None:
        # AdminApi._store: one call on a pooled connection, within the
        # request timeout.
        self._store = store

    async def list(self, request: Request, actor: str) -> Response:
        query = request.query
        errors = [
            FieldError(name, "unknown", "not a parameter of this list")
            for name in sorted(set(query) - _PARAMETERS)
        ]
        state = query.get("state") or None
        if state is not None and state not in _STATES:
            errors.append(FieldError("state", "invalid", "flagged or suspended"))
        limit = DEFAULT_PAGE
        raw = query.get("limit")
        if raw:
            limit = int(raw) if raw.isascii() and raw.isdigit() else 0
            if not 1 <= limit <= MAX_PAGE:
                errors.append(FieldError("limit", "invalid", f"a whole number, 1 to {MAX_PAGE}"))
        after: str | None = None
        if query.get("after"):
            after = key_of_cursor(query["after"])
            if after is None:
                errors.append(FieldError("after", "invalid", "not a cursor this API gave"))
        if errors:
            return field_errors(errors)
        rows: list[dict[str, Any]] = await self._store(
            lambda conn: sender_states.list_states(conn, state=state, limit=limit + 1, after=after)
        )
        page, more = rows[:limit], len(rows) > limit
        return json_response(
            200, {"senders": page, "next": key_cursor(page[-1]["number"]) if more else None}
        )

    async def resume(self, request: Request, actor: str) -> Response:
        """Lift a flag or a suspension (404 for a number that has neither);
        every instance starts the number's window afresh on the NOTIFY."""
        try:
            number = canonical_sender(request.match_info["number"])
        except ValueError:
            raise NotFound("flagged or suspended sender") from None
        shown: dict[str, Any] = await self._store(
            lambda conn: sender_states.resume(conn, actor, number)
        )
        return json_response(200, shown)
