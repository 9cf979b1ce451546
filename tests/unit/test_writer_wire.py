"""The router ↔ writer process protocol: frames and what crosses in them."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router import writer_wire as wire
from router.messages import Message, Status
from router.store import (
    CarrierReceipt,
    Finished,
    InsertMessage,
    MessageEnded,
    MessageEvent,
    NewNotification,
    Notification,
    OutboxDone,
    OutboxRetry,
    PartSent,
    message_row,
)

AT = datetime(2026, 12, 2, 20, 30, 1, 123456, tzinfo=UTC)


def _message(**kw: object) -> Message:
    fields: dict[str, object] = {
        "id": uuid.UUID("0193a5c2-7a4e-7c1d-9f3b-2d4e6f8a0b1c"),
        "account_id": "acme",
        "ingress": "smpp",
        "sender": "+14155550101",
        "recipient": "+447700900123",
        "body": "Grüße € 👋",
        "encoding": "ucs2",
        "data_coding": 8,
        "parts": 2,
        "price": Decimal("0.0415"),
        "created_at": AT,
    }
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


EVERY_OPERATION = [
    InsertMessage.of([_message()]),
    InsertMessage.of(
        [
            _message(
                udh=b"\x05\x00\x03\x2a\x02\x01",
                client_ref="ref-1",
                callback_url="https://app.example/dlr",
                registered_delivery=1,
                valid_until=AT + timedelta(hours=1),
                send_at=AT + timedelta(minutes=5),
                status=Status.ACCEPTED,
            ),
            _message(id=uuid.uuid4(), price=Decimal("0")),
        ]
    ),
    PartSent(uuid.uuid4(), 1, "carrier-a", "0a1b2c", AT),
    MessageEnded(uuid.uuid4(), Status.EXPIRED, "validity", AT),
    MessageEnded(uuid.uuid4(), Status.FAILED, "0x00000045", AT, "carrier-b"),
    CarrierReceipt("carrier-a", "12345", Status.UNDELIVERED, "001", AT),
    CarrierReceipt("carrier-a", "12346", Status.DELIVERED, None, AT),
    MessageEvent(uuid.uuid4(), AT, "failover", "carrier-a → carrier-b: 0x00000058"),
    NewNotification("mo", "acme", "smpp:acme", b'{"from":"+1"}', AT, None),
    NewNotification("webhook", "acme", None, b"\x00\xff", AT, uuid.uuid4()),
    OutboxDone(7, AT),
    OutboxDone(8, AT, "gave up after 12 attempts: HTTP 500"),
    OutboxRetry(9, AT + timedelta(seconds=30), "timeout"),
]


@pytest.mark.parametrize("op", EVERY_OPERATION, ids=lambda op: type(op).__name__)
def test_every_operation_crosses_unchanged(op: object) -> None:
    (doc,) = wire.FrameReader().feed(wire.frame([wire.Request(41, wire.STATUS, op)]))  # type: ignore[arg-type]
    (request,) = wire.requests_decoder.decode(doc)
    assert (request.seq, request.writer) == (41, wire.STATUS)
    assert request.op == op
    assert type(request.op) is type(op)


def test_message_rows_keep_their_types() -> None:
    m = _message(valid_until=AT + timedelta(hours=1))
    (doc,) = wire.FrameReader().feed(
        wire.frame([wire.Request(1, wire.INGEST, InsertMessage.of([m]))])
    )
    (row,) = wire.requests_decoder.decode(doc)[0].op.rows  # type: ignore[union-attr]
    assert row == message_row(m)
    # What asyncpg's COPY codecs need: a real UUID, Decimal and aware datetimes.
    assert isinstance(row[0], uuid.UUID)
    assert isinstance(row[10], Decimal) and row[10] == Decimal("0.0415")
    assert row[15] == AT and row[15].tzinfo is not None
    assert row[14] == "queued"


def test_every_result_crosses_unchanged() -> None:
    notification = Notification(
        12, "smpp_receipt", "acme", uuid.uuid4(), "smpp:acme", b"id:1 stat:DELIVRD", 0, AT, AT
    )
    replies = wire.Replies(
        results=[
            (1, None),
            (2, True),
            (3, False),
            (4, Finished(uuid.uuid4(), Status.REJECTED)),
            (5, notification),
            (6, wire.Failed("duplicate key value violates unique constraint")),
        ],
        notifications=[notification],
        commits=[(wire.INGEST, 0.0042, 500), (wire.STATUS, 0.011, 3)],
    )
    (doc,) = wire.FrameReader().feed(wire.frame(replies))
    back = wire.replies_decoder.decode(doc)
    assert back == replies
    assert [type(r) for _, r in back.results] == [
        type(None), bool, bool, Finished, Notification, wire.Failed
    ]  # fmt: skip
    assert back.results[3][1].status is Status.REJECTED  # type: ignore[union-attr]


def test_start_answers() -> None:
    reader = wire.FrameReader()
    docs = reader.feed(wire.frame(wire.Ready(4242)) + wire.frame(wire.Failed("no database")))
    assert [wire.start_decoder.decode(d) for d in docs] == [
        wire.Ready(4242),
        wire.Failed("no database"),
    ]


def test_hello_crosses() -> None:
    hello = wire.Hello("postgresql://u:p@127.0.0.1/db", 2000, 3, 0.01, 72.0, "debug", "console")
    (doc,) = wire.FrameReader().feed(wire.frame(hello))
    assert wire.hello_decoder.decode(doc) == hello


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_frames_split_anywhere_come_out_whole(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(wire.frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = wire.FrameReader()
    docs: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        docs.extend(reader.feed(stream[start:cut]))
        start = cut
    assert [msgspec.msgpack.decode(d, type=bytes) for d in docs] == payloads
    assert reader.pending == 0


def test_an_incomplete_frame_waits() -> None:
    reader = wire.FrameReader()
    whole = wire.frame(b"abcdef")
    assert reader.feed(whole[:-1]) == []
    assert reader.pending == len(whole) - 1
    assert len(reader.feed(whole[-1:])) == 1


def test_a_length_out_of_step_is_an_error() -> None:
    with pytest.raises(wire.FrameError):
        wire.FrameReader().feed(struct.pack(">I", wire.MAX_FRAME + 1) + b"x")
