"""The optional `sent` webhook: a POST to a message's callback URL when a
carrier has taken it (status "sent"), before the one of its final status.

An account asks for it with `callback_sent = true` (config, or the operator
API's PATCH). The row goes through the outbox like a DLR callback (CONTRACT
§3): persisted in the status writer's flush that records the sent part,
retried with the same backoff, signed the same way by the webhook channel,
and deduped by receivers on id + status. It may arrive after the final
callback of a quickly delivered message: receivers order by status, not by
arrival.

Off for every account, it costs nothing: the engine asks `wanted` once per
directory change, not once per message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import msgspec
import structlog

from smsrouter.router.accounts import Account
from smsrouter.router.messages import Message, Status
from smsrouter.router.notifications import WEBHOOK
from smsrouter.router.store.group_commit import GroupCommit, StoreError
from smsrouter.router.store.operations import NewNotification

log = structlog.get_logger("notifications")

_encoder = msgspec.json.Encoder()


def rfc3339(at: datetime) -> str:
    """UTC with microseconds and a Z, as the DLR body's `done_at`."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sent_webhook_body(message: Message, carrier: str, at: datetime) -> bytes:
    """The DLR body's fields in its order (router/notifications.py
    `status_webhook_body`), status "sent", `sent_at` when the carrier took
    the first part and `done_at` null: one parser serves both callbacks."""
    return _encoder.encode(
        {
            "id": str(message.id),
            "client_ref": message.client_ref,
            "from": message.sender,
            "to": message.recipient,
            "status": Status.SENT.value,
            "error_code": None,
            "carrier": carrier,
            "parts": message.parts,
            "sent_at": rfc3339(at),
            "done_at": None,
        }
    )


def wanted(accounts: Iterable[Account]) -> bool:
    """Whether any account asks for sent callbacks."""
    return any(account.callback_sent for account in accounts)


class SentCallbacks:
    """Queues a message's `sent` webhook on the status writer when its first
    part is taken by a carrier (`DeliveryEngine.on_sent`)."""

    def __init__(
        self,
        writer: GroupCommit,
        account_of: Callable[[str], Account | None],
        retry_hours: float,
    ) -> None:
        self._writer = writer
        self._account_of = account_of
        self._retry = timedelta(hours=retry_hours)

    def message_sent(self, message: Message, carrier: str, at: datetime) -> None:
        target = message.callback_url
        if not target:
            return
        account = self._account_of(message.account_id)
        if account is None or not account.callback_sent:
            return
        notification = NewNotification(
            WEBHOOK,
            message.account_id,
            target,
            sent_webhook_body(message, carrier, at),
            at + self._retry,
            message.id,
        )
        # No wait: it joins the flush of the sent part that follows it.
        self._writer.submit_then(notification, _log_failure)


def _log_failure(_: object, error: StoreError | None) -> None:
    if error is not None:
        log.error("sent callback not stored", error=str(error))
