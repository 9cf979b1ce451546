"""Outbox payloads that the router decodes again: JSON written with a
message's final status or an MO, read back when the notification goes out.

msgspec learns a Struct's fields from its annotations, which a compiled
module does not keep: this module stays interpreted in the compiled build
(setup.py), so the modules that use it can be compiled.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class InboundMessage(msgspec.Struct, frozen=True):
    """An MO as the account receives it (webhook body and receipt source)."""

    type: str  # "mo"
    carrier: str
    # "from" in the webhook body: msgspec renames the field on the wire.
    sender: str = msgspec.field(name="from")
    to: str = ""
    text: str = ""
    parts: int = 1
    complete: bool = True
    received_at: datetime | None = None
    # CONTRACT §6 "Opt-out": "opt_out" | "opt_in" | "help" (router/keywords.py),
    # null for any other text. Rows stored before it existed decode as null.
    keyword: str | None = None


class SmppReceipt(msgspec.Struct, frozen=True):
    """What an ESME's deliver_sm receipt is built from (outbox payload)."""

    id: str
    sender: str
    recipient: str
    status: str
    error_code: str | None
    submit_date: datetime
    done_date: datetime
    text: str
