"""The keywords a subscriber texts to a number (CONTRACT §6 "Opt-out"):
STOP and its synonyms, START and its, HELP and INFO, and the replies the
router sends when an account has not set its own.

An MO is a keyword only when its whole text is one: trimmed, in any case,
with runs of whitespace inside it counting as one space ("stop  all" is
STOP ALL). Anything else — "stop it", "STOP!", "please stop" — is an
ordinary message for the account: carriers and aggregators match whole
texts, so a subscriber's sentence that happens to hold the word does not
opt them out.
"""

from __future__ import annotations

import unicodedata

from smsrouter.sms.text import Encoding, part_count

__all__ = ["HELP", "OPT_IN", "OPT_OUT", "default_reply", "keyword_of"]

# The values the MO forward carries in its "keyword" field (CONTRACT §6).
OPT_OUT = "opt_out"
OPT_IN = "opt_in"
HELP = "help"

# CONTRACT §6: the lists, in their case-folded, space-collapsed form.
# "arrêt" is ARRET as French handsets write it.
_KEYWORDS: dict[str, str] = {
    **dict.fromkeys(
        (
            "stop",
            "stopall",
            "stop all",
            "unsubscribe",
            "cancel",
            "end",
            "quit",
            "optout",
            "opt-out",
            "revoke",
            "arret",
            "arrêt",
        ),
        OPT_OUT,
    ),
    **dict.fromkeys(("start", "unstop", "yes"), OPT_IN),
    **dict.fromkeys(("help", "info"), HELP),
}


def keyword_of(text: str) -> str | None:
    """ "opt_out", "opt_in" or "help" if the whole text is one of that
    list's keywords, else None."""
    # NFC first: a handset may send Ê as E and a combining circumflex.
    words = unicodedata.normalize("NFC", text).casefold().split()
    return _KEYWORDS.get(" ".join(words))


# One GSM-7 segment: a default reply never costs the account two parts.
_SEGMENT = 160

_DEFAULTS = {
    OPT_OUT: "You are unsubscribed from {account} messages. Reply START to resubscribe.",
    OPT_IN: "You are subscribed again to {account} messages. Reply STOP to unsubscribe.",
    HELP: "{account}: reply STOP to unsubscribe, START to resubscribe.",
}


def default_reply(keyword: str, account_id: str) -> str:
    """The reply to a keyword when the account has set none: it names the
    account and how to opt back in (or out), in one GSM-7 segment. An
    account id too long for that, or outside the GSM-7 alphabet, is cut
    to fit."""
    template = _DEFAULTS[keyword]
    name = account_id
    while name:
        text = template.format(account=name)
        encoding, parts = part_count(text)
        if encoding == Encoding.GSM7 and parts == 1 and len(text) <= _SEGMENT:
            return text
        name = name[:-1]
    return template.format(account="our")
