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

import msgspec
from msgspec import UNSET, UnsetType

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
