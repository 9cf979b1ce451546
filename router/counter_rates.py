"""Per-second rates of counters, from samples over a sliding window.

The status page (CONTRACT §8) shows messages per second in and out and each
carrier's submit rate. They come from the process's own counters (the ones
`/metrics` exposes), sampled whenever the page asks: the rate of a counter
is its growth between the oldest and the newest sample of the last
`window` seconds, divided by the time between them. The clock is injected.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping

# Seconds of samples a rate is taken over: long enough to smooth the
# bursts of a group commit, short enough that a stop shows within moments.
DEFAULT_WINDOW = 5.0
# Two samples closer than this say too little (two browsers asking within
# the same moment): no rate until the samples span at least this long.
DEFAULT_MIN_SPAN = 0.5


class CounterRates:
    """Rates of named, monotonic counters over the last `window` seconds."""

    def __init__(
        self,
        *,
        window: float = DEFAULT_WINDOW,
        min_span: float = DEFAULT_MIN_SPAN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0 or min_span < 0 or min_span > window:
            raise ValueError("need window > 0 and 0 <= min_span <= window")
        self.window = window
        self.min_span = min_span
        self._clock = clock
        self._samples: deque[tuple[float, dict[str, float]]] = deque()

    def sample(self, totals: Mapping[str, float]) -> None:
        """Record the counters' values now; samples older than the window go."""
        now = self._clock()
        self._samples.append((now, dict(totals)))
        while self._samples[0][0] < now - self.window:
            self._samples.popleft()

    def rate(self, name: str) -> float | None:
        """Growth per second of `name` over the samples held; None until they
        span `min_span`. A counter missing from the oldest sample started
        since at 0 (a labelled series appears on its first increment)."""
        span = self.span()
        if span is None:
            return None
        old = self._samples[0][1].get(name, 0.0)
        new = self._samples[-1][1].get(name, old)
        # A counter never goes down; a smaller value is one that restarted.
        return max(0.0, new - old) / span

    def span(self) -> float | None:
        """Seconds between the oldest and the newest sample held, or None
        when that is less than `min_span`."""
        if not self._samples:
            return None
        span = self._samples[-1][0] - self._samples[0][0]
        return span if span >= self.min_span and span > 0 else None
