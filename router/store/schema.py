"""What the store's SQL spells from the router's own definitions, each
written once: the stored fields of a message, and the statuses a message
ends in (`messages.FINAL_STATUSES`) as SQL lists.
"""

from __future__ import annotations

from collections.abc import Iterable

from smsrouter.router.messages import FINAL_STATUSES, Status

# The stored Message fields, in the order `writes.insert_messages` gives them.
MESSAGE_COLUMNS: tuple[str, ...] = (
    "id",
    "account_id",
    "ingress",
    "sender",
    "recipient",
    "body",
    "encoding",
    "data_coding",
    "udh",
    "parts",
    "price",
    "client_ref",
    "callback_url",
    "registered_delivery",
    "status",
    "created_at",
    "valid_until",
    "send_at",
    "kind",
)

# What the writer copies in: the columns above, and an Idempotency-Key with
# its request's hash and answer on the first message of a request that
# sent one (migration 0005: the insert's trigger takes the key).
INSERTED_COLUMNS: tuple[str, ...] = (
    *MESSAGE_COLUMNS,
    "idempotency_key",
    "request_hash",
    "answer_status",
    "answer_body",
)


def _sql_list(statuses: Iterable[Status]) -> str:
    return "(" + ", ".join(f"'{s}'" for s in statuses) + ")"


# `m.status NOT IN FINAL_SQL`: the final statuses as a SQL list, in Status
# order, spelled into the statements at import.
FINAL_SQL = _sql_list(s for s in Status if s in FINAL_STATUSES)
# The statuses of a message not yet ended.
OPEN_SQL = _sql_list(s for s in Status if s not in FINAL_STATUSES)


# PostgreSQL's text cannot hold U+0000, which an ESME's Latin-1, UCS-2 or
# 8-bit binary short_message may carry (binary is kept as Latin-1 of its
# octets, so a 0x00 octet is U+0000). It is stored as U+FFFF, a Unicode
# noncharacter that no interchanged text carries, and turned back on reading.
STORED_NUL = "\uffff"


def storable_text(text: str) -> str:
    return text.replace("\x00", STORED_NUL) if "\x00" in text else text


def stored_text(text: str) -> str:
    return text.replace(STORED_NUL, "\x00") if STORED_NUL in text else text
