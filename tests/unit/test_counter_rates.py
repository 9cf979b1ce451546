"""Rates of counters over a sliding window (router/counter_rates.py), on a
virtual clock: what the status page shows as messages per second."""

from __future__ import annotations

import pytest

from smsrouter.router.counter_rates import CounterRates


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_rate_before_two_samples_a_min_span_apart() -> None:
    clock = Clock()
    rates = CounterRates(window=5, min_span=0.5, clock=clock)
    assert rates.rate("out") is None
    rates.sample({"out": 10})
    assert rates.rate("out") is None and rates.span() is None
    clock.now += 0.2
    rates.sample({"out": 12})
    assert rates.rate("out") is None, "0.2 s says too little"
    clock.now += 0.8
    rates.sample({"out": 30})
    assert rates.rate("out") == pytest.approx(20.0)  # 20 more in 1 s


def test_the_rate_is_taken_over_the_window_and_falls_to_zero_when_counting_stops() -> None:
    clock = Clock()
    rates = CounterRates(window=5, clock=clock)
    total = 0.0
    for _ in range(10):  # 10 per second for 10 s
        rates.sample({"out": total})
        clock.now += 1
        total += 10
    rates.sample({"out": total})
    assert rates.span() == pytest.approx(5.0)
    assert rates.rate("out") == pytest.approx(10.0)
    for _ in range(3):  # stopped: the window still holds some growth
        clock.now += 1
        rates.sample({"out": total})
    assert rates.rate("out") == pytest.approx(4.0)  # 20 over the last 5 s
    for _ in range(3):
        clock.now += 1
        rates.sample({"out": total})
    assert rates.rate("out") == 0.0


def test_a_look_after_a_long_pause_starts_over_rather_than_average_the_pause() -> None:
    clock = Clock()
    rates = CounterRates(window=5, clock=clock)
    rates.sample({"out": 0})
    clock.now += 3600
    rates.sample({"out": 36_000})
    assert rates.rate("out") is None
    clock.now += 1
    rates.sample({"out": 36_050})
    assert rates.rate("out") == pytest.approx(50.0)


def test_a_counter_that_appears_later_started_at_zero_and_one_that_falls_gives_zero() -> None:
    clock = Clock()
    rates = CounterRates(window=5, clock=clock)
    rates.sample({"a": 5})
    clock.now += 2
    rates.sample({"a": 1, "b": 8})
    assert rates.rate("b") == pytest.approx(4.0)
    assert rates.rate("a") == 0.0
    assert rates.rate("never") == 0.0


@pytest.mark.parametrize(("window", "min_span"), [(0, 0), (-1, 0), (5, -1), (5, 6)])
def test_a_window_that_cannot_hold_a_rate_is_refused(window: float, min_span: float) -> None:
    with pytest.raises(ValueError):
        CounterRates(window=window, min_span=min_span)
