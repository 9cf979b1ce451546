"""Message templates (CONTRACT §6 "Templates"): texts with `{name}`
placeholders that an operator approves before an account may send them.

Three things are done with a template's text, all pure:

- `parse_template` reads it: literal parts and placeholder names, `{{`
  and `}}` standing for literal braces. A text that is not a template
  (an unclosed brace, a bad name, too long, too many placeholders) is a
  ValueError naming the problem, so that the API can say what to fix.
- `render` fills it with a request's params (`POST /v1/messages`
  `"template"` and `"params"`): a missing or unknown parameter, or a value
  out of bounds, is a `ParamsError` naming each one.
- `TemplateMatcher` tells whether an SMPP short_message is one of an
  account's approved templates with its variables filled, the way India's
  DLT scrubbing does: the literal parts must be there exactly and each
  variable stands for 1 to MAX_VALUE characters. One matcher is built per
  account when its approved templates change, not per message: all of
  them go into one RE2 set (google-re2), whose automaton reads the text
  once for every template, in time linear in the text, whatever the
  templates say. In the set a variable is any 1 or more characters: a
  counted repetition `.{1,100}` is 100 copies of a UTF-8 automaton, and
  200 long templates took 2.4 s and 400 MB to compile that way against
  0.14 s and nothing measurable as `.+`. The few templates the set names
  are then checked with their bounds by a regular expression of their
  own, compiled the first time the template is matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import re2

__all__ = [
    "MAX_NAME",
    "MAX_PLACEHOLDERS",
    "MAX_TEXT",
    "MAX_VALUE",
    "ParamProblem",
    "ParamsError",
    "Template",
    "TemplateMatcher",
    "parse_template",
    "render",
    "template_of",
]

# Twilio's limit on a message body (router/admission.py MAX_PARTS), and so
# the longest text a template may be.
MAX_TEXT = 1600
MAX_PLACEHOLDERS = 20
# CONTRACT §6: "params bounded in length"; DLT variables are at most 30
# characters, we admit more (names, addresses), and a variable of the
# SMPP matcher stands for 1 to this many characters.
MAX_VALUE = 100
MAX_NAME = 32
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,31}", re.ASCII)

# What one variable stands for: in the set, any 1 or more characters
# (newlines included); in the check of a template the set names, 1 to
# MAX_VALUE of them.
_ANY = "(?s:.+)"
_BOUNDED = f"(?s:.{{1,{MAX_VALUE}}})"
# The budget of one account's compiled set (content.py: MAX_MEMORY). A
# template of 1,600 characters and 20 variables takes about 0.4 MiB.
MAX_MEMORY = 256 << 20


@dataclass(frozen=True, slots=True)
class Template:
    """An approved template as the router holds it: `literals` are the text
    between the placeholders (one more than `params`), `params` the
    placeholder names in the order they appear (a name may repeat)."""

    id: str
    name: str
    text: str
    kind: str | None
    literals: tuple[str, ...]
    params: tuple[str, ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.params)


def parse_template(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(literals, placeholder names) of a template's text; ValueError saying
    what is wrong and where (a position counts characters from 0)."""
    if not text:
        raise ValueError("the text is empty")
    if len(text) > MAX_TEXT:
        raise ValueError(f"{len(text)} characters; at most {MAX_TEXT}")
    literals: list[str] = []
    names: list[str] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        # Compared as a code point: mypyc refuses surrogates in literals.
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise ValueError(f"a lone surrogate at position {i} is not text")
        if ch == "{" and text.startswith("{{", i):
            literal.append("{")
            i += 2
        elif ch == "}" and text.startswith("}}", i):
            literal.append("}")
            i += 2
        elif ch == "}":
            raise ValueError(
                f"'}}' at position {i} closes no placeholder (write '}}}}' for a brace)"
            )
        elif ch == "{":
            end = text.find("}", i + 1)
            if end < 0:
                raise ValueError(f"'{{' at position {i} is not closed (write '{{{{' for a brace)")
            name = text[i + 1 : end]
            if not _NAME.fullmatch(name):
                raise ValueError(
                    f"placeholder {{{name}}} at position {i}: a name is 1 to {MAX_NAME} of"
                    " a-z, 0-9 and _, not starting with a digit"
                )
            names.append(name)
            if len(names) > MAX_PLACEHOLDERS:
                raise ValueError(f"more than {MAX_PLACEHOLDERS} placeholders")
            literals.append("".join(literal))
            literal = []
            i = end + 1
        else:
            literal.append(ch)
            i += 1
    literals.append("".join(literal))
    return tuple(literals), tuple(names)


