"""Failed authentications per source address: 20 in a minute → a cool-down."""

from __future__ import annotations

from smsrouter.router.auth_throttle import AuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_twenty_failures_in_a_minute_start_a_cooldown_once() -> None:
    clock = Clock()
    throttle = AuthThrottle(clock=clock)
    started = [throttle.failed("10.0.0.1") for _ in range(20)]
    assert started == [False] * 19 + [True]
    assert throttle.retry_after("10.0.0.1") == 60.0
    assert throttle.retry_after("10.0.0.2") == 0.0  # another address is not affected
    clock.now += 59.0
    assert throttle.retry_after("10.0.0.1") == 1.0
    clock.now += 1.0
    assert throttle.retry_after("10.0.0.1") == 0.0


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    throttle = AuthThrottle(clock=clock)
    for _ in range(19):
        throttle.failed("a")
    clock.now += 60.0
    assert not throttle.failed("a")
    assert throttle.retry_after("a") == 0.0


def test_memory_is_bounded_by_the_number_of_addresses() -> None:
    clock = Clock()
    throttle = AuthThrottle(clock=clock, limit=2, max_addresses=3)
    for n in range(10):
        throttle.failed(f"10.0.0.{n}")
    assert len(throttle._failures) == 3
    for n in range(10):
        throttle.failed(f"10.0.1.{n}")
        throttle.failed(f"10.0.1.{n}")
        assert throttle.blocked_addresses <= 3
    assert throttle.retry_after("10.0.1.9") == 60.0  # the newest cool-down is kept
