"""Admission decisions shared by both ingresses."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrouter.connectors.carriers import payloads
from smsrouter.connectors.smpp.user_data import smpp_text
from smsrouter.router.accounts import AccountDirectory
from smsrouter.router.admission import Admission, Compliance, Draft, country_of, parse_recipient
from smsrouter.router.config import AccountConfig
from smsrouter.router.content import ContentRule, compile_content_rules
from smsrouter.router.routes import Candidate, PriceTable, RouteTable
from smsrouter.router.sender_ids import SenderIdRules, SenderRule
from smsrouter.router.senders import NumberType
from smsrouter.sms.text import Encoding


@pytest.mark.parametrize(
    ("to", "e164", "country"),
    [
        ("+14155550123", "+14155550123", "US"),
        ("+447700900123", "+447700900123", "GB"),  # a drama number: possible, not "valid"
        ("+33 6 12 34 56 78", "+33612345678", "FR"),
        ("+16135550123", "+16135550123", "CA"),
    ],
)
def test_recipients_are_normalised_to_e164(to: str, e164: str, country: str) -> None:
    r = parse_recipient(to)
    assert r is not None
    assert (r.e164, r.digits, r.country) == (e164, e164[1:], country)


@pytest.mark.parametrize("to", ["14155550123", "+1", "+1415555012345678", "hello", "", "+0123"])
def test_not_a_number(to: str) -> None:
    assert parse_recipient(to) is None


@settings(max_examples=300)
@given(st.from_regex(r"\A\+1[0-9]{8,12}\Z"))
def test_nanp_numbers_read_as_libphonenumber_reads_them(to: str) -> None:
    """The NANP short cut agrees with libphonenumber's full parse."""
    number = phonenumbers.parse(to, None)
    if phonenumbers.is_possible_number(number):
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        expected = (e164, e164[1:], country_of(number, e164[1:]))
    else:
        expected = None
    r = parse_recipient(to)
    assert (None if r is None else (r.e164, r.digits, r.country)) == expected


def _admission() -> tuple[Admission, AccountDirectory]:
    accounts = AccountDirectory(
        [AccountConfig(id="a", api_keys=["ka"]), AccountConfig(id="b", api_keys=["kb"])]
    )
    admission = Admission(
        routes=RouteTable([("1", [Candidate("sim", Decimal("0.004"))])]),
        prices=PriceTable([("1", Decimal("0.0062")), ("1416", Decimal("0.01"))]),
        senders={"+14155550101": "a"},
    )
    return admission, accounts


def test_sender_must_belong_to_the_account() -> None:
    admission, accounts = _admission()
    a, b = accounts.get("a"), accounts.get("b")
    assert a is not None and b is not None
    assert admission.sender_allowed(a, "+14155550101")
    assert not admission.sender_allowed(b, "+14155550101")
    assert not admission.sender_allowed(a, "+14155550102")


def test_no_route_is_refused_and_price_is_per_part() -> None:
    admission, accounts = _admission()
    account = accounts.get("a")
    assert account is not None
    uk = parse_recipient("+447700900123")
    assert uk is not None
    refusal = admission.refuse("+447700900123", uk)
    assert refusal is not None and refusal.code == "no_route"
    us = parse_recipient("+14165550123")
    assert us is not None and admission.refuse("+14165550123", us) is None
    draft = Draft(
        ingress="http", sender="+14155550101", to="+14165550123", body="x" * 200,
        encoding=Encoding.GSM7, data_coding=0, parts=2, validity=60,
    )  # fmt: skip
    message = admission.new_message(account, draft, us, datetime.now(UTC))
    assert message.price == Decimal("0.02")  # longest price prefix 1416, two parts
    assert message.country == "CA"
    assert message.valid_until is not None
    assert (message.valid_until - message.created_at).total_seconds() == 60
    assert [len(p) for p in payloads(message)] == [153, 47]


def test_smpp_text_keeps_bytes_it_does_not_re_encode() -> None:
    assert smpp_text(0, b"hello") == ("hello", Encoding.GSM7)
    assert smpp_text(8, "héllo".encode("utf-16-be")) == ("héllo", Encoding.UCS2)
    text, encoding = smpp_text(4, b"\x00\xff\x80")
    assert encoding == "binary"
    assert text.encode("latin-1") == b"\x00\xff\x80"


def test_api_keys_are_not_kept_in_clear() -> None:
    _, accounts = _admission()
    a = accounts.get("a")
    assert accounts.by_api_key("ka") is a
    assert accounts.by_api_key("kb") is not a
    assert accounts.by_api_key("nope") is None
    # Every attribute the directory holds (it may be compiled: no __dict__).
    held = {name: getattr(accounts, name) for name in ("_by_id", "_by_key", "_by_system_id")}
    assert len(held["_by_key"]) == 2
    assert "ka" not in repr(held) and "ka" not in repr(a)


