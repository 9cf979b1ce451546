"""Repeated log lines: once per interval per key, with the count held back."""

from __future__ import annotations

from typing import Any

from smsrouter.router.log_limits import LimitedLog, RepeatLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((level, event, kw))


def test_first_line_written_repeats_held_until_the_interval_passes() -> None:
    clock = Clock()
    limiter = RepeatLimiter(10.0, clock=clock)
    assert limiter.admit("k") == 0
    assert [limiter.admit("k") for _ in range(5)] == [None] * 5
    clock.now = 9.99
    assert limiter.admit("k") is None
    clock.now = 10.0
    assert limiter.admit("k") == 6  # the six held back meanwhile
    assert limiter.admit("k") is None


def test_keys_are_independent() -> None:
    clock = Clock()
    limiter = RepeatLimiter(10.0, clock=clock)
    assert limiter.admit("a") == 0
    assert limiter.admit("b") == 0
    assert limiter.admit("a") is None


def test_oldest_key_forgotten_past_the_bound() -> None:
    clock = Clock()
    limiter = RepeatLimiter(10.0, clock=clock, max_keys=2)
    limiter.admit("a")
    limiter.admit("b")
    limiter.admit("c")  # "a" forgotten
    assert limiter.admit("a") == 0
    assert limiter.admit("c") is None


def test_limited_log_writes_the_count_and_keys_by_event_and_key() -> None:
    clock = Clock()
    out = Recorder()
    log = LimitedLog(out, RepeatLimiter(10.0, clock=clock))
    for _ in range(1000):
        log.info("retrying later", key="sim-a", delay=1.0)
    log.info("retrying later", key="sim-b", delay=1.0)
    clock.now = 11.0
    assert log.warning("retrying later", key="sim-a", delay=2.0)
    assert out.lines == [
        ("info", "retrying later", {"delay": 1.0}),
        ("info", "retrying later", {"delay": 1.0}),
        ("warning", "retrying later", {"delay": 2.0, "repeated": 999}),
    ]


def test_library_lines_rate_limited_and_tracebacks_folded() -> None:
    import io
    import logging

    from smsrouter.logs import RepeatedLibraryLines

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RepeatedLibraryLines())
    logger = logging.getLogger("test.library")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for _ in range(50):
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except ConnectionRefusedError:
                logger.warning(
                    "Failed to restore the pool connection floor; retrying", exc_info=True
                )
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "Failed to restore the pool connection floor; retrying:"
        " ConnectionRefusedError(111, 'Connection refused')"
    ]
