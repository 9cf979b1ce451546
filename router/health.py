"""Carrier health: how well each carrier is doing, and whether to use it.

Per carrier: an EWMA of submit success, an EWMA of submit latency, an EWMA
of receipts that say "not delivered", and a circuit breaker. The breaker
opens after `failure_threshold` failures or timeouts in a row, so a sick
carrier stops taking traffic that a healthy one could carry; after
`cooldown` seconds it lets exactly one request through (half-open) and
closes again on its success. The clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class Breaker(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class _Carrier:
    __slots__ = (
        "dlr_failure",
        "failures_in_a_row",
        "latency",
        "opened_at",
        "probe_out",
        "state",
        "success",
    )

    def __init__(self) -> None:
        self.success = 1.0  # optimistic start: a new carrier gets traffic
        self.latency = 0.0
        self.dlr_failure = 0.0
        self.failures_in_a_row = 0
        self.state = Breaker.CLOSED
        self.opened_at = 0.0
        self.probe_out = False


class CarrierHealth:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        alpha: float = 0.1,
    ) -> None:
        # alpha 0.1: the last ~10 outcomes dominate the averages, enough to
        # smooth single errors and quick enough to see an outage.
        self._clock = clock
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.alpha = alpha
        self._carriers: dict[str, _Carrier] = {}

    def _of(self, carrier: str) -> _Carrier:
        c = self._carriers.get(carrier)
        if c is None:
            c = self._carriers[carrier] = _Carrier()
        return c

    # ---------------------------------------------------------------- outcomes

    def record_success(self, carrier: str, latency: float) -> None:
        c = self._of(carrier)
        a = self.alpha
        c.success += a * (1.0 - c.success)
        c.latency += a * (latency - c.latency)
        c.failures_in_a_row = 0
        c.state = Breaker.CLOSED
        c.probe_out = False

    def record_failure(self, carrier: str) -> None:
        """A temporary failure: timeout, throttling after retries, link lost, system error."""
        c = self._of(carrier)
        c.success += self.alpha * (0.0 - c.success)
        c.failures_in_a_row += 1
        if c.state is Breaker.HALF_OPEN or c.failures_in_a_row >= self.failure_threshold:
            c.state = Breaker.OPEN
            c.opened_at = self._clock()
            c.probe_out = False

    def record_receipt(self, carrier: str, delivered: bool) -> None:
        c = self._of(carrier)
        c.dlr_failure += self.alpha * ((0.0 if delivered else 1.0) - c.dlr_failure)

    # ---------------------------------------------------------------- decisions

    def state(self, carrier: str) -> Breaker:
        c = self._of(carrier)
        if c.state is Breaker.OPEN and self._clock() - c.opened_at >= self.cooldown:
            c.state = Breaker.HALF_OPEN
        return c.state

    def allows(self, carrier: str) -> bool:
        """May a request go to this carrier now? Half-open lets one probe out."""
        state = self.state(carrier)
        if state is Breaker.CLOSED:
            return True
        if state is Breaker.HALF_OPEN:
            return not self._of(carrier).probe_out
        return False

    def took(self, carrier: str) -> None:
        """A request is on its way to the carrier (marks the half-open probe)."""
        c = self._of(carrier)
        if c.state is Breaker.HALF_OPEN:
            c.probe_out = True

    def score(self, carrier: str) -> float:
        """0 (unusable) .. 1 (healthy), for the carrier_health metric."""
        if self.state(carrier) is Breaker.OPEN:
            return 0.0
        c = self._of(carrier)
        return round(c.success * (1.0 - c.dlr_failure), 4)

    def snapshot(self, carrier: str) -> dict[str, float | str]:
        c = self._of(carrier)
        return {
            "state": str(self.state(carrier)),
            "success": round(c.success, 4),
            "latency_ms": round(c.latency * 1000, 2),
            "dlr_failure": round(c.dlr_failure, 4),
        }
