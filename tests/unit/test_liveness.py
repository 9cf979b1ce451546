"""DatabaseLiveness: what /readyz and /healthz answer, on a fake clock."""

from __future__ import annotations

import pytest

from smsrouter.router.liveness import DatabaseLiveness


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_starts_reachable_and_alive(clock: FakeClock) -> None:
    liveness = DatabaseLiveness(60, clock=clock)
    assert liveness.reachable
    assert liveness.unreachable_for() == 0.0
    assert liveness.alive()
    clock.now += 3600  # time alone changes nothing while contacts succeed
    assert liveness.alive() and liveness.unreachable_for() == 0.0


def test_a_failure_makes_it_unreachable_at_once_and_dead_after_liveness_seconds(
    clock: FakeClock,
) -> None:
    liveness = DatabaseLiveness(60, clock=clock)
    assert liveness.failed("ConnectionRefusedError") is True
    assert not liveness.reachable
    assert liveness.last_error == "ConnectionRefusedError"
    assert liveness.alive()
    clock.now += 59.9
    assert liveness.unreachable_for() == pytest.approx(59.9)
    assert liveness.alive()
    clock.now += 0.1
    assert not liveness.alive()
    assert liveness.unreachable_for() == pytest.approx(60.0)


def test_the_outage_counts_from_its_first_failure_not_the_latest(clock: FakeClock) -> None:
    liveness = DatabaseLiveness(10, clock=clock)
    liveness.failed("first")
    for _ in range(9):
        clock.now += 1
        assert liveness.failed("again") is False  # not a new outage
    assert liveness.last_error == "again"
    assert liveness.unreachable_for() == pytest.approx(9.0)
    clock.now += 1
    assert not liveness.alive()


def test_a_timed_out_contact_counts_from_when_it_began(clock: FakeClock) -> None:
    liveness = DatabaseLiveness(5, clock=clock)
    began = clock.now
    clock.now += 2  # the probe hung until its timeout
    liveness.failed("TimeoutError", began=began)
    assert liveness.unreachable_for() == pytest.approx(2.0)
    clock.now += 3
    assert not liveness.alive()


def test_a_success_ends_the_outage_and_says_how_long_it_lasted(clock: FakeClock) -> None:
    liveness = DatabaseLiveness(2, clock=clock)
    assert liveness.succeeded() is None  # no outage to end
    liveness.failed("gone")
    clock.now += 7.5
    assert not liveness.alive()
    assert liveness.succeeded() == pytest.approx(7.5)
    assert liveness.reachable and liveness.alive()
    assert liveness.unreachable_for() == 0.0
    assert liveness.last_error is None
    # The next outage starts from zero again.
    clock.now += 100
    assert liveness.failed("gone again") is True
    clock.now += 1
    assert liveness.alive()
    assert liveness.unreachable_for() == pytest.approx(1.0)


def test_an_explicit_now_is_used_instead_of_the_clock(clock: FakeClock) -> None:
    liveness = DatabaseLiveness(60, clock=clock)
    liveness.failed("gone")
    assert liveness.alive(clock.now + 59)
    assert not liveness.alive(clock.now + 61)
    assert liveness.unreachable_for(clock.now + 61) == pytest.approx(61.0)
    # A now before the outage began (clocks read in another order) is no outage yet.
    assert liveness.unreachable_for(clock.now - 5) == 0.0


def test_liveness_seconds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DatabaseLiveness(0)