@pytest.mark.parametrize(
    ("host", "private"),
    [
        ("127.0.0.1", True), ("10.1.2.3", True), ("192.168.0.1", True), ("169.254.1.1", True),
        ("[::1]", True), ("localhost", True), ("api.localhost", True), ("8.8.8.8", False),
        ("example.com", False),
    ],
)  # fmt: skip
def test_private_callback_hosts(host: str, private: bool) -> None:
    from smsrouter.connectors.webhooks import is_private_address

    assert is_private_address(host) is private


@pytest.mark.parametrize(
    ("zone", "instants"),
    [
        # New York's midnight is 05:00 UTC in winter, 04:00 in summer.
        ("America/New_York", ["2026-01-10T04:59:59", "2026-01-10T05:00:00"]),
        ("America/New_York", ["2026-07-10T03:59:59", "2026-07-10T04:00:00"]),
        # The spring-forward day is 23 hours long, the fall-back day 25.
        ("Europe/Berlin", ["2026-03-28T22:59:59", "2026-03-28T23:00:00",
                           "2026-03-29T21:59:59", "2026-03-29T22:00:00"]),
        ("Europe/Berlin", ["2026-10-24T21:59:59", "2026-10-24T22:00:00",
                           "2026-10-25T22:59:59", "2026-10-25T23:00:00"]),
        ("Asia/Kathmandu", ["2026-05-01T18:14:59", "2026-05-01T18:15:00"]),
    ],
)  # fmt: skip
def test_a_messages_day_is_the_accounts_local_day_across_midnight(
    zone: str, instants: list[str]
) -> None:
    """CONTRACT §6 "Daily thresholds": the day is the account's time zone's,
    kept between messages; each message still falls in the day its local
    time says, on both sides of midnight and of a clock change."""
    admission, _ = _admission()
    (account,) = AccountDirectory([AccountConfig(id="z", timezone=zone, daily_limit=100)])
    for at in instants:
        now = datetime.fromisoformat(at).replace(tzinfo=UTC)
        assert admission._day_of(account, now) == now.astimezone(account.zone).date(), at
    # Back in time too (a clock step): never a stale day.
    for at in reversed(instants):
        now = datetime.fromisoformat(at).replace(tzinfo=UTC)
        assert admission._day_of(account, now) == now.astimezone(account.zone).date(), at


def test_the_compliance_rules_refuse_in_order_and_a_later_counter_gives_back_the_velocity() -> None:
    """CONTRACT §6 in `admit`: the country, then the sender ID rule, then
    content, then the counters; a message the throughput plan refuses is
    not counted against its recipient's hour."""
    clock = [0.0]
    accounts = AccountDirectory([AccountConfig(id="a", allowed_countries=["US", "CA"], max_tps=1)])
    admission = Admission(
        routes=RouteTable([("1", [Candidate("sim", Decimal("0.004"))])]),
        prices=PriceTable([("1", Decimal("0.01"))]),
        senders={"ACME": "a", "+14155550101": "a"},
        compliance=Compliance(
            sender_types={"ACME": NumberType.ALPHANUMERIC, "+14155550101": NumberType.LONG_CODE},
            sender_ids=SenderIdRules([SenderRule("US", "refused")], ()),
            content=compile_content_rules([ContentRule("short", "bit\\.ly/", "block")]),
            max_per_recipient_per_hour=1,
        ),
        clock=lambda: clock[0],
    )
    account = accounts.get("a")
    assert account is not None
    now = datetime.now(UTC)

    def admit(sender: str, to: str, body: str = "hi") -> str:
        draft = Draft(
            ingress="http", sender=sender, to=to, body=body, encoding=Encoding.GSM7,
            data_coding=0, parts=1,
        )  # fmt: skip
        outcome = admission.admit(account, draft, now)
        return "ok" if not hasattr(outcome, "code") else outcome.code  # type: ignore[union-attr]

    assert admit("ACME", "+447700900123") == "country_not_allowed"
    assert admit("ACME", "+14155550123") == "sender_id_not_allowed"
    assert admit("+14155550101", "+14155550123", "bit.ly/x") == "content_blocked"
    assert admit("+14155550101", "+14155550123") == "ok"
    assert admit("+14155550101", "+14155550123") == "recipient_velocity"
    # The plan's one message a second is spent: refused, and the velocity
    # of this other recipient given back.
    assert admit("+14155550101", "+14165550123") == "throughput_exceeded"
    clock[0] += 1.0
    assert admit("+14155550101", "+14165550123") == "ok"
