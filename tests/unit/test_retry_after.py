"""Retry-After from a webhook receiver (CONTRACT §3): its two spellings
(RFC 9110 §10.2.3) and how far it moves the next try."""

from __future__ import annotations

from email.utils import formatdate

from smsrouter.connectors.webhooks import retry_after_seconds
from smsrouter.router.notifications import MAX_RETRY_SECONDS, retry_delay

NOW = 1_800_000_000.0


def test_delay_seconds() -> None:
    assert retry_after_seconds("120", NOW) == 120.0
    assert retry_after_seconds(" 0 ", NOW) == 0.0


def test_an_http_date_counts_from_now() -> None:
    assert retry_after_seconds(formatdate(NOW + 90, usegmt=True), NOW) == 90.0
    assert retry_after_seconds("Thu, 15 Jan 2026 08:00:00 GMT", 1_800_000_000.0) == 0.0  # past


def test_anything_else_is_ignored() -> None:
    for value in ("", "soon", "-5", "1.5", "Friday"):
        assert retry_after_seconds(value, NOW) is None


def test_the_next_try_is_not_before_retry_after() -> None:
    assert retry_delay(1.0, 120.0, 3600.0) == 120.0
    # A shorter Retry-After does not bring the backoff forward.
    assert retry_delay(8.0, 2.0, 3600.0) == 8.0


def test_retry_after_is_bounded_by_the_longest_backoff_and_the_expiry() -> None:
    assert retry_delay(1.0, 86400.0, 7200.0) == MAX_RETRY_SECONDS
    assert retry_delay(1.0, 300.0, 45.0) == 45.0  # the last try at expiry
    assert retry_delay(4.0, 300.0, 2.0) == 4.0  # never sooner than the backoff
