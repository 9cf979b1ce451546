"""`Authorization: Bearer <credential>` for both HTTP listeners: the app API
(an API key, CONTRACT §3) and the operator API (a token, §8). One shape of
refusal, one count of failed guesses per source address (the AuthThrottle
both listeners share with SMPP binds, CONTRACT §11), the credential itself
never logged. Given a `basic_realm`, the credential may also come as the
password of HTTP Basic authentication (RFC 7617), which a browser asks its
user for: the status page (CONTRACT §8)."""

from __future__ import annotations

import base64
import binascii
import math

import structlog

from smsrouter.connectors.http_server import Request, Response
from smsrouter.connectors.problems import problem
from smsrouter.router.auth_throttle import AuthThrottle

log = structlog.get_logger("http")


def bearer_credential(
    request: Request,
    throttle: AuthThrottle,
    *,
    what: str,
    ingress: str,
    basic_realm: str | None = None,
) -> str | Response:
    """The request's credential, or the answer that refuses it: 429 during a
    cool-down (a right credential too: a right guess must not be
    confirmed), 401 without one. A credential of another form is a failed
    guess; a request with none is not counted. With `basic_realm`, Basic
    credentials are read too (any user name, the credential as password)
    and a 401 challenges for Basic, so that a browser asks for them."""
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
    if basic_realm is not None and scheme.lower() == "basic":
        credential = basic_password(credential)
    elif scheme.lower() != "bearer":
        credential = ""
    if not credential:
        if auth:
            failed(request, throttle, ingress=ingress)
        challenge = "Bearer" if basic_realm is None else _basic(basic_realm)
        detail = f"send Authorization: Bearer <{what}>"
        if basic_realm is not None:
            detail += f", or HTTP Basic with the {what} as password"
        return problem(
            401, "Unauthorized", detail,
            kind="unauthorized", headers={"WWW-Authenticate": challenge}, code="unauthorized",
        )  # fmt: skip
    return credential


def basic_password(encoded: str) -> str:
    """The password of Basic credentials (RFC 7617 §2: base64 of
    user-id ":" password, UTF-8), or "" when they do not read as such."""
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return ""
    _, colon, password = decoded.partition(":")
    return password if colon else ""


def unknown_credential(
    request: Request,
    throttle: AuthThrottle,
    *,
    what: str,
    ingress: str,
    basic_realm: str | None = None,
) -> Response:
    """The 401 of a credential nobody holds, counted as a failed guess."""
    failed(request, throttle, ingress=ingress)
    # A browser asks its user again only when challenged for Basic.
    challenge = 'Bearer error="invalid_token"' if basic_realm is None else _basic(basic_realm)
    return problem(
        401, "Unauthorized", f"unknown {what}", kind="unauthorized",
        headers={"WWW-Authenticate": challenge}, code="unauthorized",
    )  # fmt: skip


def _basic(realm: str) -> str:
    """The challenge that makes a browser ask for a user name and password."""
    return f'Basic realm="{realm}"'


def failed(request: Request, throttle: AuthThrottle, *, ingress: str) -> None:
    address = request.peer or ""
    if throttle.failed(address):
        # Once per cool-down; the address, never the credential.
        log.warning(
            "authentication throttled", address=address, ingress=ingress,
            cooldown_seconds=round(throttle.retry_after(address)),
        )  # fmt: skip
