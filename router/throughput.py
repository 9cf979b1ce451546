"""Throughput plans: how many messages per second an account may have
accepted, over all its binds and requests (CONTRACT §6 "Throughput plan").

A bucket of one second per account, kept as the generic cell rate
algorithm keeps it: one number per account, the theoretical arrival time
of the next message, and no timer. A message fits while that time is at
most one second ahead of now, so a quiet account may send up to `max_tps`
at once, then `max_tps` a second. Pure, with the clock injected, like
router/scheduler.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# A bucket of one second (the contract's "a bucket of 1 s").
BURST_SECONDS = 1.0


class ThroughputPlans:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # account id → theoretical arrival time of its next message
        self._next: dict[str, float] = {}

    def take(self, account_id: str, max_tps: float) -> float:
        """Count one message of the account; 0.0 if it fits its plan, else
        the seconds until one would (nothing is counted then)."""
        now = self._clock()
        interval = 1.0 / max_tps
        due = max(self._next.get(account_id, now), now) + interval
        # A plan under one a second still lets its one message through.
        ahead = due - now - max(BURST_SECONDS, interval)
        if ahead > 1e-9:
            return ahead
        self._next[account_id] = due
        return 0.0

    def fill(self, account_id: str) -> None:
        """The database refused messages of the account for its max_tps:
        other instances' messages used its bucket (migration 0014). Full
        here too (whatever the plan: the next message is at least one
        interval past the bucket), so that the next ones are refused without
        a commit until it drains."""
        now = self._clock()
        self._next[account_id] = max(self._next.get(account_id, now), now + BURST_SECONDS)
