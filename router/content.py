"""Content rules (CONTRACT §6 "Content"): what a message's text may say.

Two kinds of rule run on every message. Built in: a promotional message
from a toll-free number is refused, since US carriers admit toll-free
numbers for conversational and transactional traffic and suspend those
that send marketing. Then the operator's `[[content_rules]]`: a regular
expression with an action ("block" refuses `content_blocked` naming the
rule, "flag" counts it and lets the message through), optionally scoped by
kind, sender type and destination country.

Operator patterns run on customer text, so a pattern that backtracks (a
nested quantifier such as `(a+)+$` on "aaa...b") must not stall the event
loop: they run on RE2 (the `google-re2` package), whose automata take time
linear in the text, and a pattern RE2 cannot run in linear time
(backreferences, look-around) is refused when the config is loaded. All
patterns go into one `re2.Set`, which reads the text once for all rules
rather than once per rule.

Pure: admission passes the text, the kind, the sender's number type and
the destination country.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import re2

from smsrouter.router.sender_ids import country_code
from smsrouter.router.senders import NumberType

__all__ = [
    "ACTIONS",
    "BLOCK",
    "CONTENT_BLOCKED",
    "DEFAULT_KIND",
    "FLAG",
    "KINDS",
    "PASSED",
    "PROMOTIONAL",
    "TOLL_FREE_PROMOTIONAL",
    "TRANSACTIONAL",
    "ContentRule",
    "ContentRuleError",
    "ContentRules",
    "ContentVerdict",
    "compile_content_rules",
]

# The stable refusal code (CONTRACT §6; SMPP 0x65, ESME_RX_R_APPN).
CONTENT_BLOCKED = "content_blocked"

BLOCK = "block"
FLAG = "flag"
ACTIONS = (BLOCK, FLAG)

# CONTRACT §3: a message's "kind"; one sent without one is transactional.
TRANSACTIONAL = "transactional"
PROMOTIONAL = "promotional"
KINDS = (TRANSACTIONAL, PROMOTIONAL)
DEFAULT_KIND = TRANSACTIONAL

# The name the built-in rule blocks under (ContentVerdict.blocked).
TOLL_FREE_PROMOTIONAL = "promotional from toll-free"

# The memory budget of the rules' compiled program and of its DFA's state
# cache, which RE2 fills on demand and flushes when full (8 MiB is RE2's
# default for one pattern). An RE2::Set has no slower engine to fall back
# on, so RE2 tries its DFA when the set is compiled: a set that cannot work
# within the budget fails then, at load time, and once compiled it never
# gives up on a text (it flushes its cache and goes on, still linear).
MAX_MEMORY = 64 << 20


@dataclass(frozen=True, slots=True)
class ContentRule:
    """One `[[content_rules]]` entry. An empty scope set means "all"."""

    name: str
    pattern: str
    action: str  # BLOCK | FLAG
    kinds: frozenset[str] = frozenset()
    sender_types: frozenset[str] = frozenset()  # NumberType values
    countries: frozenset[str] = frozenset()  # ISO 3166 alpha-2, upper case

    def applies_to(self, kind: str, sender_type: str, country: str | None) -> bool:
        """Is a message of this kind, from this type of sender, to this
        country within the rule's scope?"""
        if self.kinds and kind not in self.kinds:
            return False
        if self.sender_types and sender_type not in self.sender_types:
            return False
        return not self.countries or (country is not None and country in self.countries)


@dataclass(frozen=True, slots=True)
class ContentVerdict:
    """What the content rules say about one message.

    `blocked` is the name of the rule that refuses it (or
    TOLL_FREE_PROMOTIONAL), None if none does; `flagged` the names of the
    flagging rules that matched a message let through (a blocked message is
    refused, not flagged); `detail` is the refusal's text for the customer.
    """

    blocked: str | None = None
    flagged: tuple[str, ...] = ()
    detail: str = ""


# Most messages: nothing matched. One shared answer, nothing made per message.
PASSED = ContentVerdict()

_TOLL_FREE_BLOCK = ContentVerdict(
    TOLL_FREE_PROMOTIONAL,
    detail="promotional messages may not be sent from a toll-free number",
)


class ContentRuleError(ValueError):
    """A `[[content_rules]]` entry that cannot be used: its index in the
    list (None when only the rules together fail), the field at fault, and
    why, so that check-config can name the key (``content_rules[2].pattern``)."""

    def __init__(self, index: int | None, detail: str, field: str = "pattern") -> None:
        where = "content_rules" if index is None else f"content_rules[{index}].{field}"
        super().__init__(f"{where}: {detail}")
        self.index = index
        self.detail = detail
        self.field = field


