"""Route and price tables: longest E.164 prefix, cheapest available carrier."""

from __future__ import annotations

from decimal import Decimal

import pytest

from smsrouter.router.routes import Candidate, PrefixTrie, Price, PriceTable, RouteTable


def cand(carrier: str, cost: str) -> Candidate:
    return Candidate(carrier, Decimal(cost))


NANP = (cand("sim-a", "0.0045"), cand("sim-b", "0.0051"))
TORONTO = (cand("sim-c", "0.0030"),)
UK = (cand("sim-uk", "0.0200"),)
DEFAULT = (cand("wholesale", "0.0500"),)


@pytest.fixture
def table() -> RouteTable:
    return RouteTable([("1", NANP), ("1416", TORONTO), ("44", UK), ("", DEFAULT)])


def always(_carrier: str) -> bool:
    return True


@pytest.mark.parametrize(
    ("msisdn", "prefix", "candidates"),
    [
        ("14165550100", "1416", TORONTO),
        ("14155550100", "1", NANP),
        ("141", "1", NANP),
        ("447700900123", "44", UK),
        ("33612345678", "", DEFAULT),
        ("+14165550100", "1416", TORONTO),
    ],
)
def test_longest_prefix_wins(
    table: RouteTable, msisdn: str, prefix: str, candidates: tuple[Candidate, ...]
) -> None:
    assert table.lookup(msisdn) == (prefix, candidates)


def test_without_default_route_an_unmatched_number_has_no_route() -> None:
    table = RouteTable([("1", NANP)])
    assert table.lookup("33612345678") is None
    assert table.choose("33612345678", always) == []


def test_choose_orders_cheapest_first() -> None:
    a, b, c = cand("a", "0.0051"), cand("b", "0.0045"), cand("c", "0.0060")
    table = RouteTable([("1", (a, b, c))])
    assert table.choose("14155550100", always) == [b, a, c]
    # lookup keeps config order; only choose ranks.
    assert table.lookup("14155550100") == ("1", (a, b, c))


def test_choose_skips_unavailable_carriers() -> None:
    a, b, c = cand("a", "0.0051"), cand("b", "0.0045"), cand("c", "0.0060")
    table = RouteTable([("1", (a, b, c))])
    assert table.choose("14155550100", lambda name: name != "b") == [a, c]


def test_equal_costs_keep_config_order() -> None:
    # Config order differs from name order, so a sort by (cost, name) fails.
    z, y, x, w = cand("z", "0.005"), cand("y", "0.004"), cand("x", "0.0050"), cand("w", "0.004")
    table = RouteTable([("1", (z, y, x, w))])
    assert [c.carrier for c in table.choose("1415", always)] == ["y", "w", "z", "x"]


def test_no_available_candidate_gives_empty_list_without_falling_back(table: RouteTable) -> None:
    # Every Toronto carrier is down: the "1" route is not a licence to use
    # carriers the operator did not list for 1416.
    assert table.choose("14165550100", lambda name: name != "sim-c") == []


def test_route_with_no_candidates() -> None:
    table = RouteTable([("999", ())])
    assert table.lookup("9991234") == ("999", ())
    assert table.choose("9991234", always) == []


def test_duplicate_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        RouteTable([("1", NANP), ("1", UK)])


# "\u0661" is ARABIC-INDIC DIGIT ONE: str.isdigit() accepts it, E.164 does not.
@pytest.mark.parametrize("prefix", ["+1", "1a", " 1", "\u0661"])
def test_prefix_must_be_ascii_digits(prefix: str) -> None:
    with pytest.raises(ValueError):
        RouteTable([(prefix, NANP)])


def test_trie_is_generic_and_counts_entries() -> None:
    trie: PrefixTrie[int] = PrefixTrie()
    assert trie.longest_match("123") is None
    trie.insert("12", 12)
    trie.insert("1234", 1234)
    assert len(trie) == 2
    assert trie.longest_match("1") is None
    assert trie.longest_match("123") == ("12", 12)
    assert trie.longest_match("12345") == ("1234", 1234)
    assert trie.longest_match("") is None
    trie.insert("", 0)
    assert trie.longest_match("") == ("", 0)
    assert trie.longest_match("9") == ("", 0)


def test_large_table_matches_every_prefix() -> None:
    # 10,000 distinct 5-digit prefixes, each must find itself, not a sibling.
    routes = [(f"{i:05d}", (cand(f"c{i}", "0.01"),)) for i in range(0, 100_000, 10)]
    table = RouteTable(routes)
    assert len(table) == 10_000
    for prefix, candidates in routes[::97]:
        assert table.lookup(prefix + "123456") == (prefix, candidates)
    assert table.lookup("00001") is None


def test_prices_by_longest_prefix() -> None:
    prices = PriceTable(
        [("1", Decimal("0.0062")), ("1416", Decimal("0.0071")), ("", Decimal("0.0500"))]
    )
    assert prices.price_of("14155550100") == Decimal("0.0062")
    assert prices.price_of("+14165550100") == Decimal("0.0071")
    assert prices.price_of("447700900123") == Decimal("0.0500")
    assert prices.match("14165550100") == Price("1416", Decimal("0.0071"))
    assert len(prices) == 3


def test_unpriced_number() -> None:
    prices = PriceTable([("1", Decimal("0.0062"))])
    assert prices.price_of("447700900123") is None
    assert prices.match("447700900123") is None


def test_price_keeps_its_precision() -> None:
    prices = PriceTable([("44", Decimal("0.004150"))])
    assert str(prices.price_of("447700900123")) == "0.004150"


def test_duplicate_price_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        PriceTable([("44", Decimal("0.01")), ("44", Decimal("0.02"))])
