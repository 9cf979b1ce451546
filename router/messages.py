"""The message record and its life cycle, as the contract names them (§3)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

from asyncpg.pgproto.pgproto import UUID as _WireUUID


class Status(StrEnum):
    ACCEPTED = "accepted"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"


# Status(value) goes through EnumType.__call__ (~1 us); a dict look-up does
# not, and a status is read back from the database for every message.
STATUS_OF: dict[str, Status] = {s.value: s for s in Status}


FINAL_STATUSES = frozenset(
    {Status.DELIVERED, Status.UNDELIVERED, Status.EXPIRED, Status.REJECTED, Status.FAILED}
)


# Random bits for message ids, read from the kernel 1,000 ids at a time:
# one getrandom() call per id cost more than the rest of making it.
_RANDOM_BLOCK = 10 * 1000
_random = b""
_random_at = 0


def _forget_random() -> None:
    # A forked child must not hand out the ids its parent is about to.
    global _random, _random_at
    _random, _random_at = b"", 0


os.register_at_fork(after_in_child=_forget_random)


def _random_bits() -> int:
    """80 random bits (os.urandom's quality)."""
    global _random, _random_at
    if _random_at >= len(_random):
        _random, _random_at = os.urandom(_RANDOM_BLOCK), 0
    at = _random_at
    _random_at = at + 10
    return int.from_bytes(_random[at : at + 10], "big")


def new_message_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562 §5.7): time-ordered, so the primary key index of
    the messages table grows at its right edge instead of at random pages."""
    ms = time.time_ns() // 1_000_000
    rand = _random_bits()
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant 10
    # asyncpg's UUID: a uuid.UUID (equal, same hash) made in C, whose str()
    # (API answers, callbacks) is ten times faster and which asyncpg writes
    # to PostgreSQL without converting it first.
    return _WireUUID(value.to_bytes(16, "big"))


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True, eq=False)
class Message:
    """One accepted message on its way to a carrier.

    ``parts`` is how many submit_sm it takes; ``payloads`` holds each part's
    wire bytes (without UDH) once encoded, and is rebuilt from ``body`` after
    a restart.
    """

    id: uuid.UUID
    account_id: str
    ingress: str
    sender: str
    recipient: str
    body: str
    encoding: str
    data_coding: int
    parts: int
    price: Decimal
    created_at: datetime
    udh: bytes | None = None
    client_ref: str | None = None
    callback_url: str | None = None
    registered_delivery: int = 0
    valid_until: datetime | None = None
    send_at: datetime | None = None
    status: Status = Status.QUEUED
    # Destination country (ISO 3166), for per-country sender rates.
    country: str | None = None
    # "transactional" | "promotional" as the HTTP request said (CONTRACT §3,
    # §6 "Content"); None over SMPP, which has no such field.
    kind: str | None = None
    payloads: list[bytes] = field(default_factory=list)
    # Parts already accepted by a carrier (after a restart, resume after them).
    parts_sent: int = 0
    # Sent in one submit_sm with message_payload: later parts have nothing to do.
    sent_whole: bool = False
    # An ESME's part of a concatenated message: (sender, recipient, ref,
    # total). Parts of one group go to one carrier, which reassembles them.
    concat_group: tuple[str, str, int, int] | None = None
    # Set while the first part is with a carrier: later parts wait for it,
    # since it may carry the whole text (and parts then leave in order).
    first_part: asyncio.Future[None] | None = None
    # Concatenation reference shared by this message's parts (TS 23.040 §9.2.3.24.1).
    concat_ref: int = 0

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        id: uuid.UUID,
        account_id: str,
        ingress: str,
        sender: str,
        recipient: str,
        body: str,
        encoding: str,
        data_coding: int,
        parts: int,
        price: Decimal,
        created_at: datetime,
        udh: bytes | None = None,
        client_ref: str | None = None,
        callback_url: str | None = None,
        registered_delivery: int = 0,
        valid_until: datetime | None = None,
        send_at: datetime | None = None,
        status: Status = Status.QUEUED,
        country: str | None = None,
        kind: str | None = None,
        payloads: list[bytes] | None = None,
        parts_sent: int = 0,
        sent_whole: bool = False,
        concat_group: tuple[str, str, int, int] | None = None,
        first_part: asyncio.Future[None] | None = None,
        concat_ref: int = 0,
    ) -> None:
        self.id = id
        self.account_id = account_id
        self.ingress = ingress
        self.sender = sender
        self.recipient = recipient
        self.body = body
        self.encoding = encoding
        self.data_coding = data_coding
        self.parts = parts
        self.price = price
        self.created_at = created_at
        self.udh = udh
        self.client_ref = client_ref
        self.callback_url = callback_url
        self.registered_delivery = registered_delivery
        self.valid_until = valid_until
        self.send_at = send_at
        self.status = status
        self.country = country
        self.kind = kind
        self.payloads = [] if payloads is None else payloads
        self.parts_sent = parts_sent
        self.sent_whole = sent_whole
        self.concat_group = concat_group
        self.first_part = first_part
        self.concat_ref = concat_ref


# The `ingress` of a keyword's reply (messages.ingress, the label of
# smsrouter_messages_received_total): the router sent it, no client did.
KEYWORD_INGRESS = "keyword"
