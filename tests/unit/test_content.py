"""Content rules (CONTRACT §6 "Content"): the built-in toll-free rule and
`[[content_rules]]` on the linear-time engine."""

from __future__ import annotations

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrouter.router.content import (
    PASSED,
    TOLL_FREE_PROMOTIONAL,
    ContentRule,
    ContentRuleError,
    ContentVerdict,
    compile_content_rules,
)
from smsrouter.router.senders import NumberType

LONG, TOLL_FREE, ALNUM, SHORT = (
    NumberType.LONG_CODE,
    NumberType.TOLL_FREE,
    NumberType.ALPHANUMERIC,
    NumberType.SHORT_CODE,
)
SHORTENER = ContentRule("public URL shortener", r"(?i)\b(bit\.ly|tinyurl\.com)/", "block")


def rule(name: str, pattern: str, action: str = "block", **scope: frozenset[str]) -> ContentRule:
    return ContentRule(name, pattern, action, **scope)


# -- the built-in rule --------------------------------------------------------


def test_promotional_from_a_toll_free_number_is_blocked_without_any_rule() -> None:
    for rules in (compile_content_rules([]), compile_content_rules([SHORTENER])):
        verdict = rules.check("Sale today!", "promotional", TOLL_FREE, "US")
        assert verdict.blocked == TOLL_FREE_PROMOTIONAL
        assert verdict.detail == "promotional messages may not be sent from a toll-free number"
        # Transactional (given or by default) from toll-free, and
        # promotional from any other type, pass.
        assert rules.check("Your code is 1234", "transactional", TOLL_FREE, "US") is PASSED
        assert rules.check("Your code is 1234", None, TOLL_FREE, "US") is PASSED
        for kind in (LONG, SHORT, ALNUM):
            assert rules.check("Sale today!", "promotional", kind, "US") is PASSED


# -- operator rules -----------------------------------------------------------


def test_a_blocking_rule_names_itself_in_the_detail() -> None:
    rules = compile_content_rules([SHORTENER])
    for text in ("see bit.ly/x", "BIT.LY/abc now", "go to https://tinyurl.com/y"):
        verdict = rules.check(text, None, LONG, "US")
        assert verdict == ContentVerdict(
            "public URL shortener", (), "blocked by content rule 'public URL shortener'"
        ), text
    for text in ("bitxly/x", "rabbit.ly/x", "bit.ly", "Hello"):
        assert rules.check(text, None, LONG, "US") is PASSED, text


def test_a_flagging_rule_lets_the_message_through_and_says_so() -> None:
    rules = compile_content_rules(
        [rule("crypto", r"(?i)\bcrypto", "flag"), rule("loan", r"(?i)\bloan", "flag")]
    )
    assert rules.check("Crypto loan offer", None, LONG, "US") == ContentVerdict(
        None, ("crypto", "loan")
    )
    assert rules.check("a loan", None, LONG, "US") == ContentVerdict(None, ("loan",))
    assert rules.check("nothing", None, LONG, "US") is PASSED


def test_the_first_blocking_rule_in_config_order_wins_and_a_block_carries_no_flags() -> None:
    rules = compile_content_rules(
        [
            rule("watch", "win", "flag"),
            rule("prize", "prize", "block"),
            rule("winner", "winner", "block"),
        ]
    )
    verdict = rules.check("winner of a prize", None, LONG, "US")
    assert verdict.blocked == "prize" and verdict.flagged == ()
    assert rules.check("a winner", None, LONG, "US").blocked == "winner"
    assert rules.check("you win", None, LONG, "US") == ContentVerdict(None, ("watch",))


def test_kinds_scope_and_a_message_without_a_kind_is_transactional() -> None:
    rules = compile_content_rules(
        [
            rule("promo only", "offer", kinds=frozenset({"promotional"})),
            rule("transactional only", "code", "flag", kinds=frozenset({"transactional"})),
        ]
    )
    assert rules.check("offer", "promotional", LONG, "US").blocked == "promo only"
    assert rules.check("offer", "transactional", LONG, "US") is PASSED
    assert rules.check("offer", None, LONG, "US") is PASSED
    assert rules.check("code", None, LONG, "US").flagged == ("transactional only",)
    assert rules.check("code", "transactional", LONG, "US").flagged == ("transactional only",)
    assert rules.check("code", "promotional", LONG, "US") is PASSED


def test_sender_types_scope() -> None:
    rules = compile_content_rules(
        [rule("brand", "bank", sender_types=frozenset({"alphanumeric", "short_code"}))]
    )
    assert rules.check("your bank", None, ALNUM, "GB").blocked == "brand"
    assert rules.check("your bank", None, SHORT, "GB").blocked == "brand"
    assert rules.check("your bank", None, LONG, "GB") is PASSED
    assert rules.check("your bank", None, TOLL_FREE, "GB") is PASSED


def test_countries_scope_and_an_unknown_country_is_outside_it() -> None:
    rules = compile_content_rules([rule("gambling", "(?i)casino", countries=frozenset({"gb"}))])
    assert rules.check("Casino night", None, LONG, "GB").blocked == "gambling"
    assert rules.check("Casino night", None, LONG, "US") is PASSED
    assert rules.check("Casino night", None, LONG, None) is PASSED
    assert rules.rules[0].countries == frozenset({"GB"})  # normalised at load


