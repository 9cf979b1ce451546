"""The operator's status page on the admin listener (CONTRACT §8).

`GET /status` is one HTML page; its script and style sheet are served
beside it from this package's `static/` folder (no CDN: an operator's
browser may reach nothing but the router). The script asks `GET
/admin/v1/status` every second and draws what it answers: the document a
`StatusSource` builds from the process's own state (router/status.py),
never a database query.

Every route takes the operator token as a Bearer token or as the password
of HTTP Basic authentication with any user name, and a refusal challenges
for Basic so that a browser asks for it.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from smsrouter.connectors.bearer import bearer_credential, unknown_credential
from smsrouter.connectors.http_server import Request, Response
from smsrouter.connectors.problems import json_response
from smsrouter.router.auth_throttle import AuthThrottle

PAGE = "/status"
DATA = "/admin/v1/status"
REALM = "smsrouter"
# path → (file in static/, content type)
ASSETS = {
    PAGE: ("status.html", "text/html; charset=utf-8"),
    PAGE + "/app.js": ("status.js", "text/javascript; charset=utf-8"),
    PAGE + "/style.css": ("status.css", "text/css; charset=utf-8"),
}
# The page loads nothing but its own script and style and asks nothing but
# its own origin: an error text that reached the page could not run.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# Each answer is the state of the moment.
_DATA_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

StatusSource = Callable[[], Mapping[str, Any]]
Handler = Callable[[Request], Awaitable[Response]]


def asset(name: str) -> bytes:
    """A file of static/, shipped as package data."""
    return (importlib.resources.files("smsrouter.connectors") / "static" / name).read_bytes()


class StatusPage:
    """The page's routes, for the admin listener's table."""

    def __init__(
        self,
        status: StatusSource,
        token_name: Callable[[str], str | None],
        auth_throttle: AuthThrottle,
    ) -> None:
        self.status = status
        self.token_name = token_name
        self.auth_throttle = auth_throttle
        self.routes: dict[str, dict[str, Handler]] = {
            path: {"GET": self._authed(_static(asset(name), content_type))}
            for path, (name, content_type) in ASSETS.items()
        }
        self.routes[DATA] = {"GET": self._authed(self.data)}

    async def data(self, request: Request) -> Response:
        answer = json_response(200, self.status())
        answer.headers = _DATA_HEADERS
        return answer

    def _authed(self, handler: Handler) -> Handler:
        async def wrapper(request: Request) -> Response:
            refused = self._refusal(request)
            return refused if refused is not None else await handler(request)

        return wrapper

    def _refusal(self, request: Request) -> Response | None:
        token = bearer_credential(
            request, self.auth_throttle, what="operator token", ingress="admin",
            basic_realm=REALM,
        )  # fmt: skip
        if isinstance(token, Response):
            return token
        if self.token_name(token) is None:
            return unknown_credential(
                request, self.auth_throttle, what="operator token", ingress="admin",
                basic_realm=REALM,
            )  # fmt: skip
        return None


def _static(body: bytes, content_type: str) -> Handler:
    async def serve(request: Request) -> Response:
        return Response(200, body, content_type=content_type, headers=_PAGE_HEADERS)

    return serve
