"""Sender numbers: classification, SMPP address forms, queue keys and rates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsrouter.connectors.smpp.address import SmppAddress, parse_smpp_address, smpp_address
from smsrouter.router.senders import (
    NumberType,
    RateDefaults,
    SenderRates,
    canonical_sender,
    classify_sender,
)

LONG, TOLL, SHORT, ALPHA = (
    NumberType.LONG_CODE,
    NumberType.TOLL_FREE,
    NumberType.SHORT_CODE,
    NumberType.ALPHANUMERIC,
)


@pytest.mark.parametrize(
    ("sender", "kind"),
    [
        ("+14155550101", LONG),
        ("14155550101", LONG),
        ("+447700900123", LONG),
        ("12345", SHORT),
        ("123456", SHORT),
        ("1234", LONG),
        ("1234567", LONG),
        ("+12345", LONG),
        ("+18005550100", TOLL),
        ("18005550100", TOLL),
        ("+18335550100", TOLL),
        ("+18445550100", TOLL),
        ("+18555550100", TOLL),
        ("+18665550100", TOLL),
        ("+18775550100", TOLL),
        ("+18885550100", TOLL),
        ("+18225550100", LONG),
        ("+18105550100", LONG),
        ("+448005550100", LONG),
        ("MyBrand", ALPHA),
        ("INFO", ALPHA),
        ("Shop 24", ALPHA),
        ("1a2b3", ALPHA),
    ],
)
def test_classify_sender(sender: str, kind: NumberType) -> None:
    assert classify_sender(sender) is kind


@pytest.mark.parametrize(
    "sender", ["", "+", "12-34", "+1 415 555", "\u0661\u0662\u0663\u0664\u0665"]
)
def test_classify_refuses_what_is_no_sender(sender: str) -> None:
    with pytest.raises(ValueError):
        classify_sender(sender)


@pytest.mark.parametrize(
    ("sender", "canonical"),
    [
        ("14155550101", "+14155550101"),
        ("+14155550101", "+14155550101"),
        ("12345", "12345"),
        ("MyBrand", "MyBrand"),
    ],
)
def test_canonical_sender(sender: str, canonical: str) -> None:
    assert canonical_sender(sender) == canonical


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("+14155550101", SmppAddress(1, 1, "14155550101")),
        ("14155550101", SmppAddress(1, 1, "14155550101")),
        ("+18005550100", SmppAddress(1, 1, "18005550100")),
        ("12345", SmppAddress(3, 0, "12345")),
        ("MyBrand", SmppAddress(5, 0, "MyBrand")),
    ],
)
def test_smpp_address(address: str, expected: SmppAddress) -> None:
    assert smpp_address(address) == expected


def test_smpp_address_fits_the_pdu_field() -> None:
    assert smpp_address("A" * 20).addr == "A" * 20
    with pytest.raises(ValueError, match="octets"):
        smpp_address("A" * 21)


@pytest.mark.parametrize(
    ("ton", "npi", "addr", "expected"),
    [
        (1, 1, "14155550101", "+14155550101"),
        (1, 1, "+14155550101", "+14155550101"),
        (1, 0, "447700900123", "+447700900123"),
        (5, 0, "MyBrand", "MyBrand"),
        (5, 0, "12345", "12345"),
        (3, 0, "12345", "12345"),
        (0, 0, "12345", "12345"),
        (0, 0, "447700900123", "+447700900123"),
        (0, 1, "4477009001", "+4477009001"),
        (0, 0, "123456789", "123456789"),
        (0, 0, "Alerts", "Alerts"),
        (2, 1, "4155550101", "4155550101"),
    ],
)
def test_parse_smpp_address(ton: int, npi: int, addr: str, expected: str) -> None:
    assert parse_smpp_address(ton, npi, addr) == expected


@pytest.mark.parametrize("addr", ["", "12-34"])
def test_parse_smpp_address_refuses_garbage(addr: str) -> None:
    with pytest.raises(ValueError):
        parse_smpp_address(1, 1, addr)


@pytest.mark.parametrize("sender", ["+14155550101", "+18005550100", "12345", "MyBrand"])
def test_smpp_address_round_trip(sender: str) -> None:
    a = smpp_address(sender)
    assert parse_smpp_address(a.ton, a.npi, a.addr) == sender


# -- rates ------------------------------------------------------------------

TF_US = "+18005550100"
LC = "+14155550101"


@pytest.fixture
def rates() -> SenderRates:
    return SenderRates(
        RateDefaults(),
        {"CA": {TOLL: 1.0}, "GB": {ALPHA: 5.0}},
        {
            LC: (LONG, None),
            "+18885550199": (TOLL, 20.0),
            "+14155550999": (TOLL, None),
        },
    )


def test_defaults_match_the_contract() -> None:
    d = RateDefaults()
    assert (d.long_code, d.toll_free, d.short_code, d.alphanumeric) == (0.25, 40.0, 100.0, 10.0)
    assert d.for_type(SHORT) == 100.0


@pytest.mark.parametrize(
    ("sender", "country", "key", "rate"),
    [
        (TF_US, "US", TF_US, 40.0),
        (TF_US, "CA", f"{TF_US}|CA", 1.0),
        (TF_US, "ca", f"{TF_US}|CA", 1.0),
        (TF_US, None, TF_US, 40.0),
        ("18005550100", "CA", f"{TF_US}|CA", 1.0),
        (LC, "CA", LC, 0.25),
        ("14155550101", "US", LC, 0.25),
        ("12345", "CA", "12345", 100.0),
        ("MyBrand", "GB", "MyBrand|GB", 5.0),
        ("MyBrand", "FR", "MyBrand", 10.0),
        # The number's own rate wins everywhere, so one bucket for all countries.
        ("+18885550199", "CA", "+18885550199", 20.0),
        ("+18885550199", "US", "+18885550199", 20.0),
        # Configured as toll-free although its form says long code.
        ("+14155550999", "CA", "+14155550999|CA", 1.0),
        ("+14155550999", "US", "+14155550999", 40.0),
    ],
)
def test_queue_key_and_rate(
    rates: SenderRates, sender: str, country: str | None, key: str, rate: float
) -> None:
    assert rates.queue_key(sender, country) == key
    assert rates.rate_of(key) == rate


def test_number_type_configured_else_classified(rates: SenderRates) -> None:
    assert rates.number_type("+14155550999") is TOLL
    assert rates.number_type("14155550999") is TOLL
    assert rates.number_type("+14155550998") is LONG
    assert rates.number_type("MyBrand") is ALPHA


def test_plain_strings_from_toml_work_as_types() -> None:
    # The config loader hands over {"toll_free": 1.0}, not NumberType keys.
    rates = SenderRates(
        RateDefaults(toll_free=30.0),
        {"ca": {"toll_free": 2.0}},
        {"+15555550100": ("short_code", 7.0)},
    )
    assert rates.queue_key(TF_US, "CA") == f"{TF_US}|CA"
    assert rates.rate_of(f"{TF_US}|CA") == 2.0
    assert rates.rate_of(TF_US) == 30.0
    assert rates.number_type("+15555550100") is SHORT
    assert rates.rate_of("+15555550100") == 7.0


def test_rate_of_a_key_made_under_an_older_config() -> None:
    rates = SenderRates(RateDefaults(), {}, {})
    # [rates.country.CA] was removed by a reload: the type default applies.
    assert rates.rate_of(f"{TF_US}|CA") == 40.0


def test_sender_with_separator_is_refused(rates: SenderRates) -> None:
    with pytest.raises(ValueError):
        rates.queue_key("A|CA", "US")


@given(st.from_regex(r"\A\+[0-9]{1,24}\Z"))
def test_plus_and_digits_travel_as_an_international_number(address: str) -> None:
    """The short cut for '+digits' agrees with the classification it skips."""
    assert classify_sender(address) not in (NumberType.SHORT_CODE, NumberType.ALPHANUMERIC)
    if len(address) - 1 > 20:
        with pytest.raises(ValueError):
            smpp_address(address)
    else:
        assert smpp_address(address) == SmppAddress(1, 1, address[1:])


def test_queue_keys_stay_right_when_asked_again_past_the_cache_bound(
    rates: SenderRates, monkeypatch: pytest.MonkeyPatch
) -> None:
    import smsrouter.router.senders

    monkeypatch.setattr(smsrouter.router.senders, "_KEYS_CACHED", 3)
    asked = [(TF_US, "CA"), (TF_US, "US"), ("MyBrand", "GB"), (LC, "CA"), ("12345", None)]
    first = [rates.queue_key(s, c) for s, c in asked]
    again = [rates.queue_key(s, c) for s, c in reversed(asked)]
    assert first == [f"{TF_US}|CA", TF_US, "MyBrand|GB", LC, "12345"]
    assert again == first[::-1]
    with pytest.raises(ValueError):  # refusals are not remembered as keys
        rates.queue_key("a|b", "US")
    with pytest.raises(ValueError):
        rates.queue_key("a|b", "US")
