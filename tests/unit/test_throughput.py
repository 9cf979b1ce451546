"""Throughput plans (CONTRACT §6): a bucket of one second per account."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrouter.router.throughput import ThroughputPlans


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_quiet_account_may_send_a_second_of_its_plan_at_once_then_waits() -> None:
    clock = Clock()
    plans = ThroughputPlans(clock)
    assert [plans.take("a", 5) for _ in range(5)] == [0.0] * 5
    wait = plans.take("a", 5)
    assert wait == pytest.approx(0.2)
    clock.now += 0.1
    assert plans.take("a", 5) == pytest.approx(0.1)  # a refusal counts nothing
    clock.now += 0.1
    assert plans.take("a", 5) == 0.0
    assert plans.take("a", 5) == pytest.approx(0.2)


def test_accounts_have_buckets_of_their_own() -> None:
    plans = ThroughputPlans(Clock())
    assert plans.take("a", 1) == 0.0
    assert plans.take("a", 1) > 0
    assert plans.take("b", 1) == 0.0


def test_a_plan_under_one_a_second_lets_one_message_through_per_interval() -> None:
    clock = Clock()
    plans = ThroughputPlans(clock)
    assert plans.take("a", 0.5) == 0.0
    assert plans.take("a", 0.5) == pytest.approx(2.0)
    clock.now += 2.0
    assert plans.take("a", 0.5) == 0.0


@settings(max_examples=200)
@given(
    max_tps=st.sampled_from([0.5, 1, 3, 10, 250]),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=400),
)
def test_over_any_stretch_no_more_than_the_plan_plus_its_burst_is_accepted(
    max_tps: float, gaps: list[float]
) -> None:
    clock = Clock()
    plans = ThroughputPlans(clock)
    start = clock.now
    accepted = 0
    for gap in gaps:
        clock.now += gap
        if plans.take("a", max_tps) == 0.0:
            accepted += 1
    burst = max(max_tps, 1)
    assert accepted <= burst + max_tps * (clock.now - start) + 1e-6
    # And a sender that never stops is refused only when over the plan: after
    # a pause of a whole second, a message always fits.
    clock.now += max(1.0, 1.0 / max_tps)
    assert plans.take("a", max_tps) == 0.0


@pytest.mark.parametrize("max_tps", [5.0, 0.5])
def test_a_bucket_the_database_found_full_refuses_until_it_drains(max_tps: float) -> None:
    """Other instances used the account's bucket (migration 0014): filled
    here, the next message waits one interval past a full bucket."""
    clock = Clock()
    plans = ThroughputPlans(clock)
    assert plans.take("a", max_tps) == 0.0
    plans.fill("a")
    assert plans.take("a", max_tps) == pytest.approx(1.0 / max_tps)
    clock.now += 1.0 / max_tps
    assert plans.take("a", max_tps) == 0.0
    plans.fill("b")  # an account with nothing counted yet
    assert plans.take("b", max_tps) > 0
