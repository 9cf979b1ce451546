"""The body of POST /v1/messages (CONTRACT §3) as msgspec decodes it.

msgspec learns a Struct's fields from its annotations, which a compiled
module does not keep: this module stays interpreted in the compiled build
(setup.py), so the API module that uses it can be compiled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class SendRequest(msgspec.Struct, rename={"from_": "from"}):
    from_: str
    to: str | list[str]
    # Exactly one of text and template (CONTRACT §6 "Templates"); the
    # params' values are checked when the template is rendered
    # (connectors/template_api.py), so that each bad one is named.
    text: str | None = None
    callback_url: str | None = None
    client_ref: str | None = None
    validity: int | None = None
    kind: str | None = None
    send_at: datetime | None = None
    template: str | None = None
    params: dict[str, Any] | None = None


class _KnownFieldsOnly(SendRequest, forbid_unknown_fields=True):
    """The fast path of decoding a send: straight from JSON into the Struct.

    Unknown fields are refused here only so that the slow path, the one that
    decides between 400 and 422, sees them: a Struct decoder skips unknown
    fields without checking their values (invalid UTF-8, numbers out of
    range), which the two-step decode refuses. With every field known, both
    ways accept exactly the same bodies."""


decode_send = msgspec.json.Decoder(_KnownFieldsOnly).decode
