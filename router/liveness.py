"""Is the database there? What `/healthz` and `/readyz` answer (CONTRACT §11).

A periodic probe records each contact with the database, good or bad; the
health endpoints only read what it recorded, so answering them costs no
query. Two answers come out of it:

* ``reachable``: the latest contact succeeded. `/readyz` turns 503 as soon
  as it did not, so that a load balancer sends traffic elsewhere at once;
* ``alive()``: the database has not been unreachable for
  ``liveness_seconds`` or more. `/healthz` turns 503 only then, so that an
  orchestrator restarts the daemon after an outage that did not heal by
  itself, not after a blip.

The outage is counted from the start of the first failed contact after the
last good one: a contact that hangs until its timeout says the database was
already gone when the contact began. Pure, with an injected clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["DatabaseLiveness"]


class DatabaseLiveness:
    """Successes and failures of database contacts, and what they mean."""

    __slots__ = ("_clock", "_down_since", "last_error", "liveness_seconds")

    def __init__(
        self, liveness_seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if liveness_seconds <= 0:
            raise ValueError("liveness_seconds must be positive")
        self.liveness_seconds = liveness_seconds
        self._clock = clock
        # Start of the current outage; None while the database answers.
        # The daemon connected at start-up, so it begins reachable.
        self._down_since: float | None = None
        self.last_error: str | None = None

    @property
    def reachable(self) -> bool:
        """Did the latest contact succeed?"""
        return self._down_since is None

    def succeeded(self) -> float | None:
        """A contact succeeded. Returns how long the outage it ends lasted
        (None when there was none), for the "reachable again" log line."""
        if self._down_since is None:
            return None
        lasted = max(0.0, self._clock() - self._down_since)
        self._down_since = None
        self.last_error = None
        return lasted

    def failed(self, error: str, *, began: float | None = None) -> bool:
        """A contact that began at ``began`` (default: now) failed.

        Returns True when it starts an outage (the database answered until
        now), for the "unreachable" log line.
        """
        self.last_error = error
        if self._down_since is not None:
            return False
        self._down_since = self._clock() if began is None else began
        return True

    def unreachable_for(self, now: float | None = None) -> float:
        """Seconds since the outage began; 0 while the database answers."""
        if self._down_since is None:
            return 0.0
        at = self._clock() if now is None else now
        return max(0.0, at - self._down_since)

    def alive(self, now: float | None = None) -> bool:
        """False once the database has been unreachable for liveness_seconds."""
        return self.unreachable_for(now) < self.liveness_seconds
