"""Delivery receipt text: SMPP 3.4 Appendix B, as specified and as carriers send it.

SMPP 3.4 Appendix B gives the receipt carried in the short_message of a deliver_sm with
esm_class "SMSC Delivery Receipt" (§5.2.12, bits 2-5 = 0001) as

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm
    stat:DDDDDDD err:E Text:...

and says the format is SMSC-specific. So the writer here emits exactly that layout
(with "text:" as in the router's contract), and the reader accepts the variations
seen in the field: any key order, any key case, missing fields, extra fields, seconds
in the dates, long stat words, hex or decimal ids.

The receipt text is untrusted input from carriers: parsing never raises.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from smsrouter.router.messages import Status

from .constants import MessageState

__all__ = [
    "STAT_WORD",
    "Receipt",
    "ReceiptStatus",
    "final_of_receipt",
    "format_receipt",
    "normalize_stat",
    "parse_receipt",
    "parse_receipt_date",
    "query_state",
    "receipt_date",
    "receipt_of_final",
    "stat_from_state",
    "state_from_status",
    "status_from_state",
]


@dataclass(slots=True)
class Receipt:
    """The fields of a receipt text, as strings exactly as they travel.

    `parse_receipt` leaves a field it did not find empty; the defaults here are for
    building an outgoing receipt for a delivered single-part message.
    """

    id: str
    sub: str = "001"
    dlvrd: str = "001"
    submit_date: str = ""
    done_date: str = ""
    stat: str = "DELIVRD"
    err: str = "000"
    text: str = ""

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        id: str,
        sub: str = "001",
        dlvrd: str = "001",
        submit_date: str = "",
        done_date: str = "",
        stat: str = "DELIVRD",
        err: str = "000",
        text: str = "",
    ) -> None:
        self.id = id
        self.sub = sub
        self.dlvrd = dlvrd
        self.submit_date = submit_date
        self.done_date = done_date
        self.stat = stat
        self.err = err
        self.text = text


class ReceiptStatus(StrEnum):
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    REJECTED = "rejected"
    DELETED = "deleted"
    ACCEPTED = "accepted"
    ENROUTE = "enroute"
    UNKNOWN = "unknown"


# SMPP 3.4 Appendix B, table B-2: the 7-letter stat words. These are what we send.
STAT_WORD: dict[ReceiptStatus, str] = {
    ReceiptStatus.DELIVERED: "DELIVRD",
    ReceiptStatus.UNDELIVERED: "UNDELIV",
    ReceiptStatus.EXPIRED: "EXPIRED",
    ReceiptStatus.REJECTED: "REJECTD",
    ReceiptStatus.DELETED: "DELETED",
    ReceiptStatus.ACCEPTED: "ACCEPTD",
    ReceiptStatus.ENROUTE: "ENROUTE",
    ReceiptStatus.UNKNOWN: "UNKNOWN",
}

# What we accept: the Appendix B words plus the spellings carriers actually use
# (full words, truncations, "FAILED" from gateways that do not distinguish).
_STAT_WORDS_IN: dict[str, ReceiptStatus] = {
    "DELIVRD": ReceiptStatus.DELIVERED,
    "DELIVERED": ReceiptStatus.DELIVERED,
    "DELIVER": ReceiptStatus.DELIVERED,
    "UNDELIV": ReceiptStatus.UNDELIVERED,
    "UNDELIVERABLE": ReceiptStatus.UNDELIVERED,
    "UNDELIVERED": ReceiptStatus.UNDELIVERED,
    "FAILED": ReceiptStatus.UNDELIVERED,
    "FAIL": ReceiptStatus.UNDELIVERED,
    "EXPIRED": ReceiptStatus.EXPIRED,
    "EXPIRD": ReceiptStatus.EXPIRED,
    "REJECTD": ReceiptStatus.REJECTED,
    "REJECTED": ReceiptStatus.REJECTED,
    "REJECT": ReceiptStatus.REJECTED,
    "DELETED": ReceiptStatus.DELETED,
    "DELETD": ReceiptStatus.DELETED,
    "ACCEPTD": ReceiptStatus.ACCEPTED,
    "ACCEPTED": ReceiptStatus.ACCEPTED,
    "ENROUTE": ReceiptStatus.ENROUTE,
    "UNKNOWN": ReceiptStatus.UNKNOWN,
}

# SMPP 3.4 §5.2.28 message_state <-> receipt status. Appendix B pairs each stat word
# with the final message state of the same name. Keyed by plain ints: the value
# comes off the wire.
_STATUS_BY_STATE: dict[int, ReceiptStatus] = {
    int(MessageState.ENROUTE): ReceiptStatus.ENROUTE,
    int(MessageState.DELIVERED): ReceiptStatus.DELIVERED,
    int(MessageState.EXPIRED): ReceiptStatus.EXPIRED,
    int(MessageState.DELETED): ReceiptStatus.DELETED,
    int(MessageState.UNDELIVERABLE): ReceiptStatus.UNDELIVERED,
    int(MessageState.ACCEPTED): ReceiptStatus.ACCEPTED,
    int(MessageState.UNKNOWN): ReceiptStatus.UNKNOWN,
    int(MessageState.REJECTED): ReceiptStatus.REJECTED,
}
_STATE_BY_STATUS: dict[ReceiptStatus, int] = {
    status: state for state, status in _STATUS_BY_STATE.items()
}

# Our message statuses (CONTRACT §3) and receipts, both ways.
#
# A carrier's receipt ends a message with the status its outcome means. A
# message deleted at the SMSC (§5.2.28 DELETED) and one whose fate the SMSC
# does not know count as undelivered. ACCEPTED and ENROUTE are intermediate
# (§5.2.28): they end nothing.
_FINAL_OF_RECEIPT: dict[ReceiptStatus, Status] = {
    ReceiptStatus.DELIVERED: Status.DELIVERED,
    ReceiptStatus.UNDELIVERED: Status.UNDELIVERED,
    ReceiptStatus.EXPIRED: Status.EXPIRED,
    ReceiptStatus.REJECTED: Status.REJECTED,
    ReceiptStatus.DELETED: Status.UNDELIVERED,
    ReceiptStatus.UNKNOWN: Status.UNDELIVERED,
}
# The receipt an ESME gets for each final status: a message we failed to send
# was not delivered either (UNDELIV). Keyed by str: a Status is a StrEnum, and
# a receipt's status is stored as its word.
_RECEIPT_OF_FINAL: dict[str, ReceiptStatus] = {
    Status.DELIVERED: ReceiptStatus.DELIVERED,
    Status.UNDELIVERED: ReceiptStatus.UNDELIVERED,
    Status.EXPIRED: ReceiptStatus.EXPIRED,
    Status.REJECTED: ReceiptStatus.REJECTED,
    Status.FAILED: ReceiptStatus.UNDELIVERED,
}
# Its stat word and message_state, worked out once: one receipt per message.
_STAT_OF_FINAL: dict[str, tuple[str, int]] = {
    status: (STAT_WORD[receipt], _STATE_BY_STATUS[receipt])
    for status, receipt in _RECEIPT_OF_FINAL.items()
}
_STAT_OF_UNKNOWN = (STAT_WORD[ReceiptStatus.UNKNOWN], _STATE_BY_STATUS[ReceiptStatus.UNKNOWN])
# query_sm_resp (§4.8.2): a message not final yet is on its way, ENROUTE.
_QUERY_STATE: dict[str, int] = {
    Status.ACCEPTED: _STATE_BY_STATUS[ReceiptStatus.ENROUTE],
    Status.QUEUED: _STATE_BY_STATUS[ReceiptStatus.ENROUTE],
    Status.SENT: _STATE_BY_STATUS[ReceiptStatus.ENROUTE],
    **{status: state for status, (_, state) in _STAT_OF_FINAL.items()},
}


def normalize_stat(stat: str) -> ReceiptStatus:
    """The status a carrier's stat word means; anything unrecognised is UNKNOWN.

    A bare number is read as a message_state value (some carriers put the TLV's number
    in the text).
    """
    word = stat.strip().upper()
    status = _STAT_WORDS_IN.get(word)
    if status is not None:
        return status
    if word.isascii() and word.isdigit() and len(word) <= 3:
        return _STATUS_BY_STATE.get(int(word), ReceiptStatus.UNKNOWN)
    return ReceiptStatus.UNKNOWN


def stat_from_state(state: int) -> str:
    """The stat word for a message_state value; UNKNOWN for a state with no word
    (e.g. SMPP 5.0's SCHEDULED=0 or SKIPPED=9 from a newer peer)."""
    return STAT_WORD[_STATUS_BY_STATE.get(state, ReceiptStatus.UNKNOWN)]


def status_from_state(state: int) -> ReceiptStatus:
    """The receipt status for a message_state TLV value."""
    return _STATUS_BY_STATE.get(state, ReceiptStatus.UNKNOWN)


def state_from_status(status: str) -> int:
    """The message_state value to send in the TLV next to a receipt of `status`
    (the member, or its plain value as stored)."""
    return _STATE_BY_STATUS[ReceiptStatus(status)]


def final_of_receipt(outcome: ReceiptStatus) -> Status | None:
    """The status a carrier's receipt ends a message with; None for an
    intermediate one (ACCEPTED, ENROUTE)."""
    return _FINAL_OF_RECEIPT.get(outcome)


def receipt_of_final(status: str) -> tuple[str, int]:
    """The stat word and message_state of the receipt an ESME gets for a
    message that ended with `status` (the member, or its plain value as
    stored); UNKNOWN for any other."""
    return _STAT_OF_FINAL.get(status, _STAT_OF_UNKNOWN)


def query_state(status: str) -> int:
    """The message_state a query_sm_resp (§4.8.2) gives for a message in
    `status` (the member, or its plain value as stored). KeyError for a word
    that is not one of ours."""
    return _QUERY_STATE[status]


def receipt_date(dt: datetime) -> str:
    """YYMMDDhhmm in UTC (Appendix B). A naive datetime is taken to be UTC already:
    the router keeps every time in UTC."""
    if dt.utcoffset():
        dt = dt.astimezone(UTC)
    # Formatted by hand: strftime, or an f-string with five format specs,
    # took twice as long as this.
    return "%02d%02d%02d%02d%02d" % (dt.year % 100, dt.month, dt.day, dt.hour, dt.minute)  # noqa: UP031


_DATE_FORMATS = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S", 14: "%Y%m%d%H%M%S"}


def parse_receipt_date(value: str) -> datetime | None:
    """A receipt date as an aware UTC datetime, or None if it is not one.

    Appendix B has YYMMDDhhmm; many SMSCs add seconds (YYMMDDhhmmss) and a few send a
    four-digit year. Receipts carry no zone; UTC is the common practice and the best
    guess a router can make.
    """
    value = value.strip()
    fmt = _DATE_FORMATS.get(len(value))
    if fmt is None or not (value.isascii() and value.isdigit()):
        return None
    try:
        return datetime.strptime(value, fmt).replace(tzinfo=UTC)
    except ValueError:
        return None


def format_receipt(r: Receipt) -> str:
    """The receipt text in the Appendix B layout, with the first 20 characters of the
    message text (Appendix B: "the first 20 characters of the short message")."""
    return (
        f"id:{r.id} sub:{r.sub} dlvrd:{r.dlvrd} submit date:{r.submit_date}"
        f" done date:{r.done_date} stat:{r.stat} err:{r.err} text:{r.text[:20]}"
    )


# A key is a word followed by a colon, at the start or after whitespace (so "12:30"
# inside a value or "abc:def" inside an id is not a key). The two dates have a space
# in the spec and "_" or nothing in some implementations.
_KEY_RE = re.compile(
    r"(?<!\S)(submit[ _]?date|done[ _]?date|[a-z][a-z0-9_]*)[ \t]*:",
    re.IGNORECASE,
)
_FIELDS: dict[str, str] = {
    "id": "id",
    "sub": "sub",
    "dlvrd": "dlvrd",
    "submitdate": "submit_date",
    "donedate": "done_date",
    "stat": "stat",
    "err": "err",
    "text": "text",
}
_LEADING_ID_RE = re.compile(r"\s*id[ \t]*:", re.IGNORECASE)
# Beyond "stat", the fields that show an "id:" really starts a receipt.
_RECEIPT_EVIDENCE = ("sub", "dlvrd", "submit_date", "done_date", "err")


def _field(key: str) -> str | None:
    return _FIELDS.get(key.lower().replace(" ", "").replace("_", ""))


def _as_text(data: bytes) -> str:
    # Receipts are ASCII; a few SMSCs send them as UCS2 (data_coding 8), recognisable
    # by the zero high octet of the first character. Decoding by data_coding first is
    # the caller's better option; this is the fallback for raw bytes.
    if len(data) >= 2 and data[0] == 0 and data[1] != 0 and len(data) % 2 == 0:
        return data.decode("utf-16-be", "replace")
    return data.decode("latin-1")


# The Appendix B layout exactly as most SMSCs write it, field for field. A
# text that matches reads the same through the general parser below (every
# key present once, in order, values without spaces except the final text),
# which is kept for everything else.
_APPENDIX_B_RE = re.compile(
    r"id:(\S+) sub:(\S+) dlvrd:(\S+) submit date:(\d+) done date:(\d+)"
    r" stat:(\S+) err:(\S+) text:(.*)",
    re.DOTALL,
)


def parse_receipt(text: str | bytes) -> Receipt | None:
    """The receipt in a deliver_sm's text, or None if the text is not a receipt.

    Each value runs from its key to the next key. "text:" holds the user's words, which
    may themselves look like keys ("Your code: 1234"), so it runs to the end unless a
    receipt field that has not been seen yet follows it (a carrier that puts text
    before stat or err). Unknown keys are skipped; the first of repeated keys wins.

    It is a receipt if it has a stat, or an id together with another receipt field, or
    if it begins with "id:" -- so an MO that merely mentions "id: 5" mid-sentence is not
    taken for one. Fields that are absent stay empty.
    """
    if not isinstance(text, str):
        text = _as_text(bytes(text))
    plain = _APPENDIX_B_RE.fullmatch(text)
    if plain is not None:
        id_, sub, dlvrd, submit_date, done_date, stat, err, words = plain.groups()
        return Receipt(id_, sub, dlvrd, submit_date, done_date, stat, err, words.strip())
    return parse_receipt_fields(text)


def parse_receipt_fields(text: str) -> Receipt | None:
    """`parse_receipt` for any layout: keys found wherever they stand."""
    matches = list(_KEY_RE.finditer(text))
    found: dict[str, str] = {}
    i = 0
    while i < len(matches):
        key = matches[i]
        name = _field(key.group(1))
        j = i + 1
        if name == "text":
            while j < len(matches):
                following = _field(matches[j].group(1))
                if following is not None and following not in found and following != "text":
                    break
                j += 1
        if name is not None and name not in found:
            end = matches[j].start() if j < len(matches) else len(text)
            found[name] = text[key.end() : end].strip()
        i = j

    if "stat" not in found:
        if "id" not in found:
            return None
        starts_with_id = _LEADING_ID_RE.match(text) is not None
        if not starts_with_id and not any(f in found for f in _RECEIPT_EVIDENCE):
            return None
    return Receipt(
        id=found.get("id", ""),
        sub=found.get("sub", ""),
        dlvrd=found.get("dlvrd", ""),
        submit_date=found.get("submit_date", ""),
        done_date=found.get("done_date", ""),
        stat=found.get("stat", ""),
        err=found.get("err", ""),
        text=found.get("text", ""),
    )
