"""The status page's document (router/status.py, CONTRACT §8): every carrier
with its binds, health, breaker and rates; queue depth and the busiest
sender queues; messages per second in and out; flagged and suspended
senders; the latest errors. Built from real parts on virtual clocks."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from smsrouter.router import metrics
from smsrouter.router.counter_rates import CounterRates
from smsrouter.router.health import CarrierHealth
from smsrouter.router.recent_errors import RecentErrors
from smsrouter.router.scheduler import SenderScheduler
from smsrouter.router.sender_states import FLAGGED, SUSPENDED, SenderState, SenderStates
from smsrouter.router.status import BindCount, StatusBoard, busiest_queues, counter_totals

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RATES = {"12345": 100.0, "+14155550101": 0.25, "+18005550199|CA": 1.0, "HELD": 0.0}


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Parts:
    """What the board reads, each a real part of the router."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.health = CarrierHealth(clock=self.clock, failure_threshold=2, cooldown=30)
        self.queues: SenderScheduler[str] = SenderScheduler(
            self.clock, RATES.__getitem__, max_queued_parts=1000
        )
        self.senders = SenderStates()
        self.errors = RecentErrors(clock=lambda: AT)
        self.totals: dict[str, float] = {}
        self.binds = [BindCount("sim-a", 2, 2), BindCount("sim-b", 0, 1)]
        self.reachable = True
        self.board = StatusBoard(
            binds=lambda: self.binds,
            health=self.health,
            queues=self.queues,
            rate_of=RATES.__getitem__,
            senders=self.senders,
            errors=self.errors,
            database_reachable=lambda: self.reachable,
            about={"instance": "host:1", "version": "1.2.3", "build": "interpreted"},
            rates=CounterRates(window=5, clock=self.clock),
            totals=lambda: self.totals,
            clock=lambda: AT,
            monotonic=self.clock,
            keys_scanned_per_second=2,
        )

    def look(self, after: float, **totals: float) -> dict:
        self.clock.now += after
        self.totals.update(totals)
        document = self.board.document()
        # What the admin listener sends: it must encode as JSON as it is.
        return msgspec.json.decode(msgspec.json.encode(document))


def fill(queues: SenderScheduler[str], depths: Iterable[tuple[str, int]]) -> None:
    for key, parts in depths:
        for i in range(parts):
            queues.push(key, f"{key}-{i}")


def test_the_first_look_has_counts_and_no_rates_the_next_has_rates() -> None:
    parts = Parts()
    first = parts.look(0, **{"in": 10, "out": 8, "submitted:sim-a": 8})
    assert first["messages"] == {
        "window_seconds": 5.0,
        "in_per_second": None,
        "out_per_second": None,
        "rejected_per_second": None,
        "receipts_per_second": None,
        "in_total": 10,
        "out_total": 8,
        "rejected_total": 0,
        "receipts_total": 0,
    }
    second = parts.look(
        2, **{"in": 30, "out": 48, "rejected": 1, "submitted:sim-a": 48, "errors:sim-a": 2}
    )
    messages = second["messages"]
    assert (messages["in_per_second"], messages["out_per_second"]) == (10.0, 20.0)
    assert (messages["rejected_per_second"], messages["receipts_per_second"]) == (0.5, 0.0)
    sim_a = second["carriers"][0]
    assert (sim_a["submit_per_second"], sim_a["errors_per_second"]) == (20.0, 1.0)
    assert (sim_a["submitted_total"], sim_a["errors_total"]) == (48, 2)


def test_every_carrier_with_its_binds_health_and_breaker() -> None:
    parts = Parts()
    parts.health.record_success("sim-a", 0.004)
    parts.health.record_failure("sim-b")
    parts.health.record_failure("sim-b")  # the threshold: its breaker opens
    carriers = parts.look(0)["carriers"]
    assert [c["name"] for c in carriers] == ["sim-a", "sim-b"]
    sim_a, sim_b = carriers
    assert (sim_a["binds_up"], sim_a["binds_total"], sim_a["breaker"]) == (2, 2, "closed")
    assert sim_a["health"] == 1.0 and sim_a["latency_ms"] == pytest.approx(0.4)
    assert (sim_b["binds_up"], sim_b["binds_total"], sim_b["breaker"]) == (0, 1, "open")
    assert sim_b["health"] == 0.0
    assert sim_a["submit_per_second"] is None and sim_a["submitted_total"] == 0
    parts.clock.now += 30  # the cooldown: one probe may go
    parts.binds = [BindCount("sim-a", 1, 2), BindCount("sim-b", 1, 1)]
    sim_a, sim_b = parts.look(0)["carriers"]
    assert sim_b["breaker"] == "half_open" and sim_b["health"] > 0
    assert sim_a["binds_up"] == 1


def test_a_carrier_without_a_bind_has_no_health_whatever_its_history() -> None:
    parts = Parts()
    parts.health.record_success("sim-b", 0.01)
    (_, sim_b) = parts.look(0)["carriers"]
    assert sim_b["binds_up"] == 0 and sim_b["health"] == 0.0


