"""Carrier health and its circuit breaker, on a virtual clock."""

from __future__ import annotations

from smsrouter.router.health import Breaker, CarrierHealth


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_in_a_row_and_probes_after_cooldown() -> None:
    clock = Clock()
    health = CarrierHealth(clock=clock, failure_threshold=3, cooldown=30)
    for _ in range(2):
        health.record_failure("a")
    assert health.allows("a") and health.state("a") is Breaker.CLOSED
    health.record_failure("a")
    assert health.state("a") is Breaker.OPEN and not health.allows("a")
    assert health.score("a") == 0.0
    clock.now = 29.9
    assert not health.allows("a")
    clock.now = 30.0
    assert health.state("a") is Breaker.HALF_OPEN
    assert health.allows("a")
    health.took("a")
    assert not health.allows("a"), "one probe at a time"
    health.record_success("a", 0.01)
    assert health.state("a") is Breaker.CLOSED and health.allows("a")


def test_failed_probe_reopens_for_a_new_cooldown() -> None:
    clock = Clock()
    health = CarrierHealth(clock=clock, failure_threshold=1, cooldown=10)
    health.record_failure("a")
    clock.now = 10
    assert health.allows("a")
    health.took("a")
    health.record_failure("a")
    assert health.state("a") is Breaker.OPEN
    clock.now = 19.9
    assert not health.allows("a")
    clock.now = 20
    assert health.allows("a")


def test_a_success_resets_the_run_of_failures() -> None:
    health = CarrierHealth(clock=Clock(), failure_threshold=3)
    for _ in range(10):
        health.record_failure("a")
        health.record_failure("a")
        health.record_success("a", 0.02)
    assert health.state("a") is Breaker.CLOSED


def test_score_follows_success_and_receipts() -> None:
    health = CarrierHealth(clock=Clock(), alpha=0.5)
    assert health.score("new") == 1.0
    health.record_failure("a")
    assert health.score("a") == 0.5
    health.record_success("b", 0.1)
    health.record_receipt("b", delivered=False)
    assert health.score("b") == 0.5
    snap = health.snapshot("b")
    assert snap["latency_ms"] == 50.0 and snap["state"] == "closed"
