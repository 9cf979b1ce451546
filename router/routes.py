"""Routing and pricing by longest E.164 prefix (CONTRACT §2 ``[[routes]]``, ``[[prices]]``).

Both tables map digit prefixes to data and answer "which entry has the
longest prefix of this number" ("1" for NANP, "1416" for Toronto, "" as the
default). They share one trie: a lookup walks at most 15 nodes (ITU-T
E.164 caps a number at 15 digits) whatever the table size, where a scan of
the prefixes would cost a comparison per configured route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar, cast

__all__ = ["Candidate", "PrefixTrie", "Price", "PriceTable", "RouteTable"]

V = TypeVar("V")


class _Node(Generic[V]):
    __slots__ = ("children", "has_value", "value")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.has_value = False
        self.value: V | None = None


class PrefixTrie(Generic[V]):
    """Digit prefixes → values, answering longest-prefix matches.

    The empty prefix is a valid key: the default entry, matched by every
    number that no longer prefix claims.
    """

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def insert(self, prefix: str, value: V) -> None:
        """Add ``prefix`` → ``value``; a prefix given twice is an error.

        Two routes for one prefix would leave it to config order which one
        wins, so the table refuses instead of guessing.
        """
        if not (prefix == "" or (prefix.isascii() and prefix.isdigit())):
            raise ValueError(f"prefix must be E.164 digits without '+', got {prefix!r}")
        node = self._root
        for digit in prefix:
            child = node.children.get(digit)
            if child is None:
                child = node.children[digit] = _Node()
            node = child
        if node.has_value:
            raise ValueError(f"duplicate prefix {prefix!r}")
        node.has_value = True
        node.value = value
        self._size += 1

    def longest_match(self, digits: str) -> tuple[str, V] | None:
        """The entry with the longest prefix of ``digits``: ``(prefix, value)``, or None."""
        node = self._root
        best: tuple[str, V] | None = ("", cast(V, node.value)) if node.has_value else None
        for depth, digit in enumerate(digits, 1):
            child = node.children.get(digit)
            if child is None:
                break
            node = child
            if node.has_value:
                best = (digits[:depth], cast(V, node.value))
        return best


def _digits(msisdn: str) -> str:
    # The API speaks E.164 with '+', config and SMPP (TON 1) without it
    # (CONTRACT §2, §4); accept both so callers need not strip it first.
    return msisdn[1:] if msisdn.startswith("+") else msisdn


@dataclass(frozen=True, slots=True)
class Candidate:
    """A carrier that can take a route, at a cost per part."""

    carrier: str
    cost: Decimal
    # Share among equally good carriers, for whoever spreads load; choose()
    # does not use it.
    weight: int = 1


class _Route:
    __slots__ = ("by_cost", "candidates")

    def __init__(self, candidates: Sequence[Candidate]) -> None:
        self.candidates = tuple(candidates)
        # sorted() is stable, so equal costs keep config order: the operator's
        # listing is the tie-break.
        self.by_cost = tuple(sorted(self.candidates, key=lambda c: c.cost))


class RouteTable:
    """``[[routes]]``: longest matching prefix → carriers, cheapest first."""

    __slots__ = ("_trie",)

    def __init__(self, routes: Iterable[tuple[str, Sequence[Candidate]]]) -> None:
        self._trie: PrefixTrie[_Route] = PrefixTrie()
        for prefix, candidates in routes:
            self._trie.insert(prefix, _Route(candidates))

    def __len__(self) -> int:
        return len(self._trie)

    def lookup(self, msisdn: str) -> tuple[str, Sequence[Candidate]] | None:
        """The matched prefix and its candidates in config order, or None (no route)."""
        match = self._trie.longest_match(_digits(msisdn))
        if match is None:
            return None
        prefix, route = match
        return prefix, route.candidates

    def choose(self, msisdn: str, is_available: Callable[[str], bool]) -> list[Candidate]:
        """Available candidates of the longest match, cheapest first.

        Only the longest match counts: a route configured for "1416" states
        which carriers may carry those numbers, so falling back to the "1"
        route when they are all down would send traffic where the operator
        did not want it. An empty list means no route now (``no_route`` or a
        retry later, the caller decides).
        """
        match = self._trie.longest_match(_digits(msisdn))
        if match is None:
            return []
        return [c for c in match[1].by_cost if is_available(c.carrier)]


@dataclass(frozen=True, slots=True)
class Price:
    """``[[prices]]`` entry: price per message part for numbers under ``prefix``."""

    prefix: str
    price: Decimal


class PriceTable:
    """``[[prices]]``: longest matching prefix → price per part (CONTRACT §6 credit)."""

    __slots__ = ("_trie",)

    def __init__(self, prices: Iterable[tuple[str, Decimal]]) -> None:
        self._trie: PrefixTrie[Price] = PrefixTrie()
        for prefix, price in prices:
            self._trie.insert(prefix, Price(prefix, price))

    def __len__(self) -> int:
        return len(self._trie)

    def match(self, msisdn: str) -> Price | None:
        """The price entry that applies to ``msisdn``, or None (not priced)."""
        found = self._trie.longest_match(_digits(msisdn))
        return found[1] if found is not None else None

    def price_of(self, msisdn: str) -> Decimal | None:
        """Price per part for ``msisdn``, or None when no prefix covers it."""
        found = self.match(msisdn)
        return found.price if found is not None else None
