"""The account directory in PostgreSQL (CONTRACT §6 "Account state", §8).

Accounts, API keys, SMPP credentials, numbers and sender IDs are rows
(migration 0004). Three kinds of callers:

- every router process reads a consistent snapshot (`load`) into its cache
  and reloads it when NOTIFY `smsrouter_directory` says something changed
  (CONTRACT §8: "a change takes effect on every instance within 1 s");
- the config file is written into the rows at start and on SIGHUP
  (`sync_config`); what it sets is the file's (`managed_fields`,
  `managed_by_config`), which the operator API refuses to change;
- the operator API changes the rest, each change in one transaction with
  its audit row (CONTRACT §8 "Every change is written to an audit log")
  and its NOTIFY.

Secrets never leave through here except once, to the caller that made
them: an audit row or a listing holds no webhook secret, API key or SMPP
password (nor their digests or hashes).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from smsrouter.router.config import AccountConfig, NumberConfig
from smsrouter.router.passwords import hash_password, verify_password
from smsrouter.router.store import ledger
from smsrouter.router.store.ledger import LedgerEntry
from smsrouter.router.store.numeric import plain

NOTIFY_CHANNEL = "smsrouter_directory"
#: The audit log's actor for changes made by the config file.
CONFIG_ACTOR = "config"
#: Why `sync_config` locked an account that left the file.
REMOVED_FROM_CONFIG = "removed from the config file"

PATCHABLE = frozenset(
    {
        "verified",
        "locked",
        "lock_reason",
        "max_tps",
        "daily_alarm",
        "daily_limit",
        "credit_limit",
        "callback_url",
        "inbound_url",
        "alert_url",
        "allowed_ips",
        "stop_reply",
        "start_reply",
        "help_reply",
        "templates_required",
        "timezone",
        "price_plan",
        "allowed_countries",
        "callback_sent",
    }
)
# Account columns an [[accounts]] key of the same name sets (1:1). `credit`
# is not among them: once the row exists the balance is the ledger's
# (CONTRACT §6 "Credit").
_CONFIG_COLUMNS = PATCHABLE | {"currency", "webhook_secret", "webhook_secret_next"}
# Keys of an [[accounts]] table that are not columns but still the file's:
# the operator API must not change the file's credentials either.
_CONFIG_NON_COLUMNS = frozenset({"smpp", "api_keys", "sender_ids"})
# What a column's value is in the database driver's terms (a JSON 5 for
# max_tps is an int; float8 wants a float).
_COERCE: dict[str, Any] = {
    "max_tps": float,
    "daily_alarm": int,
    "daily_limit": int,
    "credit_limit": Decimal,
    "allowed_ips": list,
    "allowed_countries": list,
}
# One config sync at a time across instances (CONTRACT §9): two SIGHUPs at
# once would otherwise race on the same rows.
_SYNC_LOCK_KEY = 0x736D_7364_6972  # "smsdir"


class NotFound(Exception):
    """No such `what` ("account", "api_key", "number", "sender_id")."""

    def __init__(self, what: str) -> None:
        super().__init__(f"no such {what}")
        self.what = what


class Conflict(Exception):
    """A change the directory's state refuses (HTTP 409 with `code`)."""

    def __init__(self, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field


# -- the snapshot of the per-process cache -------------------------------------


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: str
    verified: bool
    locked: bool
    lock_reason: str
    currency: str
    callback_url: str
    webhook_secret: str
    inbound_url: str
    alert_url: str
    allowed_ips: tuple[str, ...]
    max_tps: float
    daily_alarm: int
    daily_limit: int
    credit_limit: Decimal
    price_plan: str
    timezone: str
    stop_reply: str
    start_reply: str
    help_reply: str
    templates_required: bool
    allowed_countries: tuple[str, ...]
    managed_fields: frozenset[str] | None
    # CONTRACT §3: the second secret of a rotation ("" = none).
    webhook_secret_next: str = ""
    # A webhook when a message is sent as well (migration 0013).
    callback_sent: bool = False

    def __repr__(self) -> str:
        # The dataclass repr would print webhook_secret into any log line.
        return f"AccountRow(id={self.id!r}, verified={self.verified}, locked={self.locked})"


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    key_id: str
    account_id: str
    digest: bytes
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class SmppRow:
    account_id: str
    system_id: str
    password_hash: str
    max_binds: int
    allowed_ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NumberRow:
    number: str
    account_id: str
    type: str
    rate: float | None


@dataclass(frozen=True, slots=True)
class SenderIdRow:
    account_id: str
    sender_id: str
    countries: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TemplateRow:
    """An approved template (CONTRACT §6 "Templates", migration 0008)."""

    id: str
    account_id: str
    name: str
    text: str
    kind: str | None


@dataclass(frozen=True, slots=True)
class Directory:
    accounts: tuple[AccountRow, ...]
    api_keys: tuple[ApiKeyRow, ...]  # not revoked
    smpp: tuple[SmppRow, ...]
    numbers: tuple[NumberRow, ...]
    sender_ids: tuple[SenderIdRow, ...]
    templates: tuple[TemplateRow, ...] = ()  # approved ones only


def api_key_digest(key: str) -> bytes:
    """SHA-256 of an API key: keys are random and long, so a fast digest
    keeps them unreadable at rest (migration 0004), and the cache looks a
    request's key up by the same digest."""
    return hashlib.sha256(key.encode()).digest()


def _account_row(r: asyncpg.Record) -> AccountRow:
    managed = r["managed_fields"]
    return AccountRow(
        id=r["id"],
        verified=r["verified"],
        locked=r["locked"],
        lock_reason=r["lock_reason"],
        currency=r["currency"],
        callback_url=r["callback_url"],
        webhook_secret=r["webhook_secret"],
        webhook_secret_next=r["webhook_secret_next"],
        inbound_url=r["inbound_url"],
        alert_url=r["alert_url"],
        allowed_ips=tuple(r["allowed_ips"]),
        max_tps=r["max_tps"],
        daily_alarm=r["daily_alarm"],
        daily_limit=r["daily_limit"],
        credit_limit=plain(r["credit_limit"]),
        price_plan=r["price_plan"],
        timezone=r["timezone"],
        stop_reply=r["stop_reply"],
        start_reply=r["start_reply"],
        help_reply=r["help_reply"],
        templates_required=r["templates_required"],
        allowed_countries=tuple(r["allowed_countries"]),
        managed_fields=None if managed is None else frozenset(managed),
        callback_sent=r["callback_sent"],
    )


async def load(conn: asyncpg.Connection) -> Directory:
    """Every row the cache holds, read in one REPEATABLE READ transaction:
    no key of an account the snapshot lacks, whatever commits meanwhile."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        accounts = await conn.fetch("SELECT * FROM accounts ORDER BY id")
        keys = await conn.fetch(
            "SELECT key_id, account_id, digest, expires_at FROM api_keys"
            " WHERE revoked_at IS NULL ORDER BY key_id"
        )
        smpp = await conn.fetch(
            "SELECT account_id, system_id, password_hash, max_binds, allowed_ips"
            " FROM smpp_credentials ORDER BY account_id"
        )
        numbers = await conn.fetch(
            "SELECT number, account_id, type, rate FROM numbers ORDER BY number"
        )
        sender_ids = await conn.fetch(
            "SELECT account_id, sender_id, countries FROM sender_ids ORDER BY account_id, sender_id"
        )
        templates = await conn.fetch(
            "SELECT id, account_id, name, text, kind FROM templates WHERE status = 'approved'"
            " ORDER BY account_id, created_at, id"
        )
    return Directory(
        accounts=tuple(_account_row(r) for r in accounts),
        api_keys=tuple(ApiKeyRow(r[0], r[1], bytes(r[2]), r[3]) for r in keys),
        smpp=tuple(SmppRow(r[0], r[1], r[2], r[3], tuple(r[4])) for r in smpp),
        numbers=tuple(NumberRow(*r) for r in numbers),
        sender_ids=tuple(SenderIdRow(r[0], r[1], tuple(r[2])) for r in sender_ids),
        templates=tuple(TemplateRow(*r) for r in templates),
    )


# -- public JSON, audit and notify ---------------------------------------------

_ACCOUNT_SELECT = (
    "SELECT a.id, a.currency, a.credit, a.credit_limit, a.verified, a.locked, a.lock_reason,"
    " a.callback_url, a.inbound_url, a.alert_url, a.allowed_ips, a.max_tps, a.daily_alarm,"
    " a.daily_limit, a.price_plan, a.timezone, a.stop_reply, a.start_reply, a.help_reply,"
    " a.templates_required, a.allowed_countries, a.callback_sent, a.managed_fields,"
    " a.created_at,"
    " s.system_id AS smpp_system_id, s.max_binds AS smpp_max_binds,"
    " s.allowed_ips AS smpp_allowed_ips"
    " FROM accounts a LEFT JOIN smpp_credentials s ON s.account_id = a.id"
)
_ACCOUNT_KEYS = (
    "id",
    "currency",
    "credit",
    "credit_limit",
    "verified",
    "locked",
    "lock_reason",
    "callback_url",
    "inbound_url",
    "alert_url",
    "allowed_ips",
    "max_tps",
    "daily_alarm",
    "daily_limit",
    "price_plan",
    "timezone",
    "stop_reply",
    "start_reply",
    "help_reply",
    "templates_required",
    "allowed_countries",
    "callback_sent",
    "managed_fields",
)


def _account_json(r: asyncpg.Record) -> dict[str, Any]:
    shown: dict[str, Any] = {k: r[k] for k in _ACCOUNT_KEYS}
    shown["credit"], shown["credit_limit"] = plain(r["credit"]), plain(r["credit_limit"])
    for k in ("allowed_ips", "allowed_countries"):
        shown[k] = list(shown[k])
    if shown["managed_fields"] is not None:
        shown["managed_fields"] = sorted(shown["managed_fields"])
    shown["smpp"] = (
        None
        if r["smpp_system_id"] is None
        else {
            "system_id": r["smpp_system_id"],
            "max_binds": r["smpp_max_binds"],
            "allowed_ips": list(r["smpp_allowed_ips"]),
        }
    )
    shown["created_at"] = r["created_at"]
    return shown


async def _account_of(conn: asyncpg.Connection, account_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(_ACCOUNT_SELECT + " WHERE a.id = $1", account_id)
    return None if row is None else _account_json(row)


async def _accounts_of(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(_ACCOUNT_SELECT + " WHERE a.id = ANY($1::text[])", list(ids))
    return {r["id"]: _account_json(r) for r in rows}


def _json_value(value: object) -> object:
    if isinstance(value, Decimal):
        return str(plain(value))
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


async def _audit(
    conn: asyncpg.Connection,
    actor: str,
    action: str,
    target: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> None:
    """One audit row (CONTRACT §8); `before`/`after` are public JSON only."""
    await conn.execute(
        "INSERT INTO audit_log (actor, action, target, before, after)"
        " VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)",
        actor,
        action,
        target,
        None if before is None else json.dumps(before, default=_json_value),
        None if after is None else json.dumps(after, default=_json_value),
    )


async def audit(
    conn: asyncpg.Connection,
    actor: str,
    action: str,
    target: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> None:
    """One audit row for a change written outside this module (an
    operator's opt-out import, store/opt_outs.py), in the caller's
    transaction."""
    await _audit(conn, actor, action, target, before, after)


async def _notify(conn: asyncpg.Connection, target: str) -> None:
    # Delivered at commit, so a listener that reloads sees the change.
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, target)


async def _changed(
    conn: asyncpg.Connection,
    actor: str,
    action: str,
    target: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> None:
    await _audit(conn, actor, action, target, before, after)
    await _notify(conn, target)


def _column_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Column → value as the driver wants it; a field that is not a column
    the caller may set is a programming error (and never reaches SQL)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name not in _CONFIG_COLUMNS:
            raise ValueError(f"not an account field: {name!r}")
        coerce = _COERCE.get(name)
        out[name] = value if coerce is None or value is None else coerce(value)
    return out


# -- config sync -----------------------------------------------------------------


def _fields_of(cfg: AccountConfig, account_fields: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """The keys the file sets for `cfg`; for a Config not read from a file
    (no entry), the keys whose value differs from the default."""
    known = account_fields.get(cfg.id)
    if known is not None:
        return known
    default = AccountConfig(id=cfg.id)
    return frozenset(
        {"id"} | {f for f in cfg.__struct_fields__ if getattr(cfg, f) != getattr(default, f)}
    )


def _managed_fields(keys: frozenset[str]) -> list[str]:
    return sorted(keys & (_CONFIG_COLUMNS | _CONFIG_NON_COLUMNS))


def _config_columns(cfg: AccountConfig, keys: frozenset[str]) -> dict[str, Any]:
    present = set(cfg.__struct_fields__)
    return _column_values({k: getattr(cfg, k) for k in sorted(keys & _CONFIG_COLUMNS & present)})


async def _insert_config_account(
    conn: asyncpg.Connection, cfg: AccountConfig, keys: frozenset[str]
) -> None:
    # A new account takes every setting of its table, defaults included.
    every = frozenset(cfg.__struct_fields__)
    columns = _config_columns(cfg, every)
    columns["managed_fields"] = _managed_fields(keys)
    names = ["id", "credit", "initial_credit", *columns]
    values = [cfg.id, cfg.credit, cfg.credit, *columns.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await conn.execute(
        f"INSERT INTO accounts ({', '.join(names)}) VALUES ({placeholders})", *values
    )


async def _update_config_account(
    conn: asyncpg.Connection, cfg: AccountConfig, keys: frozenset[str], before: Mapping[str, Any]
) -> None:
    columns = _config_columns(cfg, keys)
    if before["lock_reason"] == REMOVED_FROM_CONFIG and "locked" not in keys:
        # Back in the file: the lock the sync set when it left is lifted;
        # a lock an operator or the file set stays.
        columns.setdefault("locked", False)
        columns.setdefault("lock_reason", "")
    if "webhook_secret" in keys:
        # A file that holds the account's secret holds the rotation's too:
        # taking webhook_secret_next out of it ends the rotation, and the
        # old second secret stops signing (CONTRACT §3).
        columns["webhook_secret_next"] = cfg.webhook_secret_next
    columns["managed_fields"] = _managed_fields(keys)
    await _update_account(conn, cfg.id, columns)


async def _update_account(
    conn: asyncpg.Connection, account_id: str, columns: Mapping[str, Any]
) -> None:
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=2))
    await conn.execute(
        f"UPDATE accounts SET {sets}, updated_at = now() WHERE id = $1",
        account_id,
        *columns.values(),
    )


async def _removed_accounts(conn: asyncpg.Connection, config_ids: Sequence[str]) -> list[str]:
    """Accounts the file managed and no longer names."""
    rows = await conn.fetch(
        "SELECT id FROM accounts WHERE managed_fields IS NOT NULL AND id <> ALL($1::text[])"
        " ORDER BY id FOR UPDATE",
        list(config_ids),
    )
    return [r["id"] for r in rows]


async def _lock_removed(conn: asyncpg.Connection, removed: Sequence[str]) -> None:
    # Locked rather than deleted (its messages, ledger and audit stay), and
    # the operator's to manage or unlock from now on.
    await conn.execute(
        "UPDATE accounts SET locked = true, lock_reason = $2, managed_fields = NULL,"
        " updated_at = now() WHERE id = ANY($1::text[])",
        list(removed),
        REMOVED_FROM_CONFIG,
    )


def _key_json(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "key_id": r["key_id"],
        "account": r["account_id"],
        "name": r["name"],
        "created_at": r["created_at"],
        "expires_at": r["expires_at"],
    }


async def _sync_api_keys(conn: asyncpg.Connection, accounts: Sequence[AccountConfig]) -> None:
    owners = [(cfg.id, api_key_digest(key)) for cfg in accounts for key in cfg.api_keys]
    account_ids = [a for a, _ in owners]
    digests = [d for _, d in owners]
    removed = await conn.fetch(
        "DELETE FROM api_keys k WHERE managed_by_config AND NOT EXISTS ("
        "  SELECT 1 FROM unnest($1::text[], $2::bytea[]) w(account_id, digest)"
        "  WHERE w.account_id = k.account_id AND w.digest = k.digest)"
        " RETURNING key_id, account_id, name, created_at, expires_at",
        account_ids,
        digests,
    )
    for r in removed:
        await _audit(conn, CONFIG_ACTOR, "api_key.delete", r["key_id"], _key_json(r), None)
    # A key of the file is the file's even if the API made it first: same
    # secret, so the file's account and no revocation or expiry.
    written = await conn.fetch(
        "INSERT INTO api_keys (key_id, account_id, name, digest, managed_by_config)"
        " SELECT 'cfg_' || left(encode(w.digest, 'hex'), 16), w.account_id, 'config', w.digest, true"
        " FROM unnest($1::text[], $2::bytea[]) w(account_id, digest)"
        " ON CONFLICT (digest) DO UPDATE SET account_id = excluded.account_id, name = 'config',"
        "  managed_by_config = true, revoked_at = NULL, expires_at = NULL"
        " WHERE api_keys.account_id <> excluded.account_id OR NOT api_keys.managed_by_config"
        "  OR api_keys.revoked_at IS NOT NULL OR api_keys.expires_at IS NOT NULL"
        " RETURNING key_id, account_id, name, created_at, expires_at, (xmax = 0) AS inserted",
        account_ids,
        digests,
    )
    for r in written:
        action = "api_key.create" if r["inserted"] else "api_key.patch"
        await _audit(conn, CONFIG_ACTOR, action, r["key_id"], None, _key_json(r))


async def _sync_smpp(conn: asyncpg.Connection, accounts: Sequence[AccountConfig]) -> None:
    wanted = {cfg.id: cfg.smpp for cfg in accounts if cfg.smpp is not None}
    stored = {
        r["account_id"]: r
        for r in await conn.fetch(
            "SELECT account_id, system_id, password_hash, managed_by_config FROM smpp_credentials"
            " WHERE managed_by_config OR account_id = ANY($1::text[])",
            list(wanted),
        )
    }
    # The file's credentials that left it go first, also those whose
    # system_id changed: two accounts may swap theirs in one edit.
    for account_id, row in stored.items():
        smpp = wanted.get(account_id)
        if row["managed_by_config"] and (smpp is None or smpp.system_id != row["system_id"]):
            await conn.execute("DELETE FROM smpp_credentials WHERE account_id = $1", account_id)
    for account_id, smpp in wanted.items():
        other = await conn.fetchval(
            "SELECT account_id FROM smpp_credentials WHERE system_id = $1 AND account_id <> $2",
            smpp.system_id,
            account_id,
        )
        if other is not None:
            raise Conflict(
                "system_id_taken",
                f"SMPP system_id {smpp.system_id!r} of account {account_id!r}"
                f" is used by account {other!r}",
                "smpp.system_id",
            )
        old = stored.get(account_id)
        # scrypt costs tens of milliseconds: off the event loop, and only
        # when the stored hash is not already the file's password's.
        keep = old is not None and await asyncio.to_thread(
            verify_password, smpp.password, old["password_hash"]
        )
        password_hash = (
            old["password_hash"]
            if keep and old is not None
            else await asyncio.to_thread(hash_password, smpp.password)
        )
        await conn.execute(
            "INSERT INTO smpp_credentials"
            " (account_id, system_id, password_hash, max_binds, allowed_ips, managed_by_config)"
            " VALUES ($1, $2, $3, $4, '{}', true)"
            " ON CONFLICT (account_id) DO UPDATE SET system_id = excluded.system_id,"
            "  password_hash = excluded.password_hash, max_binds = excluded.max_binds,"
            "  allowed_ips = excluded.allowed_ips, managed_by_config = true, updated_at = now()"
            " WHERE (smpp_credentials.system_id, smpp_credentials.password_hash,"
            "  smpp_credentials.max_binds, smpp_credentials.allowed_ips,"
            "  smpp_credentials.managed_by_config)"
            " IS DISTINCT FROM (excluded.system_id, excluded.password_hash, excluded.max_binds,"
            "  excluded.allowed_ips, true)",
            account_id,
            smpp.system_id,
            password_hash,
            smpp.max_binds,
        )


def _number_json(r: asyncpg.Record) -> dict[str, Any]:
    return {"number": r["number"], "account": r["account_id"], "type": r["type"], "rate": r["rate"]}


async def _sync_numbers(conn: asyncpg.Connection, numbers: Sequence[NumberConfig]) -> None:
    wanted = [n.number for n in numbers]
    before = {
        r["number"]: _number_json(r)
        for r in await conn.fetch(
            "SELECT number, account_id, type, rate FROM numbers WHERE number = ANY($1::text[])",
            wanted,
        )
    }
    removed = await conn.fetch(
        "DELETE FROM numbers WHERE managed_by_config AND number <> ALL($1::text[])"
        " RETURNING number, account_id, type, rate",
        wanted,
    )
    for r in removed:
        await _audit(conn, CONFIG_ACTOR, "number.delete", r["number"], _number_json(r), None)
    written = await conn.fetch(
        "INSERT INTO numbers (number, account_id, type, rate, managed_by_config)"
        " SELECT * , true FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[])"
        " ON CONFLICT (number) DO UPDATE SET account_id = excluded.account_id,"
        "  type = excluded.type, rate = excluded.rate, managed_by_config = true"
        " WHERE (numbers.account_id, numbers.type, numbers.rate, numbers.managed_by_config)"
        "  IS DISTINCT FROM (excluded.account_id, excluded.type, excluded.rate, true)"
        " RETURNING number, account_id, type, rate",
        wanted,
        [n.account for n in numbers],
        [n.type for n in numbers],
        [n.rate for n in numbers],
    )
    for r in written:
        number = r["number"]
        await _audit(conn, CONFIG_ACTOR, "number.put", number, before.get(number), _number_json(r))


async def _sync_sender_ids(conn: asyncpg.Connection, accounts: Sequence[AccountConfig]) -> None:
    """The file's `sender_ids` of each of its accounts: added, changed, and
    removed when the file no longer lists them. An operator's registration
    of another ID stays."""
    account_ids, sender_ids, countries = [], [], []
    for cfg in accounts:
        for sid in cfg.sender_ids:
            account_ids.append(cfg.id)
            sender_ids.append(sid.id)
            # A text[] per row travels as one '{...}' literal: unnest cannot
            # take an array of arrays of different lengths.
            countries.append("{" + ",".join(sid.countries) + "}")
    removed = await conn.fetch(
        "DELETE FROM sender_ids s WHERE managed_by_config AND s.account_id = ANY($1::text[])"
        " AND NOT EXISTS (SELECT 1 FROM unnest($2::text[], $3::text[]) AS w(account_id, sender_id)"
        "  WHERE w.account_id = s.account_id AND w.sender_id = s.sender_id)"
        " RETURNING account_id, sender_id, countries",
        [cfg.id for cfg in accounts],
        account_ids,
        sender_ids,
    )
    for r in removed:
        await _audit(
            conn, CONFIG_ACTOR, "sender_id.delete",
            _sender_id_target(r["account_id"], r["sender_id"]), _sender_id_json(r), None,
        )  # fmt: skip
    written = await conn.fetch(
        "INSERT INTO sender_ids (account_id, sender_id, countries, managed_by_config)"
        " SELECT a, s, c::text[], true FROM unnest($1::text[], $2::text[], $3::text[]) AS w(a, s, c)"
        " ON CONFLICT (account_id, sender_id) DO UPDATE SET countries = excluded.countries,"
        "  managed_by_config = true"
        " WHERE (sender_ids.countries, sender_ids.managed_by_config)"
        "  IS DISTINCT FROM (excluded.countries, true)"
        " RETURNING account_id, sender_id, countries",
        account_ids,
        sender_ids,
        countries,
    )
    for r in written:
        await _audit(
            conn, CONFIG_ACTOR, "sender_id.put",
            _sender_id_target(r["account_id"], r["sender_id"]), None, _sender_id_json(r),
        )  # fmt: skip


async def sync_config(
    conn: asyncpg.Connection,
    accounts: Sequence[AccountConfig],
    numbers: Sequence[NumberConfig],
    account_fields: Mapping[str, frozenset[str]],
) -> None:
    """Write the config file's accounts, credentials and numbers into the
    directory (at start and on SIGHUP, before `load`), in one transaction
    with one NOTIFY. Only what the file sets is overwritten; the balance
    of an existing account is the ledger's and is never touched.

    Raises Conflict("system_id_taken") when a file's SMPP system_id is an
    operator-made credential of another account (nothing is written)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SYNC_LOCK_KEY)
        config_ids = [cfg.id for cfg in accounts]
        removed = await _removed_accounts(conn, config_ids)
        before = await _accounts_of(conn, [*config_ids, *removed])
        for cfg in accounts:
            keys = _fields_of(cfg, account_fields)
            old = before.get(cfg.id)
            if old is None:
                await _insert_config_account(conn, cfg, keys)
            else:
                await _update_config_account(conn, cfg, keys, old)
        await _lock_removed(conn, removed)
        await _sync_api_keys(conn, accounts)
        await _sync_smpp(conn, accounts)
        await _sync_numbers(conn, numbers)
        await _sync_sender_ids(conn, accounts)
        await _audit_accounts(conn, before, [*config_ids, *removed])
        await _notify(conn, CONFIG_ACTOR)


async def _audit_accounts(
    conn: asyncpg.Connection, before: Mapping[str, dict[str, Any]], ids: Sequence[str]
) -> None:
    after = await _accounts_of(conn, ids)
    for account_id in ids:
        old, new = before.get(account_id), after.get(account_id)
        if old == new:
            continue
        action = "account.create" if old is None else "account.patch"
        await _audit(conn, CONFIG_ACTOR, action, account_id, old, new)


# -- operator changes (CONTRACT §8) ------------------------------------------------


async def _locked_account(conn: asyncpg.Connection, account_id: str) -> asyncpg.Record:
    """The account's row, locked for this transaction; NotFound if none."""
    row = await conn.fetchrow(
        "SELECT id, verified, managed_fields FROM accounts WHERE id = $1 FOR UPDATE", account_id
    )
    if row is None:
        raise NotFound("account")
    return row


def _managed_conflict(what: str, field: str | None = None) -> Conflict:
    return Conflict("managed_by_config", f"{what} is set by the config file", field)


async def create_account(
    conn: asyncpg.Connection, actor: str, fields: Mapping[str, Any]
) -> tuple[dict[str, Any], str]:
    """A new account from `fields` (id, currency, credit and any of
    PATCHABLE); returns its JSON and its webhook secret, generated here and
    shown this once. Conflict("account_exists") if the id is taken."""
    settings = {k: v for k, v in fields.items() if k not in ("id", "currency", "credit")}
    unknown = set(settings) - PATCHABLE
    if unknown:
        raise ValueError(f"not account fields: {sorted(unknown)}")
    account_id = str(fields["id"])
    credit = Decimal(fields.get("credit", 0))
    webhook_secret = secrets.token_urlsafe(32)
    columns = _column_values(settings)
    columns["currency"] = fields.get("currency", "EUR")
    columns["webhook_secret"] = webhook_secret
    names = ["id", "credit", "initial_credit", *columns]
    values = [account_id, credit, credit, *columns.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    async with conn.transaction():
        created = await conn.fetchval(
            f"INSERT INTO accounts ({', '.join(names)}) VALUES ({placeholders})"
            " ON CONFLICT (id) DO NOTHING RETURNING id",
            *values,
        )
        if created is None:
            raise Conflict("account_exists", f"account {account_id!r} exists", "id")
        shown = await _account_of(conn, account_id)
        assert shown is not None
        await _changed(conn, actor, "account.create", account_id, None, shown)
    return shown, webhook_secret


async def get_account(conn: asyncpg.Connection, account_id: str) -> dict[str, Any] | None:
    return await _account_of(conn, account_id)


async def list_accounts(
    conn: asyncpg.Connection, *, limit: int, after: str | None
) -> list[dict[str, Any]]:
    """Accounts by id ascending, those after `after` (the last id of the
    previous page), at most `limit`."""
    rows = await conn.fetch(
        _ACCOUNT_SELECT + " WHERE ($1::text IS NULL OR a.id > $1) ORDER BY a.id LIMIT $2",
        after,
        limit,
    )
    return [_account_json(r) for r in rows]


async def patch_account(
    conn: asyncpg.Connection, actor: str, account_id: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Change PATCHABLE fields; a field the config file sets is refused
    (Conflict "managed_by_config", CONTRACT §8). Unlocking clears the
    lock's reason."""
    unknown = set(changes) - PATCHABLE
    if unknown:
        raise ValueError(f"not patchable: {sorted(unknown)}")
    async with conn.transaction():
        row = await _locked_account(conn, account_id)
        managed = frozenset(row["managed_fields"] or ())
        for name in sorted(changes):
            if name in managed:
                raise _managed_conflict(name, name)
        before = await _account_of(conn, account_id)
        assert before is not None
        if not changes:
            return before
        columns = _column_values(changes)
        if columns.get("locked") is False:
            columns["lock_reason"] = ""
        await _update_account(conn, account_id, columns)
        after = await _account_of(conn, account_id)
        assert after is not None
        await _changed(conn, actor, "account.patch", account_id, before, after)
    return after


async def create_api_key(
    conn: asyncpg.Connection,
    actor: str,
    account_id: str,
    name: str,
    expires_at: datetime | None,
) -> dict[str, Any]:
    """A new API key; the answer holds the key itself, the only time it is
    seen: only its digest is stored."""
    key = "sk_" + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(8)
    async with conn.transaction():
        await _locked_account(conn, account_id)
        row = await conn.fetchrow(
            "INSERT INTO api_keys (key_id, account_id, name, digest, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)"
            " RETURNING key_id, account_id, name, created_at, expires_at",
            key_id,
            account_id,
            name,
            api_key_digest(key),
            expires_at,
        )
        await _changed(conn, actor, "api_key.create", key_id, None, _key_json(row))
    return {
        "key_id": key_id,
        "key": key,
        "name": name,
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
    }


async def list_api_keys(conn: asyncpg.Connection, account_id: str) -> list[dict[str, Any]]:
    """The account's keys not revoked, oldest first (no key, no digest);
    NotFound if there is no such account."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if await conn.fetchval("SELECT 1 FROM accounts WHERE id = $1", account_id) is None:
            raise NotFound("account")
        rows = await conn.fetch(
            "SELECT key_id, name, created_at, last_used_at, expires_at, managed_by_config"
            " FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL"
            " ORDER BY created_at, key_id",
            account_id,
        )
    return [dict(r) for r in rows]


async def revoke_api_key(
    conn: asyncpg.Connection, actor: str, account_id: str, key_id: str
) -> None:
    """Revoke a key (kept, with revoked_at, for the audit's sake); a key of
    the config file is the file's to remove."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT key_id, account_id, name, created_at, expires_at, managed_by_config"
            " FROM api_keys WHERE key_id = $1 AND account_id = $2 AND revoked_at IS NULL"
            " FOR UPDATE",
            key_id,
            account_id,
        )
        if row is None:
            raise NotFound("api_key")
        if row["managed_by_config"]:
            raise _managed_conflict("this API key")
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1", key_id)
        await _changed(conn, actor, "api_key.revoke", key_id, _key_json(row), None)


def _smpp_json(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "system_id": r["system_id"],
        "max_binds": r["max_binds"],
        "allowed_ips": list(r["allowed_ips"]),
    }


async def put_smpp(
    conn: asyncpg.Connection,
    actor: str,
    account_id: str,
    *,
    system_id: str,
    password: str,
    max_binds: int,
    allowed_ips: Sequence[str],
) -> dict[str, Any]:
    """Set the account's SMPP credentials; the password is stored as an
    scrypt hash only (CONTRACT §8)."""
    # Hashed before the transaction: no row lock held through scrypt.
    password_hash = await asyncio.to_thread(hash_password, password)
    async with conn.transaction():
        account = await _locked_account(conn, account_id)
        if "smpp" in (account["managed_fields"] or ()):
            raise _managed_conflict("smpp", "smpp")
        old = await conn.fetchrow(
            "SELECT system_id, max_binds, allowed_ips, managed_by_config FROM smpp_credentials"
            " WHERE account_id = $1",
            account_id,
        )
        if old is not None and old["managed_by_config"]:
            raise _managed_conflict("smpp", "smpp")
        other = await conn.fetchval(
            "SELECT account_id FROM smpp_credentials WHERE system_id = $1 AND account_id <> $2",
            system_id,
            account_id,
        )
        if other is not None:
            raise _system_id_taken(system_id)
        try:
            row = await conn.fetchrow(
                "INSERT INTO smpp_credentials"
                " (account_id, system_id, password_hash, max_binds, allowed_ips)"
                " VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (account_id) DO UPDATE SET system_id = excluded.system_id,"
                "  password_hash = excluded.password_hash, max_binds = excluded.max_binds,"
                "  allowed_ips = excluded.allowed_ips, updated_at = now()"
                " RETURNING system_id, max_binds, allowed_ips",
                account_id,
                system_id,
                password_hash,
                max_binds,
                list(allowed_ips),
            )
        except asyncpg.UniqueViolationError:
            # Another account took it between our check and the insert.
            raise _system_id_taken(system_id) from None
        shown = _smpp_json(row)
        await _changed(
            conn, actor, "smpp.put", account_id, None if old is None else _smpp_json(old), shown
        )
    return shown


def _system_id_taken(system_id: str) -> Conflict:
    return Conflict("system_id_taken", f"SMPP system_id {system_id!r} is taken", "system_id")


async def add_credit(
    conn: asyncpg.Connection, actor: str, account_id: str, amount: Decimal, reference: str
) -> LedgerEntry:
    """A top-up (amount > 0) or an adjustment (< 0) with its ledger row;
    an unverified account takes no top-up (CONTRACT §6 "Account state")."""
    async with conn.transaction():
        account = await _locked_account(conn, account_id)
        if amount > 0 and not account["verified"]:
            raise Conflict(
                "account_unverified", "an unverified account takes no credit top-up", "amount"
            )
        before = await conn.fetchval("SELECT credit FROM accounts WHERE id = $1", account_id)
        entry = await ledger.add_credit(conn, account_id, amount, reference=reference, actor=actor)
        if entry is None:  # the row is locked above: cannot vanish meanwhile
            raise NotFound("account")
        await _changed(
            conn,
            actor,
            "credit.add",
            account_id,
            {"credit": before},
            entry.as_json(with_actor=True),
        )
    return entry


async def put_number(
    conn: asyncpg.Connection,
    actor: str,
    number: str,
    *,
    account_id: str,
    type: str,
    rate: float | None,
) -> dict[str, Any]:
    """Give `number` to the account (also taking it from another one);
    NotFound("account") for an unknown account."""
    async with conn.transaction():
        await _locked_account(conn, account_id)
        old = await conn.fetchrow(
            "SELECT number, account_id, type, rate, managed_by_config FROM numbers"
            " WHERE number = $1 FOR UPDATE",
            number,
        )
        if old is not None and old["managed_by_config"]:
            raise _managed_conflict(f"number {number}")
        row = await conn.fetchrow(
            "INSERT INTO numbers (number, account_id, type, rate) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (number) DO UPDATE SET account_id = excluded.account_id,"
            "  type = excluded.type, rate = excluded.rate"
            " RETURNING number, account_id, type, rate",
            number,
            account_id,
            type,
            None if rate is None else float(rate),
        )
        shown = _number_json(row)
        await _changed(
            conn, actor, "number.put", number, None if old is None else _number_json(old), shown
        )
    return shown


async def delete_number(conn: asyncpg.Connection, actor: str, number: str) -> None:
    async with conn.transaction():
        old = await conn.fetchrow(
            "SELECT number, account_id, type, rate, managed_by_config FROM numbers"
            " WHERE number = $1 FOR UPDATE",
            number,
        )
        if old is None:
            raise NotFound("number")
        if old["managed_by_config"]:
            raise _managed_conflict(f"number {number}")
        await conn.execute("DELETE FROM numbers WHERE number = $1", number)
        await _changed(conn, actor, "number.delete", number, _number_json(old), None)


async def list_numbers(
    conn: asyncpg.Connection, *, limit: int, after: str | None
) -> list[dict[str, Any]]:
    """Numbers in ascending order, those after `after`, at most `limit`."""
    rows = await conn.fetch(
        "SELECT number, account_id, type, rate FROM numbers"
        " WHERE ($1::text IS NULL OR number > $1) ORDER BY number LIMIT $2",
        after,
        limit,
    )
    return [_number_json(r) for r in rows]


def _sender_id_target(account_id: str, sender_id: str) -> str:
    return f"{account_id}/{sender_id}"


def _sender_id_json(r: asyncpg.Record) -> dict[str, Any]:
    return {"sender_id": r["sender_id"], "countries": list(r["countries"])}


async def put_sender_id(
    conn: asyncpg.Connection,
    actor: str,
    account_id: str,
    sender_id: str,
    countries: Sequence[str],
) -> dict[str, Any]:
    """Register a sender ID for the account in these countries (CONTRACT §6
    "Sender-ID rules"), replacing its earlier countries."""
    async with conn.transaction():
        await _locked_account(conn, account_id)
        old = await conn.fetchrow(
            "SELECT sender_id, countries, managed_by_config FROM sender_ids"
            " WHERE account_id = $1 AND sender_id = $2 FOR UPDATE",
            account_id,
            sender_id,
        )
        if old is not None and old["managed_by_config"]:
            raise _managed_conflict(f"sender ID {sender_id}")
        row = await conn.fetchrow(
            "INSERT INTO sender_ids (account_id, sender_id, countries) VALUES ($1, $2, $3)"
            " ON CONFLICT (account_id, sender_id) DO UPDATE SET countries = excluded.countries"
            " RETURNING sender_id, countries",
            account_id,
            sender_id,
            list(countries),
        )
        shown = _sender_id_json(row)
        await _changed(
            conn,
            actor,
            "sender_id.put",
            _sender_id_target(account_id, sender_id),
            None if old is None else _sender_id_json(old),
            shown,
        )
    return shown


async def delete_sender_id(
    conn: asyncpg.Connection, actor: str, account_id: str, sender_id: str
) -> None:
    async with conn.transaction():
        old = await conn.fetchrow(
            "SELECT sender_id, countries, managed_by_config FROM sender_ids"
            " WHERE account_id = $1 AND sender_id = $2 FOR UPDATE",
            account_id,
            sender_id,
        )
        if old is None:
            raise NotFound("sender_id")
        if old["managed_by_config"]:
            raise _managed_conflict(f"sender ID {sender_id}")
        await conn.execute(
            "DELETE FROM sender_ids WHERE account_id = $1 AND sender_id = $2", account_id, sender_id
        )
        await _changed(
            conn,
            actor,
            "sender_id.delete",
            _sender_id_target(account_id, sender_id),
            _sender_id_json(old),
            None,
        )


async def list_sender_ids(conn: asyncpg.Connection, account_id: str) -> list[dict[str, Any]]:
    """The account's sender IDs by name; NotFound if there is no such account."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if await conn.fetchval("SELECT 1 FROM accounts WHERE id = $1", account_id) is None:
            raise NotFound("account")
        rows = await conn.fetch(
            "SELECT sender_id, countries FROM sender_ids WHERE account_id = $1 ORDER BY sender_id",
            account_id,
        )
    return [_sender_id_json(r) for r in rows]


async def list_audit(
    conn: asyncpg.Connection, *, limit: int, before: int | None
) -> list[dict[str, Any]]:
    """The audit log newest first, entries older than `before` (the last
    id of the previous page), at most `limit`."""
    rows = await conn.fetch(
        "SELECT id, at, actor, action, target, before, after FROM audit_log"
        " WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        before,
        limit,
    )
    return [
        {
            "id": r["id"],
            "at": r["at"],
            "actor": r["actor"],
            "action": r["action"],
            "target": r["target"],
            "before": None if r["before"] is None else json.loads(r["before"]),
            "after": None if r["after"] is None else json.loads(r["after"]),
        }
        for r in rows
    ]


async def touch_api_keys(conn: asyncpg.Connection, used: Mapping[str, datetime]) -> None:
    """Record when keys (by key_id) were last used, in one statement; an
    older time than the stored one (another instance's) changes nothing.
    Not a directory change: no audit row, no NOTIFY."""
    if not used:
        return
    await conn.execute(
        "UPDATE api_keys k SET last_used_at = greatest(k.last_used_at, u.at)"
        " FROM unnest($1::text[], $2::timestamptz[]) AS u(key_id, at)"
        " WHERE k.key_id = u.key_id",
        list(used),
        list(used.values()),
    )