def test_an_unscoped_rule_applies_to_every_message() -> None:
    rules = compile_content_rules([rule("any", "x")])
    for kind in ("promotional", "transactional", None):
        for sender_type in (LONG, SHORT, ALNUM):
            for country in ("US", "GB", None):
                assert rules.check("x", kind, sender_type, country).blocked == "any"


def test_texts_are_matched_as_unicode() -> None:
    rules = compile_content_rules(
        [rule("free", "(?i)бесплатно|gratuit"), rule("emoji", "💰+", "flag")]
    )
    assert rules.check("Это БЕСПЛАТНО", None, LONG, "RU").blocked == "free"
    assert rules.check("C'est Gratuit", None, LONG, "FR").blocked == "free"
    assert rules.check("cash 💰💰", None, LONG, "US").flagged == ("emoji",)
    # A lone surrogate (a broken UCS-2 pair) is checked, not an error.
    assert rules.check("gratuit \ud83d", None, LONG, "FR").blocked == "free"
    assert rules.check("\udc00", None, LONG, "FR") is PASSED


def test_a_backtracking_pattern_runs_in_linear_time() -> None:
    # `(a+)+$` on "aaa...ab" takes exponential time in a backtracking engine
    # (Python's re would not finish); RE2 reads the text once.
    rules = compile_content_rules([rule("nested", r"(a+)+$"), rule("alt", r"(a|aa)+$", "flag")])
    assert rules.check("a" * 100_000 + "b", None, LONG, "US") is PASSED
    assert rules.check("a" * 100_000, None, LONG, "US").blocked == "nested"


# -- what cannot be loaded ----------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", "invalid escape sequence"),  # a backreference
        (r"a(?=b)", "invalid perl operator"),  # look-ahead
        (r"(?<!a)b", "invalid perl operator"),  # look-behind
        (r"[a-", "missing ]"),
        (r"a{2000}", "invalid repetition size"),
    ],
)
def test_a_pattern_the_engine_cannot_run_is_refused_with_its_index(
    pattern: str, reason: str
) -> None:
    with pytest.raises(ContentRuleError) as caught:
        compile_content_rules([SHORTENER, rule("fine", "ok"), rule("bad", pattern)])
    assert caught.value.index == 2 and caught.value.field == "pattern"
    assert reason in caught.value.detail
    assert str(caught.value).startswith("content_rules[2].pattern: not a pattern the linear-time")


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (rule("", "x"), "name", "needs a name"),
        (rule("public URL shortener", "x"), "name", "two rules are named"),
        (rule("r", "x", "drop"), "action", "'block' or 'flag', not 'drop'"),
        (rule("r", ""), "pattern", "empty pattern"),
        (rule("r", "x", kinds=frozenset({"marketing"})), "kinds", "unknown kind"),
        (rule("r", "x", sender_types=frozenset({"landline"})), "sender_types", "unknown sender"),
        (rule("r", "x", countries=frozenset({"USA"})), "countries", "ISO 3166"),
    ],
)
def test_a_rule_with_a_bad_field_is_refused_naming_the_field(
    bad: ContentRule, field: str, words: str
) -> None:
    with pytest.raises(ContentRuleError) as caught:
        compile_content_rules([SHORTENER, bad])
    assert (caught.value.index, caught.value.field) == (1, field)
    assert words in caught.value.detail
    assert str(caught.value).startswith(f"content_rules[1].{field}: ")


def test_a_content_rule_error_is_a_value_error() -> None:
    assert issubclass(ContentRuleError, ValueError)
    assert str(ContentRuleError(None, "too big")) == "content_rules: too big"


# -- one pass for all rules gives what each rule alone gives ------------------

PATTERNS = [
    r"(?i)\b(bit\.ly|tinyurl\.com)/",
    r"\d{4,8}",
    r"^STOP",
    r"end$",
    r"(?i)free\s+money",
    r"[€$£]\s?\d+",
    r"(a+)+b",
    r"x.y",
]
_NAMES = [f"r{i}" for i in range(len(PATTERNS))]
_ALL_FLAGGING = compile_content_rules(
    [rule(name, pattern, "flag") for name, pattern in zip(_NAMES, PATTERNS, strict=True)]
)


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("abxyAB .:/$€£0123456789lytinurcomSTOPendFREmoy\n")),
        max_size=60,
    )
)
def test_the_set_matches_exactly_the_rules_that_search_alone_matches(text: str) -> None:
    expected = tuple(
        name for name, pattern in zip(_NAMES, PATTERNS, strict=True) if re2.search(pattern, text)
    )
    verdict = _ALL_FLAGGING.check(text, None, LONG, "US")
    assert verdict.flagged == expected
    assert verdict.blocked is None


def test_the_known_texts_match_as_each_pattern_alone_would() -> None:
    # The property above, on texts that surely hit each pattern.
    for text, names in [
        ("see bit.ly/q", ("r0",)),
        ("code 123456", ("r1",)),
        ("STOP now", ("r2",)),
        ("the end", ("r3",)),
        ("FREE  money", ("r4",)),
        ("pay € 5", ("r5",)),
        ("aaab", ("r6",)),
        ("x:y", ("r7",)),
        ("STOP 1234 x y end", ("r1", "r2", "r3", "r7")),
    ]:
        assert _ALL_FLAGGING.check(text, None, LONG, "US").flagged == names, text
