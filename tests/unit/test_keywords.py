"""MO keywords (CONTRACT §6 "Opt-out"): the lists, whole text only, any case,
trimmed, inner whitespace collapsed; and the default replies."""

from __future__ import annotations

import pytest

from smsrouter.router.keywords import HELP, OPT_IN, OPT_OUT, default_reply, keyword_of
from smsrouter.sms.text import Encoding, part_count

OPT_OUT_WORDS = [
    "STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT",
    "OPT-OUT", "REVOKE", "ARRET", "ARRÊT",
]  # fmt: skip
OPT_IN_WORDS = ["START", "UNSTOP", "YES"]
HELP_WORDS = ["HELP", "INFO"]


@pytest.mark.parametrize(
    ("text", "keyword"),
    [(w, OPT_OUT) for w in OPT_OUT_WORDS]
    + [(w, OPT_IN) for w in OPT_IN_WORDS]
    + [(w, HELP) for w in HELP_WORDS],
)
def test_every_keyword_of_the_lists(text: str, keyword: str) -> None:
    assert keyword_of(text) == keyword
    assert keyword_of(text.lower()) == keyword
    assert keyword_of(text.title()) == keyword


@pytest.mark.parametrize(
    "text",
    ["stop", "Stop", "sToP", "  STOP", "STOP  ", "\tstop\n", "\u00a0STOP\u00a0", "stop\r\n"],
)
def test_any_case_and_trimmed(text: str) -> None:
    assert keyword_of(text) == OPT_OUT


@pytest.mark.parametrize("text", ["stop all", "STOP  ALL", " Stop\tAll ", "stop \n all"])
def test_inner_whitespace_collapses(text: str) -> None:
    assert keyword_of(text) == OPT_OUT


def test_arret_with_its_accent_in_either_unicode_form() -> None:
    assert keyword_of("arrêt") == OPT_OUT
    assert keyword_of("ARRE\u0302T") == OPT_OUT  # E + combining circumflex
    assert keyword_of("Arrêt ") == OPT_OUT


@pytest.mark.parametrize(
    "text",
    [
        "stop it",
        "please stop",
        "STOP!",
        "STOP.",
        "stop?",
        "'STOP'",
        "S T O P",
        "STOPP",
        "STO",
        "opt out",
        "OPT_OUT",
        "unsubscribe me",
        "yes please",
        "HELP ME",
        "info?",
        "starting",
        "",
        "   ",
        "STOP STOP",
        "stop all now",
        "Hello, I said STOP",
    ],
)
def test_not_a_keyword(text: str) -> None:
    assert keyword_of(text) is None


@pytest.mark.parametrize(
    ("keyword", "words"),
    [
        (OPT_OUT, ("unsubscribed", "START")),
        (OPT_IN, ("subscribed", "STOP")),
        (HELP, ("STOP", "START")),
    ],
)
def test_default_reply_names_the_account_and_how_to_opt_back(
    keyword: str, words: tuple[str, ...]
) -> None:
    text = default_reply(keyword, "acme-shop")
    assert "acme-shop" in text
    for word in words:
        assert word in text
    assert part_count(text) == (Encoding.GSM7, 1)


def test_default_replies_are_the_documented_texts() -> None:
    assert default_reply(OPT_OUT, "acme") == (
        "You are unsubscribed from acme messages. Reply START to resubscribe."
    )
    assert default_reply(OPT_IN, "acme") == (
        "You are subscribed again to acme messages. Reply STOP to unsubscribe."
    )
    assert default_reply(HELP, "acme") == "acme: reply STOP to unsubscribe, START to resubscribe."


@pytest.mark.parametrize("keyword", [OPT_OUT, OPT_IN, HELP])
@pytest.mark.parametrize("account_id", ["a" * 64, "x" * 500, "café€" * 40, "日本"])
def test_default_reply_fits_one_gsm7_segment_whatever_the_account_id(
    keyword: str, account_id: str
) -> None:
    text = default_reply(keyword, account_id)
    assert part_count(text) == (Encoding.GSM7, 1)
    assert len(text) <= 160
    assert ("START" if keyword != OPT_IN else "STOP") in text


def test_a_64_character_account_id_is_named_whole() -> None:
    # The longest id the operator API takes ([A-Za-z0-9_.-]{1,64}).
    account_id = "a" * 64
    for keyword in (OPT_OUT, OPT_IN, HELP):
        assert account_id in default_reply(keyword, account_id)