def _options() -> Any:
    options = re2.Options()
    options.max_mem = MAX_MEMORY
    # A bad pattern is reported as ContentRuleError, not printed to stderr.
    options.log_errors = False
    # Only whether a rule matched counts, not where.
    options.never_capture = True
    return options


def _engine_error(exc: Exception) -> str:
    # The binding's error text is RE2's, as bytes.
    reason = exc.args[0] if exc.args else ""
    if isinstance(reason, bytes):
        return reason.decode("utf-8", "replace")
    return str(reason)


def _checked(index: int, rule: ContentRule, names: set[str]) -> ContentRule:
    """The rule with its scope normalised; ContentRuleError if a field is bad."""
    if not rule.name:
        raise ContentRuleError(
            index, "a rule needs a name (it labels refusals and metrics)", "name"
        )
    if rule.name in names:
        raise ContentRuleError(index, f"two rules are named {rule.name!r}", "name")
    if rule.action not in ACTIONS:
        raise ContentRuleError(index, f"must be 'block' or 'flag', not {rule.action!r}", "action")
    if not rule.pattern:
        raise ContentRuleError(index, "an empty pattern matches every text", "pattern")
    unknown = sorted(k for k in rule.kinds if k not in KINDS)
    if unknown:
        raise ContentRuleError(index, f"unknown kind(s) {unknown}; kinds are {KINDS}", "kinds")
    types = tuple(t.value for t in NumberType)
    unknown = sorted(t for t in rule.sender_types if t not in types)
    if unknown:
        raise ContentRuleError(
            index, f"unknown sender type(s) {unknown}; types are {types}", "sender_types"
        )
    try:
        countries = frozenset(country_code(c) for c in rule.countries)
    except ValueError as bad_country:
        raise ContentRuleError(index, str(bad_country), "countries") from None
    try:
        re2.compile(rule.pattern, _options())
    except re2.error as exc:
        raise ContentRuleError(
            index, f"not a pattern the linear-time engine (RE2) runs: {_engine_error(exc)}"
        ) from None
    return replace(rule, countries=countries)


def compile_content_rules(rules: Iterable[ContentRule]) -> ContentRules:
    """The rules ready to run; ContentRuleError for the first bad one."""
    checked: list[ContentRule] = []
    names: set[str] = set()
    for index, rule in enumerate(rules):
        checked.append(_checked(index, rule, names))
        names.add(rule.name)
    if not checked:
        return ContentRules((), None)
    matcher = re2.Set.SearchSet(_options())
    for index, rule in enumerate(checked):
        try:
            matcher.Add(rule.pattern)
        except re2.error as exc:
            raise ContentRuleError(index, _engine_error(exc)) from None
    try:
        matcher.Compile()
    except re2.error:
        raise ContentRuleError(
            None,
            f"the {len(checked)} patterns together need more than the engine's"
            f" {MAX_MEMORY >> 20} MiB",
        ) from None
    return ContentRules(tuple(checked), matcher)


class ContentRules:
    """The compiled `[[content_rules]]` and the built-in rule.

    Made by `compile_content_rules` once per config; `check` runs on every
    message.
    """

    __slots__ = ("_matcher", "_rules")

    def __init__(self, rules: tuple[ContentRule, ...], matcher: Any) -> None:
        self._rules = rules
        self._matcher = matcher  # a compiled re2.Set of the rules' patterns, in order

    @property
    def rules(self) -> tuple[ContentRule, ...]:
        return self._rules

    def check(
        self, text: str, kind: str | None, sender_type: NumberType, country: str | None
    ) -> ContentVerdict:
        """The verdict on one message: blocked (first blocking rule in config
        order), flagged, or PASSED.

        `kind` None is the API's default, transactional; `country` is the
        destination's ISO 3166 code (None when unknown: country-scoped rules
        do not apply then).
        """
        if kind == PROMOTIONAL and sender_type == NumberType.TOLL_FREE:
            return _TOLL_FREE_BLOCK
        if self._matcher is None:
            return PASSED
        # "surrogatepass": a lone surrogate is no reason to fail the check;
        # RE2 reads its bytes as invalid UTF-8, which no rule's text matches.
        matched = self._matcher.Match(text.encode("utf-8", "surrogatepass"))
        if not matched:
            return PASSED
        return self._verdict(sorted(matched), kind or DEFAULT_KIND, sender_type.value, country)

    def _verdict(
        self, matched: list[int], kind: str, sender_type: str, country: str | None
    ) -> ContentVerdict:
        flagged: list[str] = []
        for index in matched:
            rule = self._rules[index]
            if not rule.applies_to(kind, sender_type, country):
                continue
            if rule.action == BLOCK:
                return ContentVerdict(rule.name, (), f"blocked by content rule {rule.name!r}")
            flagged.append(rule.name)
        return ContentVerdict(None, tuple(flagged)) if flagged else PASSED
