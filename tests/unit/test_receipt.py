"""Delivery receipt text (connectors/smpp/receipt.py)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsrouter.connectors.smpp import MessageState
from smsrouter.connectors.smpp.receipt import (
    STAT_WORD,
    Receipt,
    ReceiptStatus,
    final_of_receipt,
    format_receipt,
    normalize_stat,
    parse_receipt,
    parse_receipt_date,
    parse_receipt_fields,
    query_state,
    receipt_date,
    receipt_of_final,
    stat_from_state,
    state_from_status,
    status_from_state,
)
from smsrouter.router.messages import FINAL_STATUSES, Status

# --- Writing ---------------------------------------------------------------------------


def test_format_matches_appendix_b_layout() -> None:
    receipt = Receipt(
        id="0123456789",
        submit_date="2401311259",
        done_date="2402010001",
        stat="UNDELIV",
        err="013",
        text="Your verification code is 123456",
    )
    assert format_receipt(receipt) == (
        "id:0123456789 sub:001 dlvrd:001 submit date:2401311259 done date:2402010001"
        " stat:UNDELIV err:013 text:Your verification co"
    )


def test_receipt_date_is_utc_minutes() -> None:
    paris = timezone(timedelta(hours=1))
    assert receipt_date(datetime(2024, 1, 1, 0, 30, 59, tzinfo=paris)) == "2312312330"
    assert receipt_date(datetime(2024, 2, 29, 23, 59, 1, tzinfo=UTC)) == "2402292359"
    assert receipt_date(datetime(2024, 2, 29, 23, 59)) == "2402292359"  # naive = UTC


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2068, 12, 31),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))]
        ),
    )
)
def test_receipt_date_round_trip(dt: datetime) -> None:
    parsed = parse_receipt_date(receipt_date(dt))
    assert parsed == dt.astimezone(UTC).replace(second=0, microsecond=0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2401311259", datetime(2024, 1, 31, 12, 59, tzinfo=UTC)),
        ("240131125907", datetime(2024, 1, 31, 12, 59, 7, tzinfo=UTC)),
        ("20240131125907", datetime(2024, 1, 31, 12, 59, 7, tzinfo=UTC)),
        (" 2401311259 ", datetime(2024, 1, 31, 12, 59, tzinfo=UTC)),
        ("2413311259", None),  # month 13
        ("24013112", None),
        ("2024-01-31", None),
        ("", None),
        ("٢٤٠١٣١١٢٥٩", None),  # Unicode digits are not receipt digits
    ],
)
def test_parse_receipt_date(value: str, expected: datetime | None) -> None:
    assert parse_receipt_date(value) == expected


# --- Reading ---------------------------------------------------------------------------

ids = st.one_of(
    st.integers(0, 2**64).map(str),
    st.integers(0, 2**64).map(lambda n: f"{n:X}"),
    st.uuids().map(str),
    st.from_regex(r"[A-Za-z0-9_.\-]{1,40}", fullmatch=True),
)
digits3 = st.integers(0, 999).map(lambda n: f"{n:03d}")
dates = st.from_regex(r"[0-9]{10}([0-9]{2})?", fullmatch=True) | st.just("")
message_text = st.text(
    alphabet=st.sampled_from("abcXYZ019 :.,!?-éü€😀"),
    max_size=40,
)


@given(
    ids,
    digits3,
    digits3,
    dates,
    dates,
    st.sampled_from(sorted(STAT_WORD.values())),
    digits3,
    message_text,
)
def test_format_parse_round_trip(
    id_: str, sub: str, dlvrd: str, submit: str, done: str, stat: str, err: str, text: str
) -> None:
    receipt = Receipt(id_, sub, dlvrd, submit, done, stat, err, text)
    parsed = parse_receipt(format_receipt(receipt))
    assert parsed == Receipt(id_, sub, dlvrd, submit, done, stat, err, text[:20].strip())


# (what a carrier sent, what we must read from it)
REAL_WORLD = [
    # Kannel / most SMSCs: Appendix B with "Text:" capitalised.
    (
        "id:1739823478 sub:001 dlvrd:001 submit date:2402011015 done date:2402011016"
        " stat:DELIVRD err:000 Text:Hello from the",
        Receipt("1739823478", "001", "001", "2402011015", "2402011016", "DELIVRD", "000",
                "Hello from the"),
    ),
    # Hex id, seconds in both dates, text that contains a colon.
    (
        "id:7F3A9C01 sub:001 dlvrd:000 submit date:240201101530 done date:240201101602"
        " stat:UNDELIV err:034 text:Code: 4711 is valid",
        Receipt("7F3A9C01", "001", "000", "240201101530", "240201101602", "UNDELIV", "034",
                "Code: 4711 is valid"),
    ),
    # Lowercase everything, long stat word, no text at all.
    (
        "id:55 sub:1 dlvrd:1 submit date:2402011015 done date:2402011016 stat:delivered err:0",
        Receipt("55", "1", "1", "2402011015", "2402011016", "delivered", "0", ""),
    ),
    # Upper-case keys, fields out of order, underscores in the date keys.
    (
        "STAT:EXPIRED ERR:000 ID:a1b2c3 SUBMIT_DATE:2402011015 DONE_DATE:2402021015 SUB:001"
        " DLVRD:000",
        Receipt("a1b2c3", "001", "000", "2402011015", "2402021015", "EXPIRED", "000", ""),
    ),
    # Vendor fields between the standard ones (network codes, IMSI).
    (
        "id:2e4f6a8c-0b1d-4e3f-9a7b-5c6d7e8f9a0b sub:001 dlvrd:001 submit date:2402011015"
        " done date:2402011016 stat:DELIVRD err:000 mcc:310 mnc:260 imsi:310260000000000"
        " text:hi",
        Receipt("2e4f6a8c-0b1d-4e3f-9a7b-5c6d7e8f9a0b", "001", "001", "2402011015",
                "2402011016", "DELIVRD", "000", "hi"),
    ),
    # Text placed before stat and err, and a text that mentions "id:".
    (
        "id:9001 sub:001 dlvrd:001 submit date:2402011015 done date:2402011016"
        " text:Your id: 42 stat:REJECTD err:0x0B",
        Receipt("9001", "001", "001", "2402011015", "2402011016", "REJECTD", "0x0B",
                "Your id: 42"),
    ),
    # An id with a colon in it, which must not be read as a key.
    (
        "id:smsc2:000451 sub:001 dlvrd:001 submit date:2402011015 done date:2402011016"
        " stat:DELIVRD err:000 text:ok",
        Receipt("smsc2:000451", "001", "001", "2402011015", "2402011016", "DELIVRD", "000",
                "ok"),
    ),
    # Only the minimum some SMSCs bother with.
    ("id:123 stat:DELIVRD", Receipt("123", "", "", "", "", "DELIVRD", "", "")),
    # A stat but no id (the id travels in the receipted_message_id TLV).
    (
        "sub:001 dlvrd:001 submit date:2402011015 done date:2402011016 stat:FAILED err:001",
        Receipt("", "001", "001", "2402011015", "2402011016", "FAILED", "001", ""),
    ),
    # Extra whitespace and a trailing CR LF.
    (
        "id:77  sub:001  dlvrd:001  submit date:2402011015  done date:2402011016"
        "  stat:ACCEPTD  err:000  text:  \r\n",
        Receipt("77", "001", "001", "2402011015", "2402011016", "ACCEPTD", "000", ""),
    ),
    # 12-digit dates, decimal id with leading zeros, and "Text:" holding a URL.
    (
        "id:000000123 sub:001 dlvrd:001 submit date:240201101500 done date:240201101500"
        " stat:ENROUTE err:000 Text:see https://x.co/a",
        Receipt("000000123", "001", "001", "240201101500", "240201101500", "ENROUTE", "000",
                "see https://x.co/a"),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("sent", "expected"), REAL_WORLD)
def test_real_world_receipts(sent: str, expected: Receipt) -> None:
    assert parse_receipt(sent) == expected


def test_bytes_latin1_and_ucs2() -> None:
    sent = "id:42 sub:001 dlvrd:001 submit date:2402011015 done date:2402011016 stat:DELIVRD"
    expected = Receipt("42", "001", "001", "2402011015", "2402011016", "DELIVRD", "", "")
    assert parse_receipt(sent.encode("ascii")) == expected
    assert parse_receipt(sent.encode("utf-16-be")) == expected
    assert parse_receipt((sent + " err:000 text:caf\xe9").encode("latin-1")) == Receipt(
        "42", "001", "001", "2402011015", "2402011016", "DELIVRD", "000", "café"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "STOP",
        "Hello, how are you?",
        "Meeting at 10:30 tomorrow",
        "Re: your order 1234",
        "my id: 5 please",
        "Note: status unknown",
        b"\x00\x01\x02",
    ],
)
def test_not_a_receipt(text: str | bytes) -> None:
    assert parse_receipt(text) is None


def test_id_alone_is_a_receipt_only_at_the_start() -> None:
    assert parse_receipt("id:5") == Receipt("5", "", "", "", "", "", "", "")
    assert parse_receipt("ok id:5") is None
    assert parse_receipt("ok id:5 err:000") == Receipt("5", "", "", "", "", "", "000", "")


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parse_never_raises(text: str | bytes) -> None:
    result = parse_receipt(text)
    assert result is None or isinstance(result, Receipt)


# --- Status words ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("DELIVRD", ReceiptStatus.DELIVERED),
        ("DELIVERED", ReceiptStatus.DELIVERED),
        ("DELIVER", ReceiptStatus.DELIVERED),
        ("UNDELIV", ReceiptStatus.UNDELIVERED),
        ("UNDELIVERABLE", ReceiptStatus.UNDELIVERED),
        ("UNDELIVERED", ReceiptStatus.UNDELIVERED),
        ("FAILED", ReceiptStatus.UNDELIVERED),
        ("FAIL", ReceiptStatus.UNDELIVERED),
        ("EXPIRED", ReceiptStatus.EXPIRED),
        ("EXPIRD", ReceiptStatus.EXPIRED),
        ("REJECTD", ReceiptStatus.REJECTED),
        ("REJECTED", ReceiptStatus.REJECTED),
        ("REJECT", ReceiptStatus.REJECTED),
        ("DELETED", ReceiptStatus.DELETED),
        ("DELETD", ReceiptStatus.DELETED),
        ("ACCEPTD", ReceiptStatus.ACCEPTED),
        ("ACCEPTED", ReceiptStatus.ACCEPTED),
        ("ENROUTE", ReceiptStatus.ENROUTE),
        ("UNKNOWN", ReceiptStatus.UNKNOWN),
        ("delivrd", ReceiptStatus.DELIVERED),
        (" Undeliv\r\n", ReceiptStatus.UNDELIVERED),
        ("2", ReceiptStatus.DELIVERED),  # message_state number in the text
        ("5", ReceiptStatus.UNDELIVERED),
        ("9", ReceiptStatus.UNKNOWN),
        ("", ReceiptStatus.UNKNOWN),
        ("OK", ReceiptStatus.UNKNOWN),
        ("DELIVRDX", ReceiptStatus.UNKNOWN),
        ("9" * 5000, ReceiptStatus.UNKNOWN),  # beyond int()'s digit limit
        ("٢", ReceiptStatus.UNKNOWN),  # not an ASCII digit
    ],
)
def test_normalize_stat(word: str, status: ReceiptStatus) -> None:
    assert normalize_stat(word) is status


# SMPP 3.4 §5.2.28 message_state and the Appendix B stat word of the same meaning.
STATES = [
    (1, "ENROUTE", ReceiptStatus.ENROUTE),
    (2, "DELIVRD", ReceiptStatus.DELIVERED),
    (3, "EXPIRED", ReceiptStatus.EXPIRED),
    (4, "DELETED", ReceiptStatus.DELETED),
    (5, "UNDELIV", ReceiptStatus.UNDELIVERED),
    (6, "ACCEPTD", ReceiptStatus.ACCEPTED),
    (7, "UNKNOWN", ReceiptStatus.UNKNOWN),
    (8, "REJECTD", ReceiptStatus.REJECTED),
]


@pytest.mark.parametrize(("state", "word", "status"), STATES)
def test_state_word_status_agree(state: int, word: str, status: ReceiptStatus) -> None:
    assert stat_from_state(state) == word
    assert status_from_state(state) is status
    assert state_from_status(status) == state
    assert STAT_WORD[status] == word
    assert normalize_stat(word) is status


def test_every_status_has_a_word_and_a_state() -> None:
    assert set(STAT_WORD) == set(ReceiptStatus)
    assert sorted(state_from_status(s) for s in ReceiptStatus) == list(range(1, 9))
    assert state_from_status("delivered") == 2


def test_the_states_are_smpps() -> None:
    assert {state: status_from_state(state) for state, _, _ in STATES} == {
        int(MessageState.ENROUTE): ReceiptStatus.ENROUTE,
        int(MessageState.DELIVERED): ReceiptStatus.DELIVERED,
        int(MessageState.EXPIRED): ReceiptStatus.EXPIRED,
        int(MessageState.DELETED): ReceiptStatus.DELETED,
        int(MessageState.UNDELIVERABLE): ReceiptStatus.UNDELIVERED,
        int(MessageState.ACCEPTED): ReceiptStatus.ACCEPTED,
        int(MessageState.UNKNOWN): ReceiptStatus.UNKNOWN,
        int(MessageState.REJECTED): ReceiptStatus.REJECTED,
    }


@pytest.mark.parametrize(
    ("outcome", "final"),
    [
        (ReceiptStatus.DELIVERED, Status.DELIVERED),
        (ReceiptStatus.UNDELIVERED, Status.UNDELIVERED),
        (ReceiptStatus.EXPIRED, Status.EXPIRED),
        (ReceiptStatus.REJECTED, Status.REJECTED),
        (ReceiptStatus.DELETED, Status.UNDELIVERED),
        (ReceiptStatus.UNKNOWN, Status.UNDELIVERED),
        (ReceiptStatus.ACCEPTED, None),
        (ReceiptStatus.ENROUTE, None),
    ],
)
def test_a_carriers_receipt_ends_a_message(outcome: ReceiptStatus, final: Status | None) -> None:
    assert final_of_receipt(outcome) is final


@pytest.mark.parametrize(
    ("status", "word", "state"),
    [
        (Status.DELIVERED, "DELIVRD", 2),
        (Status.UNDELIVERED, "UNDELIV", 5),
        (Status.EXPIRED, "EXPIRED", 3),
        (Status.REJECTED, "REJECTD", 8),
        (Status.FAILED, "UNDELIV", 5),
        ("queued", "UNKNOWN", 7),
        ("nonsense", "UNKNOWN", 7),
    ],
)
def test_an_esmes_receipt_of_a_final_status(status: str, word: str, state: int) -> None:
    assert receipt_of_final(status) == (word, state)
    assert receipt_of_final(str(status)) == (word, state)


def test_query_sm_states() -> None:
    for status in Status:
        expected = receipt_of_final(status)[1] if status in FINAL_STATUSES else 1  # ENROUTE
        assert query_state(status) == query_state(status.value) == expected
    with pytest.raises(KeyError):
        query_state("nonsense")


def test_states_without_a_word_are_unknown() -> None:
    assert stat_from_state(0) == "UNKNOWN"
    assert stat_from_state(9) == "UNKNOWN"
    assert status_from_state(-1) is ReceiptStatus.UNKNOWN


_token = st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=12)


@given(
    id_=_token,
    sub=_token,
    stat=_token,
    err=_token,
    dates=st.tuples(st.from_regex(r"\A[0-9]{10,12}\Z"), st.from_regex(r"\A[0-9]{10,12}\Z")),
    words=st.text(max_size=40),
)
def test_the_appendix_b_short_cut_reads_as_the_general_parser(
    id_: str, sub: str, stat: str, err: str, dates: tuple[str, str], words: str
) -> None:
    """Values with spaces, colons or key-like words included: where the
    short cut answers, it answers what the general parser does."""
    text = (
        f"id:{id_} sub:{sub} dlvrd:{sub} submit date:{dates[0]} done date:{dates[1]}"
        f" stat:{stat} err:{err} text:{words}"
    )
    assert parse_receipt(text) == parse_receipt_fields(text)


@given(st.datetimes(timezones=st.timezones() | st.none()))
def test_receipt_date_reads_as_strftime_in_utc(dt: datetime) -> None:
    utc = dt.astimezone(UTC) if dt.tzinfo is not None else dt
    assert receipt_date(dt) == utc.strftime("%y%m%d%H%M")
