"""Counters and histograms updated from the event loop's thread alone.

prometheus_client's own take a lock on every update (threads may share
them) and check on every call whether the metric has labels; a message
updates half a dozen of them on its way, about 4 % of the router's time
under load. Every update here happens in the one thread that runs the
event loop, and so does every scrape (`generate_latest` in the /metrics
handler), so a child is a plain number and the collector reads it at
scrape time, through prometheus_client's public collector interface: the
exposition is the library's own, `promtool check metrics` included.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class CounterChild:
    """One labelled series of a `LoopCounter`."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            # A counter only goes up (what prometheus_client enforces too).
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class HistogramChild:
    """One labelled series of a `LoopHistogram`: a count per bucket (not
    cumulative until scraped) and the sum."""

    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        # The first bound >= amount: buckets are "less than or equal" (le).
        self.counts[bisect.bisect_left(self._bounds, amount)] += 1
        self.sum += amount


C = TypeVar("C", CounterChild, HistogramChild)


class _LoopMetric(Collector, Generic[C]):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        namespace: str,
        registry: CollectorRegistry | None,
    ) -> None:
        self.name = f"{namespace}_{name}" if namespace else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        if not self.labelnames:
            # Without labels the one series exists from the start, at zero.
            self.labels()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> C:
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {key!r}")
            child = self._children[key] = self._new_child()
        return child

    def _new_child(self) -> C:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        return [self._family()]

    def _family(self) -> Metric:
        raise NotImplementedError


class LoopCounter(_LoopMetric[CounterChild]):
    """A counter with `labels(...).inc()` like prometheus_client's."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        namespace: str = "",
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        super().__init__(name, documentation, labelnames, namespace, registry)

    def inc(self, amount: float = 1.0) -> None:
        """For a counter without labels."""
        self.labels().inc(amount)

    def values(self) -> dict[tuple[str, ...], float]:
        """Each series' value by its label values: the status page's rates
        (router/status.py) are read here, not scraped."""
        return {labels: child.value for labels, child in self._children.items()}

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value, created=child.created)
        yield family


class LoopHistogram(_LoopMetric[HistogramChild]):
    """A histogram with `labels(...).observe()` like prometheus_client's."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        namespace: str = "",
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.bounds = tuple(bounds)
        self._les = [floatToGoString(b) for b in self.bounds]
        super().__init__(name, documentation, labelnames, namespace, registry)

    def observe(self, amount: float) -> None:
        """For a histogram without labels."""
        self.labels().observe(amount)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in list(self._children.items()):
            cumulative = 0
            buckets = []
            for le, count in zip(self._les, child.counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(values, buckets, child.sum)
            # What prometheus_client's own histograms expose besides.
            family.add_sample(
                f"{self.name}_created",
                dict(zip(self.labelnames, values, strict=True)),
                child.created,
            )
        yield family
