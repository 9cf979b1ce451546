"""Accounts: who may send, through which credentials, from where.

The accounts live in PostgreSQL (`store.directory`, CONTRACT §6, §8); each
process holds them in an `AccountDirectory`, filled from a snapshot of
those rows and replaced whole when they change. API keys are held only as
SHA-256 digests and SMPP passwords only as scrypt hashes, so a memory dump
or a debug log of the directory shows no secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import time
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import structlog

from smsrouter.router.config import AccountConfig
from smsrouter.router.passwords import hash_password, verify_password
from smsrouter.router.store.directory import (
    AccountRow,
    ApiKeyRow,
    Directory,
    SenderIdRow,
    SmppRow,
    TemplateRow,
    api_key_digest,
)
from smsrouter.router.templates import Template, TemplateMatcher, template_of

log = structlog.get_logger("accounts")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_UTC = zoneinfo.ZoneInfo("UTC")


# Copied rather than made anew per digest: a new OpenSSL hash looks its
# algorithm up first, which cost more than hashing an API key (one per request).
_SHA256 = hashlib.sha256()


def _digest(secret: str) -> bytes:
    h = _SHA256.copy()
    h.update(secret.encode())
    return h.digest()


# The matcher of an account without approved templates: it matches nothing.
NO_TEMPLATES = TemplateMatcher(())


@dataclass(slots=True)
class Account:
    id: str
    verified: bool
    locked: bool
    currency: str
    callback_url: str
    webhook_secret: str = field(repr=False)
    inbound_url: str
    allowed_networks: tuple[IPNetwork, ...]
    smpp_system_id: str | None
    smpp_password_hash: str | None = field(repr=False)
    max_binds: int
    # Where binds may come from; empty: the account's allowed_networks.
    smpp_networks: tuple[IPNetwork, ...] = ()
    max_tps: float = 0.0  # 0: no account-wide cap (CONTRACT §6 "Throughput plan")
    credit_limit: Decimal = Decimal(0)  # how far below zero (CONTRACT §6 "Credit")
    # CONTRACT §6 "Daily thresholds": 0 is none; the day is the zone's.
    daily_alarm: int = 0
    daily_limit: int = 0
    zone: zoneinfo.ZoneInfo = _UTC
    alert_url: str = ""
    price_plan: str = ""  # a [[price_plans]] name, before [[prices]]
    lock_reason: str = ""
    # CONTRACT §6 "Opt-out": the answers to STOP/START/HELP ("" = default).
    stop_reply: str = ""
    start_reply: str = ""
    help_reply: str = ""
    templates_required: bool = False  # CONTRACT §6 "Templates"
    # CONTRACT §6 "Geographic permissions": empty = every country.
    allowed_countries: frozenset[str] = frozenset()
    # Registered sender ID → the countries it is registered in (CONTRACT §6
    # "Sender-ID rules per destination country").
    sender_ids: dict[str, frozenset[str]] = field(default_factory=dict)
    # CONTRACT §6 "Templates": the approved templates by id, and the matcher
    # of SMPP texts built from them (kept while they stay the same).
    templates: dict[str, Template] = field(default_factory=dict)
    template_matcher: TemplateMatcher = field(default_factory=lambda: NO_TEMPLATES)
    # CONTRACT §3: during a rotation the account holds a second secret, and
    # callbacks carry a signature made with each.
    webhook_secret_next: str = field(default="", repr=False)
    # Whether a webhook goes out when a message is sent to a carrier, before
    # the one of its final status (router/sent_callbacks.py).
    callback_sent: bool = False

    @property
    def webhook_secrets(self) -> tuple[str, ...]:
        """The secrets callbacks are signed with, the current one first."""
        return tuple([s for s in (self.webhook_secret, self.webhook_secret_next) if s])

    def ip_allowed(self, ip: str | None) -> bool:
        """An empty allow list admits any source address (CONTRACT §2)."""
        if not self.allowed_networks:
            return True
        if ip is None:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.allowed_networks)

    def bind_allowed(self, ip: str | None) -> bool:
        """SMPP binds: the credentials' own allow list, else the account's."""
        if not self.smpp_networks:
            return self.ip_allowed(ip)
        try:
            addr = ipaddress.ip_address(ip or "")
        except ValueError:
            return False
        return any(addr in net for net in self.smpp_networks)


def _networks(ips: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in ips)


def _account(
    row: AccountRow, smpp: SmppRow | None, sender_ids: dict[str, frozenset[str]] | None = None
) -> Account:
    return Account(
        id=row.id,
        verified=row.verified,
        locked=row.locked,
        currency=row.currency,
        callback_url=row.callback_url,
        webhook_secret=row.webhook_secret,
        webhook_secret_next=row.webhook_secret_next,
        inbound_url=row.inbound_url,
        allowed_networks=_networks(row.allowed_ips),
        smpp_system_id=smpp.system_id if smpp else None,
        smpp_password_hash=smpp.password_hash if smpp else None,
        max_binds=smpp.max_binds if smpp else 0,
        smpp_networks=_networks(smpp.allowed_ips) if smpp else (),
        max_tps=row.max_tps,
        credit_limit=row.credit_limit,
        daily_alarm=row.daily_alarm,
        daily_limit=row.daily_limit,
        zone=zoneinfo.ZoneInfo(row.timezone),
        alert_url=row.alert_url,
        price_plan=row.price_plan,
        lock_reason=row.lock_reason,
        stop_reply=row.stop_reply,
        start_reply=row.start_reply,
        help_reply=row.help_reply,
        templates_required=row.templates_required,
        allowed_countries=frozenset(row.allowed_countries),
        sender_ids=sender_ids or {},
        callback_sent=row.callback_sent,
    )


def directory_of_config(accounts: Iterable[AccountConfig]) -> Directory:
    """The rows the config's accounts become once synced (`store.directory.
    sync_config`): what a directory holds before its first load, and in
    tests without a database."""
    rows, keys, smpp = [], [], []
    sender_ids: list[SenderIdRow] = []
    for cfg in accounts:
        rows.append(
            AccountRow(
                id=cfg.id, verified=cfg.verified, locked=cfg.locked, lock_reason="",
                currency=cfg.currency, callback_url=cfg.callback_url,
                webhook_secret=cfg.webhook_secret,
                webhook_secret_next=cfg.webhook_secret_next, inbound_url=cfg.inbound_url,
                alert_url=cfg.alert_url, allowed_ips=tuple(cfg.allowed_ips),
                max_tps=cfg.max_tps, daily_alarm=cfg.daily_alarm, daily_limit=cfg.daily_limit,
                credit_limit=cfg.credit_limit, price_plan=cfg.price_plan,
                timezone=cfg.timezone, stop_reply=cfg.stop_reply, start_reply=cfg.start_reply,
                help_reply=cfg.help_reply, templates_required=cfg.templates_required,
                allowed_countries=tuple(cfg.allowed_countries), managed_fields=None,
                callback_sent=cfg.callback_sent,
            )
        )  # fmt: skip
        sender_ids.extend(
            SenderIdRow(cfg.id, sid.id, tuple(sid.countries)) for sid in cfg.sender_ids
        )
        for key in cfg.api_keys:
            keys.append(
                ApiKeyRow(
                    f"cfg_{api_key_digest(key).hex()[:16]}", cfg.id, api_key_digest(key), None
                )
            )
        if cfg.smpp is not None:
            smpp.append(
                SmppRow(cfg.id, cfg.smpp.system_id, hash_password(cfg.smpp.password),
                        cfg.smpp.max_binds, ())
            )  # fmt: skip
    return Directory(tuple(rows), tuple(keys), tuple(smpp), (), tuple(sender_ids))


def _matcher(account_id: str, templates: Iterable[Template]) -> TemplateMatcher:
    try:
        return TemplateMatcher(templates)
    except ValueError as too_big:
        # SMPP texts of the account then match nothing: refused, not let
        # through unchecked.
        log.error("templates not compiled", account=account_id, error=str(too_big))
        return NO_TEMPLATES


class PasswordCheck:
    """SMPP passwords against their scrypt hashes, without stalling the loop.

    scrypt costs ~50 ms of CPU by design, too long for the event loop, so
    the first check of a password runs in a thread. A password that
    checked out is remembered as an HMAC under a key of this process only
    (never the password itself), so that the binds that follow — an ESME
    reconnecting, its other sessions — are checked in microseconds.
    """

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._known: dict[str, bytes] = {}  # hash → HMAC of the password that matched

    def _mac(self, password: str) -> bytes:
        return hmac.digest(self._key, password.encode(), "sha256")

    def known(self, password: str, encoded: str) -> bool:
        """True if this password matched this hash before (constant time)."""
        mac = self._known.get(encoded)
        return mac is not None and hmac.compare_digest(mac, self._mac(password))

    async def check(self, password: str, encoded: str) -> bool:
        if self.known(password, encoded):
            return True
        ok = await asyncio.to_thread(verify_password, password, encoded)
        if ok:
            if len(self._known) > 10_000:
                self._known.clear()  # bounded: hashes of accounts long gone
            self._known[encoded] = self._mac(password)
        return ok


class AccountDirectory:
    """Look-ups by API key, SMPP system_id and id.

    One directory serves every part for the life of the process; a change
    of the rows replaces what it holds (`apply`), so that no part keeps
    the accounts of an older snapshot.
    """

    def __init__(self, accounts: Iterable[AccountConfig] = ()) -> None:
        self._by_id: dict[str, Account] = {}
        self._by_key: dict[bytes, tuple[Account, str, datetime | None]] = {}
        self._by_system_id: dict[str, Account] = {}
        # When each key was last used, since the last `take_used`
        # (written to api_keys.last_used_at in the background).
        self._used: dict[str, float] = {}
        # Account id → its approved templates' ids and their matcher: a
        # reload for another change does not compile them again.
        self._matchers: dict[str, tuple[frozenset[str], TemplateMatcher]] = {}
        self.passwords = PasswordCheck()
        self.apply(directory_of_config(accounts))

    def apply(self, directory: Directory) -> None:
        smpp = {c.account_id: c for c in directory.smpp}
        registered: dict[str, dict[str, frozenset[str]]] = {}
        for sid in directory.sender_ids:
            registered.setdefault(sid.account_id, {})[sid.sender_id] = frozenset(sid.countries)
        by_id = {
            row.id: _account(row, smpp.get(row.id), registered.get(row.id))
            for row in directory.accounts
        }
        by_key = {
            k.digest: (by_id[k.account_id], k.key_id, k.expires_at)
            for k in directory.api_keys
            if k.account_id in by_id
        }
        self._apply_templates(by_id, directory.templates)
        by_system_id = {a.smpp_system_id: a for a in by_id.values() if a.smpp_system_id is not None}
        # Swapped whole, in one turn of the loop: no look-up sees half of each.
        self._by_id, self._by_key, self._by_system_id = by_id, by_key, by_system_id

    def _apply_templates(self, by_id: dict[str, Account], rows: Iterable[TemplateRow]) -> None:
        """Each account's approved templates, and their matcher: the one
        built before if they are the same ones, else a new one."""
        approved: dict[str, dict[str, Template]] = {}
        for row in rows:
            try:
                template = template_of(row.id, row.name, row.text, row.kind)
            except ValueError as bad:  # checked when created: a row written by hand
                log.error("template not usable", template=row.id, error=str(bad))
                continue
            approved.setdefault(row.account_id, {})[row.id] = template
        matchers: dict[str, tuple[frozenset[str], TemplateMatcher]] = {}
        for account_id, templates in approved.items():
            account = by_id.get(account_id)
            if account is None:
                continue
            ids = frozenset(templates)
            known = self._matchers.get(account_id)
            if known is not None and known[0] == ids:
                matcher = known[1]
            else:
                matcher = _matcher(account_id, templates.values())
            matchers[account_id] = (ids, matcher)
            account.templates = templates
            account.template_matcher = matcher
        self._matchers = matchers

    def __iter__(self) -> Iterator[Account]:
        return iter(self._by_id.values())

    def get(self, account_id: str) -> Account | None:
        return self._by_id.get(account_id)

    def by_api_key(self, key: str) -> Account | None:
        # A dict look-up of the key's digest: the timing of a hash-table probe
        # tells an attacker nothing about the stored keys.
        found = self._by_key.get(_digest(key))
        if found is None:
            return None
        account, key_id, expires_at = found
        now = time.time()  # a float here, a datetime only in take_used()
        if expires_at is not None and expires_at.timestamp() <= now:
            return None
        self._used[key_id] = now
        return account

    def take_used(self) -> dict[str, datetime]:
        """The keys used since the last call, with when each was last used."""
        used, self._used = self._used, {}
        return {key_id: datetime.fromtimestamp(at, UTC) for key_id, at in used.items()}

    def by_system_id(self, system_id: str) -> Account | None:
        return self._by_system_id.get(system_id)
