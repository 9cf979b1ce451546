"""`Authorization: Bearer <credential>` for both HTTP listeners: the app API
(an API key, CONTRACT §3) and the operator API (a token, §8). One shape of
refusal, one count of failed guesses per source address (the AuthThrottle
both listeners share with SMPP binds, CONTRACT §11), the credential itself
never logged."""

from __future__ import annotations

import math

import structlog

from smsrouter.connectors.http_server import Request, Response
from smsrouter.connectors.problems import problem
from smsrouter.router.auth_throttle import AuthThrottle

log = structlog.get_logger("http")


def bearer_credential(
    request: Request, throttle: AuthThrottle, *, what: str, ingress: str
) -> str | Response:
    """The request's credential, or the answer that refuses it: 429 during a
    cool-down (a right credential too: a right guess must not be
    confirmed), 401 without one. A credential of another form is a failed
    guess; a request with none is not counted."""
    address = request.peer or ""
    wait = throttle.retry_after(address)
    if wait > 0:
        retry = max(1, math.ceil(wait))
        return problem(
            429, "Too many failed authentications",
            f"too many failed authentications from {address}; retry in {retry} s",
            kind="auth-throttled", code="auth_throttled",
            headers={"Retry-After": str(retry)},
        )  # fmt: skip
    auth = request.header("authorization")
    scheme, _, credential = (auth or "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        if auth:
            failed(request, throttle, ingress=ingress)
        return problem(
            401, "Unauthorized", f"send Authorization: Bearer <{what}>",
            kind="unauthorized", headers={"WWW-Authenticate": "Bearer"}, code="unauthorized",
        )  # fmt: skip
    return credential


def unknown_credential(
    request: Request, throttle: AuthThrottle, *, what: str, ingress: str
) -> Response:
    """The 401 of a credential nobody holds, counted as a failed guess."""
    failed(request, throttle, ingress=ingress)
    return problem(
        401, "Unauthorized", f"unknown {what}", kind="unauthorized",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}, code="unauthorized",
    )  # fmt: skip


def failed(request: Request, throttle: AuthThrottle, *, ingress: str) -> None:
    address = request.peer or ""
    if throttle.failed(address):
        # Once per cool-down; the address, never the credential.
        log.warning(
            "authentication throttled", address=address, ingress=ingress,
            cooldown_seconds=round(throttle.retry_after(address)),
        )  # fmt: skip
