"""Sender-ID rules per destination country (CONTRACT §6 "Sender-ID rules per
destination country").

Regulators and carriers decide per country which sender a subscriber may
see: the US refuses alphanumeric sender IDs, the UAE and Saudi Arabia admit
only IDs registered with them, India wants registered numeric headers too.
Brand names (banks, governments, big platforms) are spoofed in phishing, so
`[compliance] protected_sender_ids` are refused to every account that has
not registered them. A refusal says which country and which rule refused
it, so that a customer knows what to fix (register the ID, or send from a
number).

Pure: admission passes the sender, its number type, the destination country
and the account's registered sender IDs; a check is a few dict look-ups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from smsrouter.router.senders import NumberType, canonical_sender

__all__ = [
    "ALLOWED",
    "ALPHANUMERIC_POLICIES",
    "NUMERIC_POLICIES",
    "REFUSED",
    "REGISTERED",
    "SENDER_ID_NOT_ALLOWED",
    "SENDER_ID_PROTECTED",
    "SenderIdRefusal",
    "SenderIdRules",
    "SenderRule",
    "country_code",
]

# The stable refusal codes (CONTRACT §6; SMPP 0x0A, ESME_RINVSRCADR).
SENDER_ID_NOT_ALLOWED = "sender_id_not_allowed"
SENDER_ID_PROTECTED = "sender_id_protected"

ALLOWED = "allowed"
REFUSED = "refused"
REGISTERED = "registered"

# CONTRACT §2 `[[sender_rules]]`: a numeric sender is a phone number or short
# code the carrier can route a reply to, so no country refuses them
# outright; it may only ask for registration.
ALPHANUMERIC_POLICIES = (ALLOWED, REFUSED, REGISTERED)
NUMERIC_POLICIES = (ALLOWED, REGISTERED)


def country_code(value: str) -> str:
    """An ISO 3166 alpha-2 code, upper-cased; ValueError for anything else."""
    if not (isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha()):
        raise ValueError(f"country must be an ISO 3166 alpha-2 code such as 'US', not {value!r}")
    return value.upper()


def _policy(field: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        names = " | ".join(repr(c) for c in choices)
        raise ValueError(f"{field} must be {names}, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class SenderRule:
    """One `[[sender_rules]]` entry: which senders a country admits."""

    country: str  # ISO 3166 alpha-2, upper case
    alphanumeric: str = ALLOWED  # allowed | refused | registered
    numeric: str = ALLOWED  # allowed | registered

    @classmethod
    def parse(cls, country: str, alphanumeric: str = ALLOWED, numeric: str = ALLOWED) -> SenderRule:
        """The rule from config values; ValueError naming the bad value, so
        that check-config can point at the key."""
        return cls(
            country=country_code(country),
            alphanumeric=_policy("alphanumeric", alphanumeric, ALPHANUMERIC_POLICIES),
            numeric=_policy("numeric", numeric, NUMERIC_POLICIES),
        )


@dataclass(frozen=True, slots=True)
class SenderIdRefusal:
    """Why a sender may not be used: a stable code and a detail for people."""

    code: str  # SENDER_ID_NOT_ALLOWED | SENDER_ID_PROTECTED
    detail: str


class SenderIdRules:
    """The `[[sender_rules]]` by country and the protected sender IDs.

    Built once per config (a reload builds a new one); `check` runs on
    every message.
    """

    __slots__ = ("_protected", "_rules")

    def __init__(self, rules: Iterable[SenderRule], protected: Iterable[str]) -> None:
        self._rules: dict[str, SenderRule] = {}
        for rule in rules:
            if rule.country in self._rules:
                raise ValueError(f"two [[sender_rules]] for country {rule.country}")
            self._rules[rule.country] = rule
        # Brands are spoofed in any case ("PayPal", "PAYPAL"): compared upper-cased.
        self._protected = frozenset(p.upper() for p in protected)

    def rule_for(self, country: str) -> SenderRule | None:
        return self._rules.get(country.upper())

    def check(
        self,
        sender: str,
        sender_type: NumberType,
        country: str | None,
        registered: Mapping[str, frozenset[str]],
    ) -> SenderIdRefusal | None:
        """None if `sender` may send to `country`, else the refusal.

        `country` is upper case, as parse_recipient gives it. `registered`
        maps each sender ID the account registered to the countries it is
        registered for. A protected ID is refused first, as
        it is a refusal everywhere; then the destination's rule applies (no
        rule, or a destination of unknown country: any sender).
        """
        if (
            self._protected
            and sender.upper() in self._protected
            and not _registered_anywhere(sender, registered)
        ):
            return SenderIdRefusal(
                SENDER_ID_PROTECTED,
                f"sender {sender!r} is a protected sender ID"
                " ([compliance] protected_sender_ids); only an account that"
                " registered it may use it",
            )
        if country is None:
            return None
        rule = self._rules.get(country)
        if rule is None:
            return None
        if sender_type == NumberType.ALPHANUMERIC:
            kind, policy = "alphanumeric", rule.alphanumeric
        else:
            kind, policy = "numeric", rule.numeric
        if policy == ALLOWED:
            return None
        if policy == REGISTERED and rule.country in _countries_of(sender, sender_type, registered):
            return None
        return SenderIdRefusal(SENDER_ID_NOT_ALLOWED, _detail(sender, kind, policy, rule.country))


def _countries_of(
    sender: str, sender_type: NumberType, registered: Mapping[str, frozenset[str]]
) -> frozenset[str]:
    """The countries `sender` is registered for ({} if none).

    A phone number is one number however it is written ("14155550101" on
    SMPP, "+14155550101" on HTTP), so a registration in either spelling
    counts; an alphanumeric ID must match as registered, since that exact
    text is what the subscriber's handset shows.
    """
    found = registered.get(sender)
    if found is not None:
        return found
    if sender_type == NumberType.ALPHANUMERIC:
        return frozenset()
    try:
        canonical = canonical_sender(sender)
    except ValueError:
        return frozenset()
    found = registered.get(canonical)
    if found is None and canonical.startswith("+"):
        found = registered.get(canonical[1:])
    return found if found is not None else frozenset()


def _registered_anywhere(sender: str, registered: Mapping[str, frozenset[str]]) -> bool:
    """Has the account registered this protected ID, in any case, for any
    country? A registration proves the brand is the account's, so it may
    send it everywhere the country rules allow."""
    if sender in registered:
        return True
    wanted = sender.upper()
    # Only a protected sender gets here, and an account registers few IDs.
    return any(key.upper() == wanted for key in registered)


def _detail(sender: str, kind: str, policy: str, country: str) -> str:
    rule = f"[[sender_rules]] {country} {kind} = {policy}"
    if policy == REFUSED:
        return f"sender {sender!r} to {country}: {kind} sender IDs are refused ({rule})"
    return (
        f"sender {sender!r} to {country}: {kind} sender IDs must be registered for"
        f" {country} ({rule}); {sender!r} is not registered for {country} for this account"
    )
