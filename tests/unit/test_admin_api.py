"""The operator API's reading of requests (CONTRACT §8, admin_http): bodies,
money, numbers; the HTTP round trips are in tests/integration/test_admin_api.py."""

from __future__ import annotations

from decimal import Decimal

import pytest

from smsrouter.connectors import admin_api
from smsrouter.connectors.admin_requests import PATCH_FIELDS, AccountPatch, SmppPut
from smsrouter.router.admission import FieldError
from smsrouter.router.store import directory


def test_a_patch_body_holds_exactly_the_fields_the_directory_may_patch() -> None:
    assert frozenset(PATCH_FIELDS) == directory.PATCHABLE


def test_a_body_keeps_its_good_fields_and_names_every_bad_one() -> None:
    body, errors = admin_api._decode(
        b'{"locked": true, "verified": 1, "max_tps": 2, "credit_limit": 3, "x": 0}', AccountPatch
    )
    assert body.locked is True
    assert body.max_tps == 2.0
    assert errors == [
        FieldError("x", "unknown_field", "not a field of this request"),
        FieldError("verified", "invalid", "Expected `bool`, got `int`"),
        FieldError("credit_limit", "invalid", "a decimal string, not a JSON number"),
    ]


def test_a_body_without_a_required_field_of_its_type_is_refused_at_once() -> None:
    for raw in (
        b'{"system_id": "s", "password": "p"}',
        b'{"system_id": "s", "password": 1, "max_binds": 1}',
    ):
        with pytest.raises(admin_api._Answer) as refused:
            admin_api._decode(raw, SmppPut)
        assert refused.value.response.status == 422


def test_a_nested_type_error_names_its_position() -> None:
    _, errors = admin_api._decode(b'{"allowed_ips": ["10.0.0.1", 7]}', AccountPatch)
    assert errors == [
        FieldError("allowed_ips", "invalid", "Expected `str`, got `int` - at `allowed_ips[1]`")
    ]


@pytest.mark.parametrize(
    ("written", "value"),
    [("12.50", Decimal("12.50")), ("-3", Decimal(-3)), ("+0.000001", Decimal("0.000001")),
     ("000999999999999", Decimal("999999999999"))],
)  # fmt: skip
def test_money_in_plain_decimal_notation_within_the_bounds(written: str, value: Decimal) -> None:
    errors: list[FieldError] = []
    assert admin_api._money("amount", written, errors) == value
    assert errors == []


@pytest.mark.parametrize(
    "written",
    ["", "1e3", "NaN", "Infinity", "1.", ".5", "1,5", " 1", "1_000", "١٢", "1.0000001",
     "1000000000000"],
)  # fmt: skip
def test_money_in_any_other_form_is_refused(written: str) -> None:
    errors: list[FieldError] = []
    assert admin_api._money("amount", written, errors) is None
    assert [e.field for e in errors] == ["amount"]


@pytest.mark.parametrize(
    ("number", "valid"),
    [("+14155550101", True), ("12345", True), ("ACME", True), ("My Brand", True),
     ("14155550101", False), ("+1415555010100000", False), ("TWELVECHARSX", False),
     ("AC|ME", False), ("", False), ("+", False), ("ÄCME", False)],
)  # fmt: skip
def test_a_number_is_written_as_the_router_writes_it(number: str, valid: bool) -> None:
    errors: list[FieldError] = []
    admin_api._sender("number", number, errors)
    assert (errors == []) is valid
