"""Loop-thread counters and histograms expose exactly what prometheus_client's
own would for the same updates (a differential test), and refuse misuse the
same way."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from smsrouter.router.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.0005, 0.001, 0.01, 0.1, 1.0, 5.0)
LABELS = st.sampled_from(["http", "smpp", "sim-a", 'odd "quoted" \\ label'])
AMOUNTS = st.floats(min_value=0, max_value=1e6, allow_nan=False)
OBSERVED = st.one_of(
    st.floats(min_value=-10, max_value=100, allow_nan=False), st.sampled_from(BUCKETS)
)


def _exposition(counter_type: type, histogram_type: type, updates: list) -> str:
    registry = CollectorRegistry()
    counter = counter_type("events", "Events by kind", ["kind"], namespace="t", registry=registry)
    plain = counter_type("plain", "No labels", namespace="t", registry=registry)
    histogram = histogram_type(
        "wait_seconds", "Waits", ["kind"], namespace="t", registry=registry, buckets=BUCKETS
    )
    for what, label, amount in updates:
        if what == "inc":
            counter.labels(label).inc(amount)
        elif what == "plain":
            plain.inc(amount)
        else:
            histogram.labels(label).observe(amount)
    text = generate_latest(registry).decode()
    # Creation times differ by construction: compare everything else.
    return re.sub(r"(_created(?:\{[^}]*\})?) \S+", r"\1 T", text)


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("inc"), LABELS, AMOUNTS),
            st.tuples(st.just("plain"), st.just(""), AMOUNTS),
            st.tuples(st.just("observe"), LABELS, OBSERVED),
        ),
        max_size=40,
    )
)
def test_exposition_is_prometheus_clients_own(updates: list) -> None:
    ours = _exposition(LoopCounter, LoopHistogram, updates)
    theirs = _exposition(Counter, Histogram, updates)
    assert ours == theirs


def test_a_value_on_a_bound_falls_in_that_bucket() -> None:
    h = LoopHistogram("h", "h", buckets=(1.0, 2.0), registry=None)
    for v in (1.0, 2.0, 2.5, math.inf):
        h.observe(v)
    assert h.labels().counts == [1, 1, 2]  # le=1, le=2, +Inf (not cumulative)
    assert h.labels().sum == math.inf


def test_a_counter_only_goes_up() -> None:
    c = LoopCounter("c", "c", ["k"], registry=None)
    with pytest.raises(ValueError, match="non-negative"):
        c.labels("a").inc(-1)
    assert c.labels("a").value == 0


def test_wrong_label_count_is_refused() -> None:
    c = LoopCounter("c", "c", ["a", "b"], registry=None)
    with pytest.raises(ValueError, match="takes labels"):
        c.labels("only-one")


def test_the_same_name_twice_in_a_registry_is_refused() -> None:
    registry = CollectorRegistry()
    LoopCounter("dup", "first", namespace="t", registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("dup", "second", namespace="t", registry=registry)
