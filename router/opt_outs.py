"""The opted-out subscribers of every account, in memory (CONTRACT §6
"Opt-out").

The look-up runs on every message, so it is a set membership test: per
account a set of the subscribers' numbers as integers (the E.164 digits),
which costs about 60 bytes a number where the string would cost twice that
(bench/compliance_memory.py measures it). The rows in PostgreSQL
(`opt_outs`, migration 0007) are the truth: this list is loaded from them
at start and follows every change, this process's own as it commits and
other processes' by NOTIFY.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["OptOutList", "number_key"]


def number_key(e164: str) -> int:
    """The key of a subscriber's number: its E.164 digits as an integer
    ("+14155550123" → 14155550123). E.164 numbers have no leading zero
    (the country code starts with 1-9), so the integer is unique."""
    return int(e164[1:] if e164.startswith("+") else e164)


class OptOutList:
    """Account id → the numbers opted out of it."""

    __slots__ = ("_by_account",)

    def __init__(self) -> None:
        self._by_account: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return sum(len(numbers) for numbers in self._by_account.values())

    def opted_out(self, account_id: str, digits: str) -> bool:
        """Has this subscriber (E.164 digits, no '+') opted out of the account?"""
        numbers = self._by_account.get(account_id)
        return numbers is not None and int(digits) in numbers

    def add(self, account_id: str, e164: str) -> None:
        self._by_account.setdefault(account_id, set()).add(number_key(e164))

    def remove(self, account_id: str, e164: str) -> None:
        numbers = self._by_account.get(account_id)
        if numbers is not None:
            numbers.discard(number_key(e164))
            if not numbers:
                del self._by_account[account_id]

    def replace(self, account_id: str, numbers: Iterable[str]) -> None:
        """The account's whole list anew (after a bulk import)."""
        keys = {number_key(n) for n in numbers}
        if keys:
            self._by_account[account_id] = keys
        else:
            self._by_account.pop(account_id, None)

    def numbers(self, account_id: str) -> int:
        """How many numbers opted out of the account."""
        return len(self._by_account.get(account_id, ()))

    def replace_keys(self, account_id: str, keys: Iterable[int]) -> None:
        """The account's whole list anew, from number keys (`number_key`)."""
        numbers = set(keys)
        if numbers:
            self._by_account[account_id] = numbers
        else:
            self._by_account.pop(account_id, None)

    def add_many(self, account_id: str, e164s: Iterable[str]) -> None:
        """Numbers added to the account's list (an operator's import)."""
        numbers = self._by_account.setdefault(account_id, set())
        numbers.update(number_key(n) for n in e164s)
        if not numbers:
            del self._by_account[account_id]

    def load_keys(self, by_account: Mapping[str, Iterable[int]]) -> None:
        """Every account's list from number keys, replacing all (at start,
        and after the process lost track of changes)."""
        loaded = {account_id: set(keys) for account_id, keys in by_account.items()}
        self._by_account = {account_id: keys for account_id, keys in loaded.items() if keys}

    def load(self, rows: Iterable[tuple[str, str]]) -> None:
        """Every account's list from (account id, E.164) rows, replacing all."""
        by_account: dict[str, set[int]] = {}
        for account_id, e164 in rows:
            numbers = by_account.get(account_id)
            if numbers is None:
                numbers = by_account[account_id] = set()
            numbers.add(number_key(e164))
        self._by_account = by_account
