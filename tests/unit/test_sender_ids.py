"""Sender-ID rules per destination country and protected sender IDs
(CONTRACT §6 "Sender-ID rules per destination country")."""

from __future__ import annotations

import pytest

from smsrouter.router.sender_ids import (
    SENDER_ID_NOT_ALLOWED,
    SENDER_ID_PROTECTED,
    SenderIdRefusal,
    SenderIdRules,
    SenderRule,
    country_code,
)
from smsrouter.router.senders import NumberType

ALNUM, LONG, TOLL_FREE, SHORT = (
    NumberType.ALPHANUMERIC,
    NumberType.LONG_CODE,
    NumberType.TOLL_FREE,
    NumberType.SHORT_CODE,
)
NONE: dict[str, frozenset[str]] = {}


def rules(*entries: SenderRule, protected: tuple[str, ...] = ()) -> SenderIdRules:
    return SenderIdRules(entries, protected)


# -- SenderRule.parse: what config reuses to validate [[sender_rules]] --------


def test_a_rule_is_parsed_with_its_country_upper_cased_and_allowed_by_default() -> None:
    assert SenderRule.parse("us", alphanumeric="refused") == SenderRule("US", "refused", "allowed")
    assert SenderRule.parse("AE") == SenderRule("AE", "allowed", "allowed")
    assert SenderRule.parse("in", "registered", "registered").numeric == "registered"


@pytest.mark.parametrize("country", ["USA", "U", "", "1A", "U.", "ÜS", "  "])
def test_a_country_that_is_no_iso_code_is_refused(country: str) -> None:
    with pytest.raises(ValueError, match="ISO 3166 alpha-2"):
        SenderRule.parse(country)
    with pytest.raises(ValueError, match="ISO 3166 alpha-2"):
        country_code(country)


def test_a_policy_outside_the_contract_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"alphanumeric must be .*'registered', not 'blocked'"):
        SenderRule.parse("US", alphanumeric="blocked")
    # A numeric sender can be asked to register, never refused outright.
    with pytest.raises(ValueError, match=r"numeric must be 'allowed' \| 'registered'"):
        SenderRule.parse("US", numeric="refused")
    with pytest.raises(ValueError, match="alphanumeric"):
        SenderRule.parse("US", alphanumeric="Allowed")  # values are exact words


def test_two_rules_for_one_country_are_refused() -> None:
    with pytest.raises(ValueError, match=r"two .* for country US"):
        rules(SenderRule.parse("US"), SenderRule.parse("us", alphanumeric="refused"))


# -- destination rules --------------------------------------------------------


def test_no_rule_for_the_country_or_no_country_admits_any_sender() -> None:
    table = rules(SenderRule.parse("US", "refused", "registered"))
    assert table.check("ACME", ALNUM, "GB", NONE) is None
    assert table.check("+14155550101", LONG, "FR", NONE) is None
    assert table.check("ACME", ALNUM, None, NONE) is None
    assert rules().check("ACME", ALNUM, "US", NONE) is None


def test_refused_alphanumeric_names_the_country_and_the_rule() -> None:
    table = rules(SenderRule.parse("US", alphanumeric="refused"))
    assert table.check("ACME", ALNUM, "US", NONE) == SenderIdRefusal(
        SENDER_ID_NOT_ALLOWED,
        "sender 'ACME' to US: alphanumeric sender IDs are refused"
        " ([[sender_rules]] US alphanumeric = refused)",
    )
    # Registering it does not help where the country refuses them all.
    assert table.check("ACME", ALNUM, "US", {"ACME": frozenset({"US"})}) is not None
    # Numbers are the numeric rule's, allowed here.
    for sender, kind in (("+14155550101", LONG), ("+18005550100", TOLL_FREE), ("12345", SHORT)):
        assert table.check(sender, kind, "US", NONE) is None


def test_registered_alphanumeric_admits_only_an_id_registered_for_that_country() -> None:
    table = rules(SenderRule.parse("AE", alphanumeric="registered"))
    for_ae = {"ACME": frozenset({"AE", "SA"})}
    assert table.check("ACME", ALNUM, "AE", for_ae) is None
    elsewhere = table.check("ACME", ALNUM, "AE", {"ACME": frozenset({"SA"})})
    assert elsewhere == SenderIdRefusal(
        SENDER_ID_NOT_ALLOWED,
        "sender 'ACME' to AE: alphanumeric sender IDs must be registered for AE"
        " ([[sender_rules]] AE alphanumeric = registered);"
        " 'ACME' is not registered for AE for this account",
    )
    unregistered = table.check("OTHER", ALNUM, "AE", for_ae)
    assert unregistered is not None and unregistered.code == SENDER_ID_NOT_ALLOWED
    # The handset shows the exact text: another spelling is another ID.
    assert table.check("Acme", ALNUM, "AE", for_ae) is not None
    # Numbers stay allowed in AE.
    assert table.check("+971501234567", LONG, "AE", NONE) is None


