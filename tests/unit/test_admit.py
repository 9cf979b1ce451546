"""`Admission.admit`: the one decision both ingresses ask, pure and clock-injected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from smsrouter.router.accounts import Account, AccountDirectory
from smsrouter.router.admission import Admission, Draft, Refusal
from smsrouter.router.config import AccountConfig
from smsrouter.router.messages import Message, Status
from smsrouter.router.routes import Candidate, PriceTable, RouteTable

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SENDER = "+14155550101"


def _setup() -> tuple[Admission, Account, Account]:
    accounts = AccountDirectory(
        [
            AccountConfig(id="a", api_keys=["ka"], callback_url="https://a.example/cb"),
            AccountConfig(id="b", api_keys=["kb"]),
        ]
    )
    admission = Admission(
        routes=RouteTable([("1", [Candidate("sim", Decimal("0.004"))])]),
        prices=PriceTable([("1", Decimal("0.0062")), ("1416", Decimal("0.01"))]),
        senders={SENDER: "a"},
    )
    a, b = accounts.get("a"), accounts.get("b")
    assert a is not None and b is not None
    return admission, a, b


def _draft(ingress: str, to: str, *, sender: str = SENDER, **more: object) -> Draft:
    return Draft(
        ingress=ingress, sender=sender, to=to, body="hello", encoding="gsm7",
        data_coding=0, parts=2, **more,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize("ingress", ["http", "smpp"])
def test_an_admitted_draft_becomes_a_queued_message_stamped_with_the_injected_clock(
    ingress: str,
) -> None:
    admission, a, _ = _setup()
    message = admission.admit(a, _draft(ingress, "+14165550123", validity=90.0), NOW)
    assert isinstance(message, Message)
    assert (message.ingress, message.account_id, message.sender) == (ingress, "a", SENDER)
    assert (message.recipient, message.country, message.status) == (
        "+14165550123",
        "CA",
        Status.QUEUED,
    )
    assert message.created_at == NOW
    assert message.valid_until == NOW + timedelta(seconds=90)
    assert message.price == Decimal("0.02")  # longest prefix 1416, two parts
    assert message.callback_url == "https://a.example/cb"  # the account's default


def test_validity_runs_from_the_scheduled_time() -> None:
    admission, a, _ = _setup()
    later = NOW + timedelta(hours=2)
    message = admission.admit(a, _draft("http", "+14155550123", validity=60.0, send_at=later), NOW)
    assert isinstance(message, Message)
    assert message.valid_until == later + timedelta(seconds=60)


@pytest.mark.parametrize(
    ("account", "to", "sender", "code", "field"),
    [
        ("b", "+14155550123", SENDER, "unknown_sender", "from"),  # another account's number
        ("a", "+14155550123", "+14155550999", "unknown_sender", "from"),
        ("a", "hello", SENDER, "invalid_number", "to"),
        ("a", "+447700900123", SENDER, "no_route", "to"),
        # The sender is checked first: a bad sender to a bad number names the sender.
        ("b", "hello", SENDER, "unknown_sender", "from"),
    ],
)
def test_both_ingresses_get_the_same_refusal_for_the_same_draft(
    account: str, to: str, sender: str, code: str, field: str
) -> None:
    admission, a, b = _setup()
    refusals = [
        admission.admit(a if account == "a" else b, _draft(ingress, to, sender=sender), NOW)
        for ingress in ("http", "smpp")
    ]
    for refusal in refusals:
        assert isinstance(refusal, Refusal)
        assert (refusal.to, refusal.code, refusal.field) == (to, code, field)
    assert refusals[0] == refusals[1]


def test_the_throughput_plan_counts_only_what_every_other_rule_admits() -> None:
    ticks = [0.0]
    accounts = AccountDirectory([AccountConfig(id="a", api_keys=["ka"], max_tps=2)])
    admission = Admission(
        routes=RouteTable([("1", [Candidate("sim", Decimal("0.004"))])]),
        prices=PriceTable([("1", Decimal("0.0062"))]),
        senders={SENDER: "a"},
        clock=lambda: ticks[0],
    )
    a = accounts.get("a")
    assert a is not None
    # Refused for another reason: not counted.
    for _ in range(5):
        refused = admission.admit(a, _draft("http", "+447700900123"), NOW)
        assert isinstance(refused, Refusal) and refused.code == "no_route"
    outcomes = [admission.admit(a, _draft(i, "+14155550123"), NOW) for i in ("http", "smpp") * 2]
    assert [isinstance(o, Message) for o in outcomes] == [True, True, False, False]
    for refusal in outcomes[2:]:
        assert isinstance(refusal, Refusal) and refusal.code == "throughput_exceeded"
        assert refusal.retry_after == pytest.approx(0.5)
    ticks[0] += 0.5
    assert isinstance(admission.admit(a, _draft("smpp", "+14155550123"), NOW), Message)


def test_the_daily_limit_counts_in_the_account_zone_and_gives_back_what_was_not_stored() -> None:
    accounts = AccountDirectory(
        [
            AccountConfig(
                id="a", api_keys=["ka"], daily_limit=2, daily_alarm=2, timezone="Asia/Tokyo"
            )
        ]
    )
    admission = Admission(
        routes=RouteTable([("1", [Candidate("sim", Decimal("0.004"))])]),
        prices=PriceTable([("1", Decimal("0.0062"))]),
        senders={SENDER: "a"},
    )
    a = accounts.get("a")
    assert a is not None
    late = datetime(2026, 12, 6, 14, 30, tzinfo=UTC)  # 23:30 in Tokyo
    first = [admission.admit(a, _draft(i, "+14155550123"), late) for i in ("http", "smpp", "http")]
    assert [type(o) for o in first] == [Message, Message, Refusal]
    refused = first[2]
    assert isinstance(refused, Refusal) and refused.code == "limit_reached"
    assert "2026-12-06" in refused.detail
    # One of them was not stored after all: its place is free again.
    admitted = first[0]
    assert isinstance(admitted, Message)
    admission.not_stored([admitted])
    assert isinstance(admission.admit(a, _draft("smpp", "+14155550123"), late), Message)
    # Past midnight in Tokyo (still the 6th in UTC) a new day begins.
    tokyo_midnight = datetime(2026, 12, 6, 15, 0, 1, tzinfo=UTC)
    assert isinstance(admission.admit(a, _draft("http", "+14155550123"), tokyo_midnight), Message)


def test_an_account_price_plan_comes_before_the_price_list() -> None:
    accounts = AccountDirectory(
        [
            AccountConfig(id="a", api_keys=["ka"], price_plan="wholesale"),
            AccountConfig(id="b", api_keys=["kb"]),
        ]
    )
    admission = Admission(
        routes=RouteTable([("", [Candidate("sim", Decimal("0.004"))])]),
        prices=PriceTable([("1", Decimal("0.0062")), ("44", Decimal("0.03"))]),
        senders={SENDER: "a", "+14155550199": "b"},
        plans={"wholesale": PriceTable([("1416", Decimal("0.002")), ("33", Decimal("0.05"))])},
    )
    a, b = accounts.get("a"), accounts.get("b")
    assert a is not None and b is not None

    def price(account: Account, sender: str, to: str) -> Decimal | str:
        outcome = admission.admit(account, _draft("http", to, sender=sender), NOW)
        return outcome.price if isinstance(outcome, Message) else outcome.code

    # Two parts each. The plan's prefix where it has one, else [[prices]].
    assert price(a, SENDER, "+14165550123") == Decimal("0.004")
    assert price(a, SENDER, "+14155550123") == Decimal("0.0124")
    assert price(a, SENDER, "+447700900123") == Decimal("0.06")
    assert price(a, SENDER, "+33612345678") == Decimal("0.10")  # priced by the plan only
    # Another account pays the list, and has no price for France.
    assert price(b, "+14155550199", "+14165550123") == Decimal("0.0124")
    assert price(b, "+14155550199", "+33612345678") == "no_route"
