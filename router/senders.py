"""Sender numbers: their class and their send rate.

Carriers throttle by the kind of number a message comes from (CONTRACT §2):
a US long code may send about 1 part per 4 s, a toll-free number 40/s (1/s
towards Canada), a short code 100/s. A sender listed in ``[[numbers]]`` has
the type written there; any other is classified from its form. The rates
feed the scheduler's token buckets through ``SenderRates.queue_key`` and
``SenderRates.rate_of``. How a number travels in SMPP (TON, NPI) is the
SMPP side's: connectors/smpp/address.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "SHORT_CODE_LENGTHS",
    "NumberType",
    "RateDefaults",
    "SenderRates",
    "canonical_sender",
    "classify_sender",
    "has_letter",
    "split_number",
]


class NumberType(StrEnum):
    LONG_CODE = "long_code"
    TOLL_FREE = "toll_free"
    SHORT_CODE = "short_code"
    ALPHANUMERIC = "alphanumeric"


# NANP toll-free area codes in service (FCC / NANPA: 800, 888, 877, 866, 855,
# 844, 833; 822 is reserved and not yet opened).
_NANP_TOLL_FREE = frozenset({"800", "833", "844", "855", "866", "877", "888"})

# CONTRACT §2: short codes are 5 or 6 digits (the US CSCA issues both
# lengths; the UK and most of Europe use 5).
SHORT_CODE_LENGTHS = (5, 6)


def has_letter(text: str) -> bool:
    """Does `text` hold a letter (which makes a sender alphanumeric)?"""
    return any(ch.isalpha() for ch in text)


def split_number(sender: str) -> tuple[bool, str]:
    """``(had '+', digits)`` of a numeric sender; ValueError if it is not one."""
    plus = sender.startswith("+")
    digits = sender[1:] if plus else sender
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"not a phone number, short code or alphanumeric sender: {sender!r}")
    return plus, digits


def classify_sender(sender: str) -> NumberType:
    """The number type of a sender not listed in ``[[numbers]]`` (CONTRACT §2).

    A letter anywhere makes it alphanumeric; 5-6 digits without '+' a short
    code; NANP 1-8XX with a toll-free area code toll-free; any other number a
    long code. "+14155550101", "14155550101", "12345" and "MyBrand" are all
    accepted; ValueError for anything else (empty, punctuation only, ...).
    """
    if has_letter(sender):
        return NumberType.ALPHANUMERIC
    plus, digits = split_number(sender)
    # A '+' declares an E.164 number, and no country's numbers are that short
    # except as short codes, which are dialled without one.
    if not plus and len(digits) in SHORT_CODE_LENGTHS:
        return NumberType.SHORT_CODE
    if len(digits) == 11 and digits[0] == "1" and digits[1:4] in _NANP_TOLL_FREE:
        return NumberType.TOLL_FREE
    return NumberType.LONG_CODE


def canonical_sender(sender: str) -> str:
    """One spelling per sender: "+digits" for phone numbers, digits for short
    codes, alphanumeric IDs unchanged.

    "14155550101" (SMPP TON 1 carries no '+') and "+14155550101" (the API)
    are one number with one carrier limit, so they must share one queue.
    """
    if classify_sender(sender) in (NumberType.SHORT_CODE, NumberType.ALPHANUMERIC):
        return sender
    return "+" + split_number(sender)[1]


@dataclass(frozen=True, slots=True)
class RateDefaults:
    """``[rates]``: parts per second by number type (CONTRACT §2 defaults)."""

    long_code: float = 0.25
    toll_free: float = 40.0
    short_code: float = 100.0
    alphanumeric: float = 10.0

    def for_type(self, kind: NumberType) -> float:
        return float(getattr(self, kind.value))


def sender_of_key(key: str) -> str:
    """The sender number of a scheduler key (`SenderRates.queue_key`)."""
    return key.split(_KEY_SEP, 1)[0]


# Separates sender and destination country in a queue key. Neither E.164
# digits nor the letters and spaces of alphanumeric sender IDs contain it.
_KEY_SEP = "|"


# Queue keys remembered per SenderRates (senders x destination countries).
_KEYS_CACHED = 100_000


class SenderRates:
    """Which queue a message waits in, and how fast that queue drains.

    A queue key is the sender itself, or "sender|CC" when ``[rates.country.CC]``
    sets a rate for the sender's type: a toll-free number sends 40/s to the
    US but 1/s to Canada (CONTRACT §2), and those are two separate carrier
    limits, so two buckets. The precedence for a key's rate is: the number's
    own ``rate`` in ``[[numbers]]``, then the country rate for its type, then
    the ``[rates]`` default for its type.
    """

    __slots__ = ("_defaults", "_keys", "_per_country", "_per_number")

    def __init__(
        self,
        defaults: RateDefaults,
        # Plain values (as the config loader hands them over) or members.
        per_country: Mapping[str, Mapping[str, float]],
        per_number: Mapping[str, tuple[str, float | None]],
    ) -> None:
        self._defaults = defaults
        # Queue keys already worked out: two look-ups per message otherwise
        # classify its sender each time. Rates are rebuilt, not changed, on
        # reload, so a key never goes stale.
        self._keys: dict[tuple[str, str | None], str] = {}
        self._per_country: dict[str, dict[NumberType, float]] = {
            cc.upper(): {NumberType(kind): float(rate) for kind, rate in rates.items()}
            for cc, rates in per_country.items()
        }
        # Keyed by canonical spelling so "14155550101" finds "+14155550101".
        self._per_number: dict[str, tuple[NumberType, float | None]] = {
            canonical_sender(number): (NumberType(kind), None if rate is None else float(rate))
            for number, (kind, rate) in per_number.items()
        }

    def number_type(self, sender: str) -> NumberType:
        """The type configured in ``[[numbers]]``, else the one its form implies."""
        configured = self._per_number.get(canonical_sender(sender))
        return configured[0] if configured is not None else classify_sender(sender)

    def queue_key(self, sender: str, dest_country: str | None) -> str:
        """The scheduler key for a message from ``sender`` to ``dest_country`` (ISO 3166)."""
        try:
            return self._keys[sender, dest_country]
        except KeyError:
            pass
        key = self._queue_key(sender, dest_country)
        if len(self._keys) >= _KEYS_CACHED:
            self._keys.clear()  # a stream of one-off senders: start over
        self._keys[sender, dest_country] = key
        return key

    def _queue_key(self, sender: str, dest_country: str | None) -> str:
        if _KEY_SEP in sender:
            raise ValueError(f"sender must not contain {_KEY_SEP!r}: {sender!r}")
        sender = canonical_sender(sender)
        configured = self._per_number.get(sender)
        if configured is not None and configured[1] is not None:
            # The number's own rate wins for every destination: one bucket.
            return sender
        if dest_country:
            cc = dest_country.upper()
            kind = configured[0] if configured is not None else classify_sender(sender)
            if kind in self._per_country.get(cc, ()):
                return f"{sender}{_KEY_SEP}{cc}"
        return sender

    def rate_of(self, key: str) -> float:
        """Parts per second for a queue key made by ``queue_key``.

        Re-evaluated against the current config, so after a reload a key made
        under the old one still gets a sensible rate (e.g. "sender|CA" falls
        back to the type default if ``[rates.country.CA]`` was removed).
        """
        sender, sep, cc = key.rpartition(_KEY_SEP)
        if not sep:
            sender, cc = key, ""
        configured = self._per_number.get(sender)
        if configured is not None and configured[1] is not None:
            return configured[1]
        kind = configured[0] if configured is not None else classify_sender(sender)
        country_rate = self._per_country.get(cc, {}).get(kind)
        if country_rate is not None:
            return country_rate
        return self._defaults.for_type(kind)
