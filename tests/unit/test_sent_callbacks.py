"""The optional `sent` webhook's body (router/sent_callbacks.py): the DLR
body's fields in its order, status "sent", and when the carrier took it."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from smsrouter.router.accounts import AccountDirectory
from smsrouter.router.config import AccountConfig
from smsrouter.router.messages import Message
from smsrouter.router.sent_callbacks import sent_webhook_body, wanted
from smsrouter.router.store.notices import status_webhook_body

MESSAGE_ID = uuid.UUID("0190c0de-0000-7000-8000-000000000001")


def _message(client_ref: str | None = "order-7") -> Message:
    return Message(
        id=MESSAGE_ID,
        account_id="acme",
        ingress="http",
        sender="12345",
        recipient="+14155550123",
        body="hello",
        encoding="gsm7",
        data_coding=0,
        parts=2,
        price=Decimal("0.02"),
        created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        client_ref=client_ref,
        callback_url="https://app.example/dlr",
    )


def test_the_body_has_the_dlr_fields_in_their_order_and_sent_at() -> None:
    dlr_keys = re.findall(r'"(\w+)":%s', status_webhook_body())
    at = datetime(2025, 1, 2, 5, 6, 7, 891011, tzinfo=timezone(timedelta(hours=2)))
    body = json.loads(sent_webhook_body(_message(), "sim-a", at))
    assert list(body) == [*dlr_keys[:-1], "sent_at", dlr_keys[-1]]
    assert body == {
        "id": str(MESSAGE_ID),
        "client_ref": "order-7",
        "from": "12345",
        "to": "+14155550123",
        "status": "sent",
        "error_code": None,
        "carrier": "sim-a",
        "parts": 2,
        "sent_at": "2025-01-02T03:06:07.891011Z",  # in UTC, as done_at is
        "done_at": None,
    }


def test_a_message_without_client_ref_has_null() -> None:
    body = json.loads(sent_webhook_body(_message(None), "sim-a", datetime.now(UTC)))
    assert body["client_ref"] is None


def test_wanted_while_any_account_asks() -> None:
    off = AccountDirectory([AccountConfig(id="a"), AccountConfig(id="b")])
    on = AccountDirectory([AccountConfig(id="a"), AccountConfig(id="b", callback_sent=True)])
    assert not wanted(off)
    assert wanted(on)
    assert on.get("b").callback_sent and not on.get("a").callback_sent  # type: ignore[union-attr]