def template_of(template_id: str, name: str, text: str, kind: str | None) -> Template:
    """A stored template ready to render and match (its text was checked
    when it was created; ValueError if it is not a template after all)."""
    literals, params = parse_template(text)
    return Template(template_id, name, text, kind, literals, params)


@dataclass(frozen=True, slots=True)
class ParamProblem:
    """One bad parameter: its name, a stable code, a detail for people."""

    name: str
    code: str  # "required" | "unknown" | "invalid" | "too_long"
    detail: str


class ParamsError(ValueError):
    """The params do not fill the template; `problems` names each bad one."""

    def __init__(self, problems: list[ParamProblem]) -> None:
        super().__init__("; ".join(f"{p.name}: {p.detail}" for p in problems))
        self.problems = problems


def _value_text(value: Any) -> str | None:
    """A parameter's value as text: a string, or a whole number (a code sent
    as a JSON number); None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def render(template: Template, params: Mapping[str, Any]) -> str:
    """The template's text with each placeholder replaced by its param.

    Every placeholder needs a value of 1 to MAX_VALUE characters (the
    bounds the SMPP matcher admits too, so that a text rendered here would
    also pass as a short_message), and no param may be one the template
    lacks. ParamsError names every one that is wrong.
    """
    problems: list[ParamProblem] = []
    names = template.names
    values: dict[str, str] = {}
    for name in sorted(names):
        if name not in params:
            problems.append(ParamProblem(name, "required", f"the template needs {{{name}}}"))
            continue
        value = _value_text(params[name])
        if value is None:
            problems.append(ParamProblem(name, "invalid", "a string or a whole number"))
        elif not value:
            problems.append(ParamProblem(name, "invalid", "must not be empty"))
        elif len(value) > MAX_VALUE:
            problems.append(
                ParamProblem(name, "too_long", f"{len(value)} characters; at most {MAX_VALUE}")
            )
        else:
            values[name] = value
    for name in sorted(set(params) - names):
        problems.append(ParamProblem(name, "unknown", "the template has no such placeholder"))
    if problems:
        raise ParamsError(problems)
    out = [template.literals[0]]
    for name, literal in zip(template.params, template.literals[1:], strict=True):
        out.append(values[name])
        out.append(literal)
    return "".join(out)


def _escaped(literal: str) -> str:
    """A literal as an RE2 pattern matching exactly it: letters and digits
    as they are, every other character by its code point."""
    return "".join(ch if ch.isascii() and ch.isalnum() else f"\\x{{{ord(ch):X}}}" for ch in literal)


def _pattern(template: Template, variable: str) -> str:
    return variable.join(_escaped(literal) for literal in template.literals)


def _options() -> Any:
    options = re2.Options()
    options.max_mem = MAX_MEMORY
    options.log_errors = False
    options.never_capture = True  # only which template matched counts
    return options


class TemplateMatcher:
    """Does a text match one of these templates, variables filled?

    Built once per account from its approved templates (router/accounts.py
    keeps it while they stay the same); `match` runs per SMPP message.
    ValueError when the templates together do not fit the engine's memory.
    """

    __slots__ = ("_bounded", "_set", "_templates")

    def __init__(self, templates: Iterable[Template]) -> None:
        self._templates = tuple(templates)
        self._set: Any = None
        # Per template, its pattern with bounded variables once compiled.
        self._bounded: list[Any] = [None] * len(self._templates)
        if not self._templates:
            return
        matcher = re2.Set.FullMatchSet(_options())
        for template in self._templates:
            try:
                matcher.Add(_pattern(template, _ANY))
            except re2.error as exc:
                raise ValueError(f"template {template.id}: {exc}") from None
        try:
            matcher.Compile()
        except re2.error:
            raise ValueError(
                f"{len(self._templates)} templates together need more than {MAX_MEMORY >> 20} MiB"
            ) from None
        self._set = matcher

    def __len__(self) -> int:
        return len(self._templates)

    def match(self, text: str) -> Template | None:
        """The first template (in the order given) the whole text is a
        filling of, or None."""
        if self._set is None:
            return None
        # "surrogatepass": a lone surrogate is invalid UTF-8 to RE2, which
        # no literal and no variable matches, not an error.
        data = text.encode("utf-8", "surrogatepass")
        found = self._set.Match(data)
        if not found:
            return None
        for index in sorted(found):
            bounded = self._bounded[index]
            if bounded is None:
                bounded = re2.compile(_pattern(self._templates[index], _BOUNDED), _options())
                self._bounded[index] = bounded
            if bounded.fullmatch(data) is not None:
                return self._templates[index]
        return None
