"""The operator API's webhook secret rotation (CONTRACT §3, §8):

    GET    /admin/v1/accounts/{id}/webhook-secret           fingerprints
    PUT    /admin/v1/accounts/{id}/webhook-secret           {"next": "..."}
    POST   /admin/v1/accounts/{id}/webhook-secret/promote
    DELETE /admin/v1/accounts/{id}/webhook-secret/next

Answers hold `{"current", "next", "managed_by_config"}` with fingerprints
(router/store/webhook_secrets.py), never a secret: the operator who sets
the next secret has it already, and no detail of a refusal echoes it.
Routed by AdminApi (its token check, its store timeout, its 404 and 409
problems); the rows are router/store/webhook_secrets.py's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec

from smsrouter.connectors.http_server import Request, Response
from smsrouter.connectors.problems import field_errors, json_response, problem
from smsrouter.router.admission import FieldError
from smsrouter.router.store import webhook_secrets

Store = Callable[[Callable[[asyncpg.Connection], Awaitable[Any]]], Awaitable[Any]]

# A webhook secret the API takes: long enough to be a key, short enough for
# a header value, with nothing a copy and paste could bend (spaces, line
# ends). The Standard Webhooks specification suggests 24 to 64 bytes.
MIN_SECRET = 16
MAX_SECRET = 1024
_SECRET_RULE = f"{MIN_SECRET} to {MAX_SECRET} printable characters without spaces"


def secret_errors(secret: object) -> list[FieldError]:
    """What is wrong with a `next` value (never quoting it)."""
    if not isinstance(secret, str):
        return [FieldError("next", "invalid", "a string")]
    if not MIN_SECRET <= len(secret) <= MAX_SECRET or not all(
        ch.isprintable() and not ch.isspace() for ch in secret
    ):
        return [FieldError("next", "invalid", _SECRET_RULE)]
    return []


def _next_of(raw: bytes) -> str | Response:
    """The body's `next`, or the 400/422 answer."""
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        # msgspec's message may quote the body, the secret in it: not shown.
        return problem(400, "Malformed JSON", "the body is not JSON", kind="malformed-json")
    if not isinstance(doc, dict):
        return problem(
            400, "Malformed JSON", "the body must be a JSON object", kind="malformed-json"
        )
    errors = [
        FieldError(name, "unknown_field", "not a field of this request")
        for name in doc
        if name != "next"
    ]
    if "next" not in doc:
        errors.append(FieldError("next", "required", "next is required"))
    else:
        errors.extend(secret_errors(doc["next"]))
    if errors:
        return field_errors(errors)
    secret: str = doc["next"]
    return secret


class WebhookSecretRoutes:
    def __init__(self, store: Store) -> None:
        # AdminApi._store: one call on a pooled connection, within the
        # request timeout.
        self._store = store

    async def show(self, request: Request, actor: str) -> Response:
        account_id = request.match_info["id"]
        state: dict[str, Any] = await self._store(
            lambda conn: webhook_secrets.get_state(conn, account_id)
        )
        return json_response(200, state)

    async def put_next(self, request: Request, actor: str) -> Response:
        account_id = request.match_info["id"]
        secret = _next_of(request.body)
        if isinstance(secret, Response):
            return secret
        state: dict[str, Any] = await self._store(
            lambda conn: webhook_secrets.put_next(conn, actor, account_id, secret)
        )
        return json_response(200, state)

    async def promote(self, request: Request, actor: str) -> Response:
        account_id = request.match_info["id"]
        state: dict[str, Any] = await self._store(
            lambda conn: webhook_secrets.promote(conn, actor, account_id)
        )
        return json_response(200, state)

    async def clear_next(self, request: Request, actor: str) -> Response:
        account_id = request.match_info["id"]
        await self._store(lambda conn: webhook_secrets.clear_next(conn, actor, account_id))
        return Response(204)
