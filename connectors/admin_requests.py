"""The request bodies of the operator API (CONTRACT §8) as msgspec Structs.

Each Struct names the fields a body may hold and their JSON types; what a
value must be beyond its type (ranges, URLs, zones) is checked by
connectors/admin_api.py. Money fields are strings: a JSON number for money
is refused (CONTRACT §3: money is a decimal string, never rounded).

msgspec learns a Struct's fields from its annotations, which a compiled
module does not keep: this module stays interpreted in the compiled build
(setup.py), so the API module that uses it can be compiled.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import msgspec
from msgspec import UNSET, UnsetType

from smsrouter.router.admission import parse_recipient

# Fields holding money: a JSON number there is answered with its own detail.
MONEY_FIELDS = frozenset({"credit", "credit_limit", "amount"})


class AccountPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """PATCH /admin/v1/accounts/{id}: every field optional; UNSET = not sent."""

    verified: bool | UnsetType = UNSET
    locked: bool | UnsetType = UNSET
    lock_reason: str | UnsetType = UNSET
    max_tps: float | UnsetType = UNSET
    daily_alarm: int | UnsetType = UNSET
    daily_limit: int | UnsetType = UNSET
    credit_limit: str | UnsetType = UNSET
    callback_url: str | UnsetType = UNSET
    inbound_url: str | UnsetType = UNSET
    alert_url: str | UnsetType = UNSET
    allowed_ips: list[str] | UnsetType = UNSET
    stop_reply: str | UnsetType = UNSET
    start_reply: str | UnsetType = UNSET
    help_reply: str | UnsetType = UNSET
    templates_required: bool | UnsetType = UNSET
    timezone: str | UnsetType = UNSET
    price_plan: str | UnsetType = UNSET
    allowed_countries: list[str] | UnsetType = UNSET
    callback_sent: bool | UnsetType = UNSET


class AccountCreate(AccountPatch, kw_only=True):
    """POST /admin/v1/accounts: an id, and any field a PATCH may set."""

    id: str
    currency: str = "EUR"
    credit: str = "0"


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    expires_at: str | None = None


class SmppPut(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    system_id: str
    password: str
    max_binds: int
    allowed_ips: list[str] = []


class CreditAdd(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    amount: str
    reference: str


class SenderIdPut(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    countries: list[str]


class NumberPut(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    account: str
    type: str
    rate: float | None = None


# Fields of AccountPatch, in declaration order: what a PATCH may change.
PATCH_FIELDS: tuple[str, ...] = tuple(f.name for f in msgspec.structs.fields(AccountPatch))


# POST /admin/v1/accounts/{id}/opt-outs/import: a text/plain body, one E.164
# number per line, at most this many lines a request (the CLI sends a
# larger file in chunks); the invalid lines answered, at most this many.
MAX_IMPORT_LINES = 100_000
MAX_INVALID_SHOWN = 100
# The largest import body: every line a 15-digit number with spaces and CRLF.
MAX_IMPORT_BYTES = MAX_IMPORT_LINES * 32
# Most imported numbers are NANP already in E.164 form, which is their own
# canonical form (router/admission.py parse_recipient): no parse needed.
_NANP = re.compile(r"\+1[2-9][0-9]{9}")


class ImportLines(NamedTuple):
    """An import body read: the numbers to add (E.164 as the router writes
    them, the form a send is matched on), how many non-blank lines came,
    the first invalid ones as (line number, value), and how many were."""

    numbers: list[str]
    received: int
    invalid: list[tuple[int, str]]
    invalid_count: int


def import_lines(body: bytes) -> ImportLines | None:
    """The lines of an import body; None if there are more than
    MAX_IMPORT_LINES. Blank lines are skipped; an invalid line is reported,
    not fatal."""
    lines = body.decode("utf-8", errors="replace").splitlines()
    if len(lines) > MAX_IMPORT_LINES:
        return None
    numbers: list[str] = []
    invalid: list[tuple[int, str]] = []
    invalid_count = received = 0
    nanp = _NANP.fullmatch
    for n, line in enumerate(lines, 1):
        value = line.strip()
        if not value:
            continue
        received += 1
        if nanp(value):
            numbers.append(value)
            continue
        recipient = parse_recipient(value)
        if recipient is not None:
            numbers.append(recipient.e164)
            continue
        invalid_count += 1
        if len(invalid) < MAX_INVALID_SHOWN:
            invalid.append((n, value[:64]))
    return ImportLines(numbers, received, invalid, invalid_count)
