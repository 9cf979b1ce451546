"""The latest errors the status page shows (router/recent_errors.py): a ring
of warnings and errors that counts a repeated fault on one entry, filled by
the log's own processor chain (smsrouter/logs.py) after its redaction."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from smsrouter import logs
from smsrouter.router.log_limits import LimitedLog, RepeatLimiter
from smsrouter.router.recent_errors import MAX_VALUE, RecentErrors


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def line(ring: RecentErrors, level: str, event: str, **fields: Any) -> None:
    ring(None, level, {"event": event, "level": level, **fields})


def test_warnings_and_errors_are_kept_newest_first_and_info_is_not() -> None:
    clock = Clock()
    ring = RecentErrors(clock=clock)
    line(ring, "info", "carrier bound", carrier="a")
    line(ring, "warning", "carrier bind failed", carrier="a", error="ConnectionRefusedError()")
    clock.now += timedelta(seconds=1)
    line(ring, "error", "holding messages: the database does not record what is sent")
    latest = [e.as_json() for e in ring.latest()]
    assert [e["event"] for e in latest] == [
        "holding messages: the database does not record what is sent",
        "carrier bind failed",
    ]
    assert latest[0] == {
        "at": "2025-03-01T12:00:01Z",
        "first_at": "2025-03-01T12:00:01Z",
        "level": "error",
        "event": "holding messages: the database does not record what is sent",
        "count": 1,
        "details": {},
    }
    assert latest[1]["details"] == {"carrier": "a", "error": "ConnectionRefusedError()"}


def test_a_repeated_fault_is_counted_on_its_entry_and_moves_to_the_front() -> None:
    clock = Clock()
    ring = RecentErrors(clock=clock)
    line(ring, "warning", "carrier bind failed", carrier="a", retry_in=1.0)
    line(ring, "warning", "carrier bind failed", carrier="b", retry_in=1.0)
    clock.now += timedelta(seconds=4)
    line(ring, "warning", "carrier bind failed", carrier="a", retry_in=2.0)
    a, b = ring.latest()
    assert (a.details["carrier"], a.count, a.details["retry_in"]) == ("a", 2, 2.0)
    assert a.first_at < a.last_at == clock.now
    assert (b.details["carrier"], b.count) == ("b", 1)


def test_a_rate_limited_line_counts_the_lines_it_stands_for() -> None:
    ring = RecentErrors(also=("carrier failed temporarily",))
    line(ring, "info", "carrier failed temporarily", carrier="a", error="timeout")
    line(ring, "info", "carrier failed temporarily", carrier="a", error="timeout", repeated=41)
    (entry,) = ring.latest()
    assert entry.count == 43


def test_one_noisy_fault_cannot_push_the_others_out_and_the_ring_is_bounded() -> None:
    ring = RecentErrors(capacity=3)
    line(ring, "error", "database away")
    for i in range(1000):
        line(ring, "warning", "carrier link lost", carrier="a", message_id=str(i))
    assert [e.event for e in ring.latest()] == ["carrier link lost", "database away"]
    for name in "bcd":
        line(ring, "warning", "carrier link lost", carrier=name)
    assert len(ring) == 3
    assert [e.details["carrier"] for e in ring.latest()] == ["d", "c", "b"]
    assert [e.details["carrier"] for e in ring.latest(2)] == ["d", "c"]


def test_details_are_scalars_cut_short_and_never_the_traceback() -> None:
    ring = RecentErrors()
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        error = exc
    line(
        ring, "error", "start failed", exc_info=error, timestamp="t", answer=42, ok=False,
        reason="x" * 1000, peer=("127.0.0.1", 2775),
    )  # fmt: skip
    (entry,) = ring.latest()
    assert entry.details == {
        "answer": 42,
        "ok": False,
        "reason": "x" * (MAX_VALUE - 1) + "…",
        "peer": "('127.0.0.1', 2775)",
    }


def test_the_log_fills_the_ring_after_redacting_secrets() -> None:
    out = io.StringIO()
    # The daemon's own chain, on a logger of this test's (configuring
    # structlog here would change it for every test after this one).
    log = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=logs.processors(structlog.processors.JSONRenderer()),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    log.warning("recent-errors probe", carrier="probe-carrier", password="hunter2")
    limited = LimitedLog(log, RepeatLimiter(interval=3600))
    for _ in range(3):
        limited.info("carrier failed temporarily", key="probe", carrier="probe-carrier")
    log.info("carrier bound", carrier="probe-carrier")
    assert json.loads(out.getvalue().splitlines()[0])["password"] == "[redacted]"
    found = {
        e.event: e
        for e in logs.recent_errors.latest()
        if e.details.get("carrier") == "probe-carrier"
    }
    assert set(found) == {"recent-errors probe", "carrier failed temporarily"}
    probe = found["recent-errors probe"]
    assert probe.details["password"] == "[redacted]"
    assert probe.level == "warning"
    assert found["carrier failed temporarily"].level == "info"
