"""Recipient velocity: messages from one account to one subscriber in a
sliding hour (CONTRACT §6 "Geographic permissions and velocity",
`[compliance] max_per_recipient_per_hour`, refusal `recipient_velocity`).

SMS-pumping fraud has bots request one-time codes for premium-rate numbers
over and over; a cap per (account, subscriber) stops it without touching a
real user, who asks for a code a few times an hour at most. The count is
exact over the sliding window: a message counts while less than `window`
seconds old.

It runs on every message and holds an entry per subscriber written to in
the last hour, which for an aggregator is millions, so both time and
memory are kept small:

* O(1) per call: dict look-ups, and for a subscriber with several messages
  a short list of their times (at most `limit` of them, oldest first).
* Memory bounded: entries live in two generations, swapped every `window`
  seconds. A subscriber's entry moves to the current generation when a
  message to it counts; at a swap the previous one is dropped whole, as
  nothing in it counted for a whole window, so all its times have left it.
  An entry is dropped by the first call two windows after its last message
  counted; no sweep, no timer.
* A subscriber with one message in the window (most of them) costs one
  float, not a list; per account a dict keyed by the subscriber's number,
  so no key tuple per entry (bench/compliance_memory.py measures it).

Pure, with the clock injected, like router/throughput.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RECIPIENT_VELOCITY", "RecipientVelocity"]

# The stable refusal code (CONTRACT §6; SMPP 0x58, ESME_RTHROTTLED).
RECIPIENT_VELOCITY = "recipient_velocity"

# One subscriber's times in the window: one float, or from the second
# message on a list, oldest first.
_Times = float | list[float]
# account id → subscriber → times
_Generation = dict[str, dict[str, _Times]]


class RecipientVelocity:
    """Messages per (account, subscriber) over a sliding window."""

    __slots__ = ("_clock", "_current", "_limit", "_previous", "_swap_at", "_window")

    def __init__(
        self, limit: int, window: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 0:
            raise ValueError(f"limit must be 0 (off) or positive, not {limit}")
        if window <= 0:
            raise ValueError(f"window must be positive, not {window}")
        self._limit = limit
        self._window = window
        self._clock = clock
        self._current: _Generation = {}
        self._previous: _Generation = {}
        self._swap_at = clock() + window

    @property
    def limit(self) -> int:
        return self._limit

    def set_limit(self, limit: int) -> None:
        """A new limit from a reloaded config; what was counted stays."""
        if limit < 0:
            raise ValueError(f"limit must be 0 (off) or positive, not {limit}")
        self._limit = limit

    @property
    def subscribers(self) -> int:
        """(account, subscriber) entries held, in both generations."""
        return sum(len(d) for d in self._current.values()) + sum(
            len(d) for d in self._previous.values()
        )

    def take(self, account_id: str, recipient: str) -> bool:
        """Count one message to `recipient`; False (counting nothing) when
        the account already sent `limit` to it in the window."""
        if not self._limit:
            return True
        now = self._clock()
        if now >= self._swap_at:
            self._swap(now)
        times = self._current.get(account_id)
        if times is not None:
            held = times.get(recipient)
            if held is not None:
                counted = self._counted(held, now)
                if counted is None:
                    return False
                if counted is not held:
                    times[recipient] = counted
                return True
        before = self._previous.get(account_id)
        held = before.get(recipient) if before is not None else None
        if held is None:
            counted = now
        else:
            # A refusal leaves the entry where it is: its times are all from
            # the previous window, so it may go at the next swap.
            counted = self._counted(held, now)
            if counted is None:
                return False
            if before is not None:
                del before[recipient]
                if not before:
                    del self._previous[account_id]
        if times is None:
            times = self._current[account_id] = {}
        times[recipient] = counted
        return True

    def wait(self, account_id: str, recipient: str) -> float:
        """Seconds until a message to `recipient` would count again (0 when
        it would now): the Retry-After of a refusal."""
        if not self._limit:
            return 0.0
        for generation in (self._current, self._previous):
            times = generation.get(account_id)
            held = times.get(recipient) if times is not None else None
            if held is None:
                continue
            recent = [held] if not isinstance(held, list) else held
            now = self._clock()
            in_window = [t for t in recent if now - t < self._window]
            if len(in_window) < self._limit:
                return 0.0
            # The oldest of the `limit` latest leaves the window first.
            return in_window[-self._limit] + self._window - now
        return 0.0

    def _counted(self, held: _Times, now: float) -> _Times | None:
        """`held` with `now` added (a new value or `held` itself, changed),
        or None if `limit` of its times are still in the window."""
        if not isinstance(held, list):
            if now - held >= self._window:
                return now  # the one before has left the window
            return None if self._limit <= 1 else [held, now]
        # Times leave the window oldest first: drop those that have left.
        gone = 0
        for t in held:
            if now - t < self._window:
                break
            gone += 1
        if gone == len(held):
            return now
        if gone:
            del held[:gone]
        if len(held) >= self._limit:
            return None
        held.append(now)
        return held

    def give_back(self, account_id: str, recipient: str) -> None:
        """Uncount the latest message counted to `recipient`: it was admitted
        and then not stored (a full queue, a failed commit)."""
        for generation in (self._current, self._previous):
            times = generation.get(account_id)
            if times is None:
                continue
            held = times.get(recipient)
            if held is None:
                continue
            if not isinstance(held, list):
                del times[recipient]
                if not times:
                    del generation[account_id]
            else:
                held.pop()
                if len(held) == 1:
                    times[recipient] = held[0]
            return

    def _swap(self, now: float) -> None:
        # The first call after a swap falls due makes it, so everything the
        # current generation holds was written before `_swap_at`, and what the
        # previous one holds before the swap due a window earlier: every time
        # in it is at least `window` old now.
        if now >= self._swap_at + self._window:
            # No call for over a window: the current generation is as old.
            self._previous = {}
            self._current = {}
            self._swap_at = now + self._window
        else:
            self._previous = self._current
            self._current = {}
            self._swap_at += self._window