def test_registered_numeric_admits_a_registered_number_however_it_is_written() -> None:
    table = rules(SenderRule.parse("IN", numeric="registered"))
    registered = {"+919876543210": frozenset({"IN"}), "56161": frozenset({"IN"})}
    assert table.check("+919876543210", LONG, "IN", registered) is None
    # SMPP's TON 1 carries no '+': the same number.
    assert table.check("919876543210", LONG, "IN", registered) is None
    assert table.check("56161", SHORT, "IN", registered) is None
    # Registered without '+' counts for the '+' spelling too.
    assert table.check("+919876543211", LONG, "IN", {"919876543211": frozenset({"IN"})}) is None
    refused = table.check("+919876543299", LONG, "IN", registered)
    assert refused is not None and refused.code == SENDER_ID_NOT_ALLOWED
    assert refused.detail.startswith("sender '+919876543299' to IN: numeric sender IDs must be")
    assert "([[sender_rules]] IN numeric = registered)" in refused.detail
    # Every non-alphanumeric type follows the numeric rule.
    assert table.check("+18005550100", TOLL_FREE, "IN", NONE) is not None
    assert table.check("56162", SHORT, "IN", registered) is not None
    # Alphanumeric senders follow theirs, allowed here.
    assert table.check("ACME", ALNUM, "IN", NONE) is None


def test_the_rule_is_looked_up_by_the_destination_country() -> None:
    table = rules(
        SenderRule.parse("US", alphanumeric="refused"),
        SenderRule.parse("AE", alphanumeric="registered"),
    )
    registered = {"ACME": frozenset({"AE"})}
    assert table.check("ACME", ALNUM, "AE", registered) is None
    assert table.check("ACME", ALNUM, "US", registered) is not None
    assert table.check("ACME", ALNUM, "DE", registered) is None
    assert table.rule_for("us") == SenderRule("US", "refused", "allowed")
    assert table.rule_for("DE") is None


# -- protected sender IDs -----------------------------------------------------


def test_a_protected_id_is_refused_in_any_case_and_to_any_country() -> None:
    table = rules(protected=("APPLE", "PayPal"))
    for sender in ("PAYPAL", "paypal", "PayPal", "Apple"):
        for country in ("US", "GB", None):
            refusal = table.check(sender, ALNUM, country, NONE)
            assert refusal is not None and refusal.code == SENDER_ID_PROTECTED, (sender, country)
            assert f"sender {sender!r} is a protected sender ID" in refusal.detail
            assert "protected_sender_ids" in refusal.detail
    assert table.check("PAYPALS", ALNUM, "US", NONE) is None
    assert rules().check("PAYPAL", ALNUM, "US", NONE) is None


def test_a_protected_id_registered_by_the_account_in_any_country_passes_that_check() -> None:
    table = rules(SenderRule.parse("AE", alphanumeric="registered"), protected=("PAYPAL",))
    owner = {"PAYPAL": frozenset({"GB"})}
    assert table.check("PAYPAL", ALNUM, "US", owner) is None
    # In any case: registration proves the brand is the account's.
    assert table.check("PayPal", ALNUM, "US", owner) is None
    assert table.check("PAYPAL", ALNUM, "US", {"PayPal": frozenset({"GB"})}) is None
    # The destination's rule still applies: registered for GB, not for AE.
    refusal = table.check("PAYPAL", ALNUM, "AE", owner)
    assert refusal is not None and refusal.code == SENDER_ID_NOT_ALLOWED
    assert table.check("PAYPAL", ALNUM, "AE", {"PAYPAL": frozenset({"AE"})}) is None
    # Another account's registration of another brand is no help.
    refused = table.check("PAYPAL", ALNUM, "US", {"ACME": frozenset({"US"})})
    assert refused is not None and refused.code == SENDER_ID_PROTECTED


def test_the_protected_check_comes_before_the_country_rule() -> None:
    table = rules(SenderRule.parse("US", alphanumeric="refused"), protected=("APPLE",))
    refusal = table.check("APPLE", ALNUM, "US", NONE)
    assert refusal is not None and refusal.code == SENDER_ID_PROTECTED