def test_queue_depth_and_the_busiest_queues_deepest_first() -> None:
    parts = Parts()
    fill(parts.queues, [("12345", 3), ("+14155550101", 40), ("+18005550199|CA", 7)])
    queues = parts.look(0)["queues"]
    assert (queues["depth"], queues["active"], queues["max_per_sender"]) == (50, 3, 1000)
    assert queues["busiest"] == [
        {"sender": "+14155550101", "country": None, "depth": 40, "rate": 0.25,
         "drain_seconds": 160.0},
        {"sender": "+18005550199", "country": "CA", "depth": 7, "rate": 1.0,
         "drain_seconds": 7.0},
        {"sender": "12345", "country": None, "depth": 3, "rate": 100.0, "drain_seconds": 0.0},
    ]  # fmt: skip


def test_with_many_active_queues_the_busiest_are_found_again_less_often() -> None:
    parts = Parts()  # scanning 2 keys a second: 3 keys, every 1.5 s
    fill(parts.queues, [("12345", 3), ("+14155550101", 40), ("+18005550199|CA", 7)])
    assert parts.look(0)["queues"]["busiest"][0]["depth"] == 40
    fill(parts.queues, [("+14155550101", 10)])
    again = parts.look(1.4)["queues"]
    assert again["depth"] == 60, "the depth is always the latest"
    assert again["busiest"][0]["depth"] == 40
    assert parts.look(0.1)["queues"]["busiest"][0]["depth"] == 50


def test_the_busiest_list_is_bounded_skips_empty_queues_and_shows_a_held_one() -> None:
    clock = Clock()
    rates = {f"+1415555{i:04d}": 1.0 for i in range(30)} | {"HELD": 0.0}
    queues: SenderScheduler[str] = SenderScheduler(clock, rates.__getitem__)
    fill(queues, [(key, i + 1) for i, key in enumerate(rates)])
    busiest = busiest_queues(queues, rates.__getitem__, limit=5)
    assert [q["depth"] for q in busiest] == [31, 30, 29, 28, 27]
    assert busiest[0] == {
        "sender": "HELD", "country": None, "depth": 31, "rate": 0.0, "drain_seconds": None,
    }  # fmt: skip
    # A queue drained and cooling down holds no parts: not among the busiest.
    one: SenderScheduler[str] = SenderScheduler(clock, rates.__getitem__)
    fill(one, [("+14155550000", 1)])
    assert one.pop_ready() == [("+14155550000-0", 0)]
    assert one.queue_keys() == ["+14155550000"]
    assert busiest_queues(one, rates.__getitem__) == []


def test_flagged_and_suspended_senders_latest_first() -> None:
    parts = Parts()
    parts.senders.replace(
        [
            SenderState("+14155550101", "a", FLAGGED, 6, 100, 0.06, AT),
            SenderState("+14155550102", "a", SUSPENDED, 12, 100, 0.12, AT),
            SenderState("+14155550103", "b", FLAGGED, 7, 100, 0.07, AT + timedelta(hours=1)),
        ]
    )
    senders = parts.look(0)["senders"]
    assert (senders["flagged_count"], senders["suspended_count"]) == (2, 1)
    assert [s["number"] for s in senders["flagged"]] == ["+14155550103", "+14155550101"]
    assert senders["suspended"] == [
        {"number": "+14155550102", "account": "a", "state": "suspended", "opt_outs": 12,
         "recipients": 100, "rate": 0.12, "since": "2025-03-01T12:00:00+00:00"},
    ]  # fmt: skip


def test_identity_database_and_the_latest_errors() -> None:
    parts = Parts()
    parts.errors(None, "warning", {"event": "carrier bind failed", "carrier": "sim-b"})
    parts.errors(None, "error", {"event": "holding messages", "level": "error"})
    parts.reachable = False
    document = parts.look(0)
    assert {k: document[k] for k in ("instance", "version", "build", "at", "database")} == {
        "instance": "host:1",
        "version": "1.2.3",
        "build": "interpreted",
        "at": "2025-03-01T12:00:00Z",
        "database": {"reachable": False},
    }
    assert [(e["event"], e["level"]) for e in document["errors"]] == [
        ("holding messages", "error"),
        ("carrier bind failed", "warning"),
    ]


def test_the_totals_are_the_router_counters_summed_over_their_labels() -> None:
    before = counter_totals()
    metrics.received("http", "status-test").inc(3)
    metrics.submitted("status-test-carrier").inc(5)
    metrics.submit_errors("status-test-carrier", "smpp:0x00000058").inc(2)
    metrics.submit_errors("status-test-carrier", "timeout").inc(1)
    metrics.rejected("http", "no_route").inc(4)
    metrics.dlr_received("status-test-carrier", "delivered").inc(6)
    after = counter_totals()
    growth = {k: after[k] - before.get(k, 0.0) for k in after}
    assert {k: v for k, v in growth.items() if v} == {
        "in": 3,
        "out": 5,
        "rejected": 4,
        "receipts": 6,
        "submitted:status-test-carrier": 5,
        "errors:status-test-carrier": 3,
    }
