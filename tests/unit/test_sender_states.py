"""router/sender_states.py: what a snapshot changes; and the `smsrouter
admin senders` command lines."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from smsrouter.admin_cli import build_request
from smsrouter.cli import parser
from smsrouter.router.inbound import KEYWORD_INGRESS
from smsrouter.router.sender_guard import SenderGuard
from smsrouter.router.sender_states import FLAGGED, SUSPENDED, SenderState, SenderStates, rises

A = "/admin/v1"


def _s(number: str, state: str) -> SenderState:
    return SenderState(number, "shop", state, 1, 10, 0.1, datetime.now(UTC))


def test_rises() -> None:
    assert rises(None, FLAGGED) and rises(FLAGGED, SUSPENDED) and rises(None, SUSPENDED)
    assert not rises(SUSPENDED, FLAGGED) and not rises(FLAGGED, FLAGGED)
    assert not rises(FLAGGED, None)


def test_set_applies_only_a_rise() -> None:
    states = SenderStates()
    assert states.set(_s("+1", FLAGGED)).flagged
    assert not states.suspended("+1")
    assert states.set(_s("+1", SUSPENDED)).suspended
    assert states.suspended("+1")
    changes = states.set(_s("+1", FLAGGED))
    assert changes.flagged == () and changes.suspended == () and states.suspended("+1")


def test_replace_tells_what_rose_and_what_was_cleared() -> None:
    states = SenderStates()
    states.replace([_s("+1", FLAGGED), _s("+2", SUSPENDED)])
    changes = states.replace([_s("+1", SUSPENDED), _s("+3", FLAGGED)])
    assert [s.number for s in changes.suspended] == ["+1"]
    assert [s.number for s in changes.flagged] == ["+3"]
    assert changes.cleared == ("+2",)
    assert states.suspended("+1") and not states.suspended("+2")
    assert len(states) == 2


def test_keyword_replies_are_never_refused() -> None:
    from smsrouter.router.accounts import Account
    from smsrouter.router.admission import Compliance, Draft, Recipient

    states = SenderStates()
    states.set(_s("+14155550101", SUSPENDED))
    guard = SenderGuard(states=states, thresholds=Compliance)
    from smsrouter.router.admission import Admission
    from smsrouter.router.routes import PriceTable, RouteTable

    admission = Admission(
        routes=RouteTable([]), prices=PriceTable([]), senders={}, sender_states=states
    )
    recipient = Recipient("+14155550199", "14155550199", "US")
    account = Account(
        id="shop", verified=True, locked=False, currency="USD", callback_url="",
        webhook_secret="", inbound_url="", allowed_networks=(), smpp_system_id=None,
        smpp_password_hash=None, max_binds=1,
    )  # fmt: skip
    for ingress, refused in (("http", True), (KEYWORD_INGRESS, False)):
        draft = Draft(ingress, "+14155550101", "+14155550199", "hi", "gsm7", 0, 1)
        message = admission.new_message(account, draft, recipient, datetime.now(UTC))
        assert guard.refuses(message) is refused


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["senders", "list"], ("GET", f"{A}/senders", None)),
        (["senders", "list", "--state", "suspended"], ("GET", f"{A}/senders?state=suspended", None)),
        (
            ["senders", "list", "--state", "flagged", "--limit", "5"],
            ("GET", f"{A}/senders?limit=5&state=flagged", None),
        ),
        (
            ["senders", "resume", "+14155550101"],
            ("POST", f"{A}/senders/%2B14155550101/resume", None),
        ),
    ],
)  # fmt: skip
def test_senders_commands(argv: list[str], expected: tuple[Any, ...]) -> None:
    assert build_request(parser().parse_args(["admin", *argv]), password=None) == expected
