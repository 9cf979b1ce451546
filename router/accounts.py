"""Accounts: who may send, through which credentials, from where.

API keys and SMPP passwords are kept only as SHA-256 digests once loaded,
so a memory dump or a debug log of the directory shows no secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from smsrouter.router.config import AccountConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_UTC = zoneinfo.ZoneInfo("UTC")


# Copied rather than made anew per digest: a new OpenSSL hash looks its
# algorithm up first, which cost more than hashing an API key (one per request).
_SHA256 = hashlib.sha256()


def _digest(secret: str) -> bytes:
    h = _SHA256.copy()
    h.update(secret.encode())
    return h.digest()


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
    smpp_password_digest: bytes | None = field(repr=False)
    max_binds: int
    max_tps: float = 0.0  # 0: no account-wide cap (CONTRACT §6 "Throughput plan")
    credit_limit: Decimal = Decimal(0)  # how far below zero (CONTRACT §6 "Credit")
    # CONTRACT §6 "Daily thresholds": 0 is none; the day is the zone's.
    daily_alarm: int = 0
    daily_limit: int = 0
    zone: zoneinfo.ZoneInfo = _UTC
    alert_url: str = ""
    price_plan: str = ""  # a [[price_plans]] name, before [[prices]]

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

    def smpp_password_ok(self, password: str) -> bool:
        return self.smpp_password_digest is not None and hmac.compare_digest(
            _digest(password), self.smpp_password_digest
        )


def _account(cfg: AccountConfig) -> Account:
    return Account(
        id=cfg.id,
        verified=cfg.verified,
        locked=cfg.locked,
        currency=cfg.currency,
        callback_url=cfg.callback_url,
        webhook_secret=cfg.webhook_secret,
        inbound_url=cfg.inbound_url,
        allowed_networks=tuple(ipaddress.ip_network(n, strict=False) for n in cfg.allowed_ips),
        smpp_system_id=cfg.smpp.system_id if cfg.smpp else None,
        smpp_password_digest=_digest(cfg.smpp.password) if cfg.smpp else None,
        max_binds=cfg.smpp.max_binds if cfg.smpp else 0,
        max_tps=cfg.max_tps,
        credit_limit=cfg.credit_limit,
        daily_alarm=cfg.daily_alarm,
        daily_limit=cfg.daily_limit,
        zone=zoneinfo.ZoneInfo(cfg.timezone),
        alert_url=cfg.alert_url,
        price_plan=cfg.price_plan,
    )


class AccountDirectory:
    """Look-ups by API key, SMPP system_id and id.

    One directory serves every part for the life of the process; a config
    reload replaces what it holds (`apply_config`), so that no part keeps
    the accounts of an older config.
    """

    def __init__(self, accounts: Iterable[AccountConfig]) -> None:
        self._by_id: dict[str, Account] = {}
        self._by_key: dict[bytes, Account] = {}
        self._by_system_id: dict[str, Account] = {}
        self.apply_config(accounts)

    def apply_config(self, accounts: Iterable[AccountConfig]) -> None:
        by_id: dict[str, Account] = {}
        by_key: dict[bytes, Account] = {}
        by_system_id: dict[str, Account] = {}
        for cfg in accounts:
            account = _account(cfg)
            by_id[account.id] = account
            for key in cfg.api_keys:
                by_key[_digest(key)] = account
            if account.smpp_system_id is not None:
                by_system_id[account.smpp_system_id] = account
        # Swapped whole, in one turn of the loop: no look-up sees half of each.
        self._by_id, self._by_key, self._by_system_id = by_id, by_key, by_system_id

    def __iter__(self) -> Iterator[Account]:
        return iter(self._by_id.values())

    def get(self, account_id: str) -> Account | None:
        return self._by_id.get(account_id)

    def by_api_key(self, key: str) -> Account | None:
        # A dict look-up of the key's digest: the timing of a hash-table probe
        # tells an attacker nothing about the stored keys.
        return self._by_key.get(_digest(key))

    def by_system_id(self, system_id: str) -> Account | None:
        return self._by_system_id.get(system_id)
