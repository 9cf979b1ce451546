"""Message templates (CONTRACT §6 "Templates"): parsing, rendering and the
SMPP matcher (variables as bounded wildcards, on RE2)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrouter.router.templates import (
    MAX_PLACEHOLDERS,
    MAX_TEXT,
    MAX_VALUE,
    ParamProblem,
    ParamsError,
    Template,
    TemplateMatcher,
    parse_template,
    render,
    template_of,
)

OTP = template_of("tpl_otp", "otp", "Your code is {code}. It expires in {minutes} minutes.", None)
SHIP = template_of("tpl_ship", "ship", "Hi {name}, order {order} ships {day}.", "transactional")


# -- parsing -------------------------------------------------------------------


def test_a_text_splits_into_literals_and_placeholder_names() -> None:
    assert parse_template("Your code is {code}") == (("Your code is ", ""), ("code",))
    assert parse_template("{a}{b}") == (("", "", ""), ("a", "b"))
    assert parse_template("no placeholders") == (("no placeholders",), ())
    assert parse_template("{x} and {x}") == (("", " and ", ""), ("x", "x"))
    assert parse_template("{_private9}!") == (("", "!"), ("_private9",))


def test_doubled_braces_are_literal_braces() -> None:
    assert parse_template("{{not a placeholder}}") == (("{not a placeholder}",), ())
    assert parse_template("a {{{b}}} c") == (("a {", "} c"), ("b",))
    assert parse_template("}}{{") == (("}{",), ())


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("x" * (MAX_TEXT + 1), f"at most {MAX_TEXT}"),
        ("code {code", "'{' at position 5 is not closed"),
        ("code } here", "'}' at position 5 closes no placeholder"),
        ("{}", "placeholder {} at position 0"),
        ("{Code}", "placeholder {Code}"),
        ("{9lives}", "placeholder {9lives}"),
        ("{a-b}", "placeholder {a-b}"),
        ("{a b}", "placeholder {a b}"),
        ("{" + "a" * 33 + "}", "1 to 32"),
        ("{é}", "placeholder {é}"),
        ("x {a{b}", "placeholder {a{b}"),
        ("".join(f"{{p{i}}}" for i in range(MAX_PLACEHOLDERS + 1)), "more than 20 placeholders"),
        ("a\ud800b", "lone surrogate at position 1"),
    ],
)
def test_a_bad_text_is_refused_naming_the_problem(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_template(text)


def test_the_limits_themselves_are_admitted() -> None:
    parse_template("x" * MAX_TEXT)
    parse_template("".join(f"{{p{i}}}" for i in range(MAX_PLACEHOLDERS)))
    parse_template("{" + "a" * 32 + "}")


# -- rendering -----------------------------------------------------------------


def test_render_fills_every_placeholder() -> None:
    assert render(OTP, {"code": "123456", "minutes": 10}) == (
        "Your code is 123456. It expires in 10 minutes."
    )
    twice = template_of("t", "t", "{x}-{x}", None)
    assert render(twice, {"x": "ab"}) == "ab-ab"
    assert render(template_of("t", "t", "plain", None), {}) == "plain"
    assert render(template_of("t", "t", "{{{v}}}", None), {"v": "{x}"}) == "{{x}}"


def _problems(template: Template, params: dict[str, object]) -> list[ParamProblem]:
    with pytest.raises(ParamsError) as raised:
        render(template, params)
    return raised.value.problems


def test_a_missing_parameter_is_named() -> None:
    assert _problems(OTP, {"code": "1"}) == [
        ParamProblem("minutes", "required", "the template needs {minutes}")
    ]


def test_an_unknown_parameter_is_named() -> None:
    problems = _problems(OTP, {"code": "1", "minutes": "2", "coupon": "X"})
    assert problems == [ParamProblem("coupon", "unknown", "the template has no such placeholder")]


def test_every_bad_parameter_is_named_at_once() -> None:
    problems = _problems(SHIP, {"name": "", "order": "x" * (MAX_VALUE + 1), "extra": 1})
    assert [(p.name, p.code) for p in problems] == [
        ("day", "required"),
        ("name", "invalid"),
        ("order", "too_long"),
        ("extra", "unknown"),
    ]
    assert "ParamsError" not in str(ParamsError(problems))
    assert "day: the template needs {day}" in str(ParamsError(problems))


@pytest.mark.parametrize("value", [True, 1.5, None, ["1"], {"a": 1}])
def test_a_value_is_a_string_or_a_whole_number(value: object) -> None:
    assert _problems(OTP, {"code": value, "minutes": 1}) == [
        ParamProblem("code", "invalid", "a string or a whole number")
    ]


def test_a_value_of_the_longest_length_passes() -> None:
    text = render(OTP, {"code": "9" * MAX_VALUE, "minutes": "1"})
    assert "9" * MAX_VALUE in text


# -- matching --------------------------------------------------------------------


def test_a_rendered_text_matches_its_template() -> None:
    matcher = TemplateMatcher([OTP, SHIP])
    assert len(matcher) == 2
    assert matcher.match("Your code is 123456. It expires in 10 minutes.") is OTP
    assert matcher.match("Hi Ann, order 77 ships Monday.") is SHIP


@pytest.mark.parametrize(
    "text",
    [
        "Your code is 123456. It expires in 10 minutes",  # the final "." missing
        "Your code is 123456. It expires in 10 minutes. Buy now!",  # text added
        "Sale! Your code is 123456. It expires in 10 minutes.",  # text before
        "Your code is . It expires in 10 minutes.",  # an empty variable
        "your code is 123456. It expires in 10 minutes.",  # case differs
        "Your code is 123456.  It expires in 10 minutes.",  # whitespace differs
        "Your code is {code}. It expires in {minutes}",  # the template itself, cut
        "",
    ],
)
def test_a_text_that_is_not_a_filling_does_not_match(text: str) -> None:
    assert TemplateMatcher([OTP, SHIP]).match(text) is None


def test_a_variable_stands_for_one_to_max_value_characters() -> None:
    matcher = TemplateMatcher([OTP])
    for length in (1, 2, MAX_VALUE - 1, MAX_VALUE):
        assert matcher.match(render(OTP, {"code": "7" * length, "minutes": "5"})) is OTP
    too_long = f"Your code is {'7' * (MAX_VALUE + 1)}. It expires in 5 minutes."
    assert matcher.match(too_long) is None


def test_a_variable_counts_characters_not_bytes() -> None:
    matcher = TemplateMatcher([OTP])
    assert matcher.match(f"Your code is {'é' * MAX_VALUE}. It expires in 5 minutes.") is OTP
    assert matcher.match(f"Your code is {'😀' * MAX_VALUE}. It expires in 5 minutes.") is OTP
    assert matcher.match(f"Your code is {'é' * (MAX_VALUE + 1)}. It expires in 5 minutes.") is None


def test_a_variable_may_hold_newlines_and_the_literals_characters() -> None:
    matcher = TemplateMatcher([OTP])
    assert matcher.match("Your code is 1\n2. It expires in . 5 minutes.") is OTP


def test_regex_characters_in_a_literal_are_literal() -> None:
    tricky = template_of("t", "t", "Price: $5.00 (a+)+ [x] ^{v}$ \\d* | {{ok}}\n\tend", None)
    matcher = TemplateMatcher([tricky])
    assert matcher.match("Price: $5.00 (a+)+ [x] ^yes$ \\d* | {ok}\n\tend") is tricky
    assert matcher.match("Price: $5X00 (a+)+ [x] ^yes$ \\d* | {ok}\n\tend") is None
    assert matcher.match("Price: $5.00 (aa)+ [x] ^yes$ \\d* | {ok}\n\tend") is None
    assert matcher.match("Price: $5.00 (a+)+ [x] ^yes$ 5 | {ok}\n\tend") is None


def test_non_ascii_literals_match_exactly() -> None:
    t = template_of("t", "t", "Código {c}: válido 😀 لمدة", None)
    matcher = TemplateMatcher([t])
    assert matcher.match("Código 12: válido 😀 لمدة") is t
    assert matcher.match("Codigo 12: valido 😀 لمدة") is None


def test_a_lone_surrogate_is_a_character_not_an_error() -> None:
    # UCS-2 from an ESME may hold half of a pair; the literals still count.
    matcher = TemplateMatcher([OTP])
    assert matcher.match("Your code is \ud800. It expires in 5 minutes.") is OTP
    assert matcher.match("Your code is \ud800. It expires in 5 minutes!") is None


def test_a_template_without_placeholders_matches_only_itself() -> None:
    t = template_of("t", "t", "Your parcel has shipped.", None)
    matcher = TemplateMatcher([t])
    assert matcher.match("Your parcel has shipped.") is t
    assert matcher.match("Your parcel has shipped!") is None


def test_adjacent_placeholders_each_take_at_least_one_character() -> None:
    t = template_of("t", "t", "{a}{b}", None)
    matcher = TemplateMatcher([t])
    assert matcher.match("x") is None
    assert matcher.match("xy") is t
    assert matcher.match("x" * (2 * MAX_VALUE)) is t
    assert matcher.match("x" * (2 * MAX_VALUE + 1)) is None


def test_the_first_template_in_order_that_matches_is_named() -> None:
    general = template_of("t1", "general", "Hi {name}!", None)
    specific = template_of("t2", "specific", "Hi Ann!", None)
    assert TemplateMatcher([general, specific]).match("Hi Ann!") is general
    assert TemplateMatcher([specific, general]).match("Hi Ann!") is specific


def test_a_template_whose_bounds_fail_gives_way_to_one_whose_pass() -> None:
    # Both admit the text as `.+` patterns; only the second within bounds.
    tight = template_of("t1", "tight", "A{v}B", None)
    loose = template_of("t2", "loose", "A{v}{w}B", None)
    text = "A" + "x" * (MAX_VALUE + 5) + "B"
    assert TemplateMatcher([tight, loose]).match(text) is loose


def test_no_templates_match_nothing() -> None:
    matcher = TemplateMatcher([])
    assert len(matcher) == 0
    assert matcher.match("anything") is None
    assert matcher.match("") is None


def test_many_templates_in_one_matcher() -> None:
    templates = [
        template_of(f"t{i}", f"n{i}", f"Hello {{name}}, order {i} ships {{day}}.", None)
        for i in range(1000)
    ]
    matcher = TemplateMatcher(templates)
    assert matcher.match("Hello Bob, order 500 ships Monday.") is templates[500]
    assert matcher.match("Hello Bob, order 1000 ships Monday.") is None


def test_a_backtracking_trap_is_linear() -> None:
    # Many variables separated by one repeated character: a backtracking
    # matcher tries exponentially many splits of a text that almost fits.
    t = template_of("t", "t", "a".join(f"{{v{i}}}" for i in range(MAX_PLACEHOLDERS)) + "b", None)
    matcher = TemplateMatcher([t])
    assert matcher.match("a" * 2000 + "c") is None
    assert matcher.match("a" * 39 + "b") is t


_names = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True)
_literal = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_value = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=MAX_VALUE)


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_literal, _names), max_size=6),
    _literal,
    st.data(),
)
def test_any_rendering_matches_and_parses_back(
    pieces: list[tuple[str, str]], last: str, data: st.DataObject
) -> None:
    text = "".join(_escape(lit) + "{" + name + "}" for lit, name in pieces) + _escape(last)
    if not text:
        return
    t = template_of("t", "t", text, None)
    assert t.literals == (*(lit for lit, _ in pieces), last)
    assert t.params == tuple(name for _, name in pieces)
    params = {name: data.draw(_value) for name in t.names}
    assert TemplateMatcher([t]).match(render(t, params)) is t
