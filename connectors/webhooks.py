"""Signed HTTP POSTs of delivery receipts to apps (CONTRACT §3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

from smsrouter.connectors.http_client import HttpClient, HttpClientError, TargetRefused
from smsrouter.router.accounts import Account
from smsrouter.router.netaddr import is_private_address
from smsrouter.router.notifications import DeliveryFailed, DeliveryRefused
from smsrouter.router.store.operations import Notification

__all__ = [
    "MAX_RESPONSE_BYTES",
    "SIGNATURE_HEADER",
    "WEBHOOK_ID_HEADER",
    "WEBHOOK_SIGNATURE_HEADER",
    "WEBHOOK_TIMESTAMP_HEADER",
    "WebhookChannel",
    "is_private_address",
    "retry_after_seconds",
    "sign",
    "sign_standard",
    "signature_headers",
]

SIGNATURE_HEADER = "X-Smsrouter-Signature"
# The Standard Webhooks headers (CONTRACT §3), beside ours.
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"

# An app's answer is not ours to keep: only this much of its body is read.
MAX_RESPONSE_BYTES = 64 * 1024

_JSON = ("Content-Type", "application/json")


# HMACs keyed once per secret and copied for each body: keying one (OpenSSL
# looks the digest up and pads the key) cost more than hashing a receipt.
# Holds the secrets of the accounts configured; emptied past this many, as
# reloads may have dropped some.
_KEYED: dict[str, hmac.HMAC] = {}
_MAX_KEYED = 1024


def _keyed(secret: str) -> hmac.HMAC:
    keyed = _KEYED.get(secret)
    if keyed is None:
        if len(_KEYED) >= _MAX_KEYED:
            _KEYED.clear()
        keyed = _KEYED[secret] = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    return keyed.copy()


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the body>`, the header value apps verify."""
    mac = _keyed(secret)
    mac.update(body)
    return "sha256=" + mac.hexdigest()


def sign_standard(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the
    secret's UTF-8 bytes (CONTRACT §3, the Standard Webhooks signature)."""
    mac = _keyed(secret)
    mac.update(b"%s.%d." % (webhook_id.encode(), timestamp))
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signature_headers(
    secrets: tuple[str, ...], webhook_id: str, timestamp: int, body: bytes
) -> list[tuple[str, str]]:
    """The signing headers of one attempt. `X-Smsrouter-Signature` is the
    current secret's; `webhook-signature` holds one signature per secret,
    space-separated, so a receiver holding either secret of a rotation
    verifies it (CONTRACT §3). No secret: only the id and timestamp."""
    headers = [
        (WEBHOOK_ID_HEADER, webhook_id),
        (WEBHOOK_TIMESTAMP_HEADER, str(timestamp)),
    ]
    if secrets:
        headers.append((SIGNATURE_HEADER, sign(secrets[0], body)))
        headers.append(
            (
                WEBHOOK_SIGNATURE_HEADER,
                " ".join([sign_standard(s, webhook_id, timestamp, body) for s in secrets]),
            )
        )
    return headers


class WebhookChannel:
    """Delivers webhook rows of the outbox; any 2xx is success."""

    def __init__(
        self,
        account_of: Callable[[str], Account | None],
        *,
        timeout: float,
        deny_private_networks: bool = False,
    ) -> None:
        self._account_of = account_of
        self._deny_private = deny_private_networks
        self._timeout = timeout
        self._client: HttpClient | None = None

    async def start(self) -> None:
        # Keep-alive pool shared by all callbacks; a few hundred sockets at
        # most so a slow receiver cannot exhaust file descriptors. With
        # deny_private_networks the client refuses every spelling of a
        # private address (router.netaddr) and names that resolve only
        # inside the network.
        self._client = HttpClient(
            timeout=self._timeout,
            max_connections=256,
            max_per_origin=64,
            user_agent="smsrouter",
            max_response_bytes=MAX_RESPONSE_BYTES,
            deny_private_networks=self._deny_private,
            # Egress through HTTPS_PROXY / HTTP_PROXY when set (NO_PROXY
            # honoured): many networks reach the internet only that way.
            trust_env=True,
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def deliver(self, n: Notification) -> None:
        assert self._client is not None and n.target
        account = self._account_of(n.account_id)
        secrets = account.webhook_secrets if account is not None else ()
        # The outbox row's id: every retry of a notification carries the
        # same webhook-id, so receivers dedupe on it; the timestamp is the
        # attempt's, so a replayed old request can be refused (CONTRACT §3).
        headers = [_JSON]
        headers.extend(signature_headers(secrets, str(n.id), int(time.time()), n.payload))
        try:
            answer = await self._client.post_answer(n.target, n.payload, headers)
        except TargetRefused as refused:
            # A malformed URL or a private address (deny_private_networks)
            # stays so: the row is given up now, not retried for
            # retry_hours (CONTRACT §11 "Callback addresses").
            raise DeliveryRefused(str(refused)) from None
        except HttpClientError as exc:
            raise DeliveryFailed(str(exc)) from None
        # Redirects are not followed: a client following a 301/302/303 turns
        # the POST into a GET without the body, whose 2xx would count as
        # delivered, and a redirect could carry the signed receipt to another
        # host. A 3xx is a failed attempt (Chargebee's webhooks, for one,
        # refuse redirects the same way).
        status = answer.status
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status}", _asked_pause(status, answer.retry_after))


# The statuses whose Retry-After says when the receiver can take the
# callback again (RFC 9110 §10.2.3; RFC 6585 §4 for 429).
_PAUSE_STATUSES = frozenset({429, 503})


def _asked_pause(status: int, retry_after: str | None) -> float | None:
    if status not in _PAUSE_STATUSES or retry_after is None:
        return None
    return retry_after_seconds(retry_after, time.time())


def retry_after_seconds(value: str, now: float) -> float | None:
    """Seconds from `now` (Unix time) that a Retry-After value asks for:
    delay-seconds or an HTTP-date (RFC 9110 §10.2.3); None if it is neither.
    A date in the past asks for no wait."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT
    return max(0.0, when.timestamp() - now)
