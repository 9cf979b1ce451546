"""CONTRACT §6 "Templates" in `Admission.admit` and the directory's cache:
an account with templates_required sends only its approved templates, by
id over HTTP and as a matching text over SMPP."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from smsrouter.router.accounts import Account, AccountDirectory, directory_of_config
from smsrouter.router.admission import Admission, Draft, Refusal
from smsrouter.router.config import AccountConfig
from smsrouter.router.messages import Message
from smsrouter.router.routes import Candidate, PriceTable, RouteTable
from smsrouter.router.store.directory import Directory, TemplateRow

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SENDER = "+14155550101"
OTP = TemplateRow("tpl_otp", "a", "otp", "Your code is {code}.", "transactional")
SHIP = TemplateRow("tpl_ship", "a", "ship", "Order {n} ships {day}.", None)
OTHER = TemplateRow("tpl_b", "b", "b", "Hello {name}", None)


def _directory(rows: tuple[TemplateRow, ...], *, required: bool = True) -> Directory:
    base = directory_of_config(
        [
            AccountConfig(id="a", api_keys=["ka"], templates_required=required),
            AccountConfig(id="b", api_keys=["kb"]),
        ]
    )
    return Directory(base.accounts, base.api_keys, base.smpp, (), base.sender_ids, rows)


def _setup(
    rows: tuple[TemplateRow, ...] = (OTP, SHIP, OTHER), *, required: bool = True
) -> tuple[Admission, AccountDirectory]:
    accounts = AccountDirectory()
    accounts.apply(_directory(rows, required=required))
    admission = Admission(
        routes=RouteTable([("1", [Candidate("sim", Decimal("0.004"))])]),
        prices=PriceTable([("1", Decimal("0.0062"))]),
        senders={SENDER: "a", "+14155550102": "b"},
    )
    return admission, accounts


def _account(accounts: AccountDirectory, account_id: str) -> Account:
    account = accounts.get(account_id)
    assert account is not None
    return account


def _draft(ingress: str, body: str, **more: object) -> Draft:
    return Draft(
        ingress=ingress, sender=SENDER, to="+14155550123", body=body, encoding="gsm7",
        data_coding=0, parts=1, **more,  # type: ignore[arg-type]
    )  # fmt: skip


def test_the_directory_holds_each_accounts_approved_templates() -> None:
    _, accounts = _setup()
    a, b = _account(accounts, "a"), _account(accounts, "b")
    assert sorted(a.templates) == ["tpl_otp", "tpl_ship"]
    assert list(b.templates) == ["tpl_b"]
    assert a.template_matcher.match("Your code is 42.") is a.templates["tpl_otp"]
    assert b.template_matcher.match("Your code is 42.") is None


def test_a_reload_keeps_the_matcher_of_unchanged_templates_and_rebuilds_changed_ones() -> None:
    _, accounts = _setup()
    a_matcher = _account(accounts, "a").template_matcher
    b_matcher = _account(accounts, "b").template_matcher
    accounts.apply(_directory((OTP, SHIP)))  # b's template left
    assert _account(accounts, "a").template_matcher is a_matcher
    b = _account(accounts, "b")
    assert b.templates == {} and len(b.template_matcher) == 0
    assert b.template_matcher is not b_matcher
    accounts.apply(_directory((OTP,)))
    a = _account(accounts, "a")
    assert a.template_matcher is not a_matcher
    assert a.template_matcher.match("Order 1 ships today.") is None


def test_over_http_a_free_text_is_refused_template_required() -> None:
    admission, accounts = _setup()
    refused = admission.admit(_account(accounts, "a"), _draft("http", "Your code is 42."), NOW)
    assert isinstance(refused, Refusal)
    assert refused.code == "template_required"
    assert '"template"' in refused.detail


def test_over_http_a_text_rendered_from_an_approved_template_passes() -> None:
    admission, accounts = _setup()
    a = _account(accounts, "a")
    message = admission.admit(a, _draft("http", "Your code is 42.", template_id="tpl_otp"), NOW)
    assert isinstance(message, Message)
    assert message.body == "Your code is 42."


def test_over_http_a_template_no_longer_approved_here_is_refused() -> None:
    admission, accounts = _setup()
    a = _account(accounts, "a")
    for template_id in ("tpl_gone", "tpl_b"):  # unknown here; another account's
        refused = admission.admit(a, _draft("http", "x", template_id=template_id), NOW)
        assert isinstance(refused, Refusal) and refused.code == "template_required"


def test_over_smpp_a_matching_text_passes_and_others_are_refused() -> None:
    admission, accounts = _setup()
    a = _account(accounts, "a")
    assert isinstance(admission.admit(a, _draft("smpp", "Order 7 ships Monday."), NOW), Message)
    for text in ("Order 7 ships Monday", "Buy now!", "Hello Bob"):
        refused = admission.admit(a, _draft("smpp", text), NOW)
        assert isinstance(refused, Refusal), text
        assert refused.code == "template_required"
        assert "matches none" in refused.detail


def test_over_smpp_binary_data_is_no_template() -> None:
    admission, accounts = _setup()
    a = _account(accounts, "a")
    draft = Draft(
        ingress="smpp", sender=SENDER, to="+14155550123", body="Your code is 42.",
        encoding="binary", data_coding=4, parts=1,
    )  # fmt: skip
    refused = admission.admit(a, draft, NOW)
    assert isinstance(refused, Refusal) and refused.code == "template_required"


def test_without_templates_required_any_text_passes() -> None:
    admission, accounts = _setup(required=False)
    a = _account(accounts, "a")
    for ingress in ("http", "smpp"):
        assert isinstance(admission.admit(a, _draft(ingress, "Buy now!"), NOW), Message)


def test_an_account_without_approved_templates_sends_nothing_when_required() -> None:
    admission, accounts = _setup(())
    a = _account(accounts, "a")
    for ingress in ("http", "smpp"):
        refused = admission.admit(a, _draft(ingress, "Your code is 42."), NOW)
        assert isinstance(refused, Refusal) and refused.code == "template_required"


def test_the_earlier_rules_refuse_first() -> None:
    admission, accounts = _setup()
    a = _account(accounts, "a")
    refused = admission.admit(
        a,
        _draft(
            "smpp",
            "Buy now!",
        ),
        NOW,
    )
    assert isinstance(refused, Refusal) and refused.code == "template_required"
    bad = Draft(
        ingress="smpp", sender=SENDER, to="nonsense", body="Buy now!", encoding="gsm7",
        data_coding=0, parts=1,
    )  # fmt: skip
    refused = admission.admit(a, bad, NOW)
    assert isinstance(refused, Refusal) and refused.code == "invalid_number"
