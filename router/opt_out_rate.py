"""Opt-out rate per sender number over a rolling 24 h (CONTRACT §6 "Opt-out
rate"): subscribers who opted out after a message from it, divided by the
distinct subscribers it sent to.

The denominator grows with every committed message, so it must cost O(1)
and no query per message: a HyperLogLog sketch per sender and per 4-hour
bucket, six buckets rolling. A message sets at most one register of the
current bucket; the count over the window is the estimate of the six
buckets merged (register-wise maximum), worked out only when an opt-out
arrives. With 2^10 one-byte registers a bucket is 1 KiB, a sender active
the whole window 6 KiB, and the standard error 1.04/√1024 ≈ 3.3 %
(`bench/opt_out_rate.py` measures both). Subscribers are hashed by a
fixed mixing function of their E.164 digits (`subscriber_hash`), not by
Python's per-process salted `hash`, so that sketches made by different
processes can be merged register by register.

The numerator is small (opt-outs are rare) and kept exact: per sender the
subscribers who opted out to it, each with the time of their latest STOP,
oldest first; bounded per sender, past the bound the oldest entries are
folded into per-bucket counts that expire with their bucket.

The window is the current bucket and the five before it: between 20 and
24 hours, advancing in 4-hour steps, the same for numerator and
denominator. Buckets are aligned to the Unix epoch so that every process
agrees on them. The clock is injected (seconds since the epoch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = [
    "BUCKETS",
    "BUCKET_SECONDS",
    "FLAGGED",
    "MAX_OPT_OUTS_PER_SENDER",
    "PRECISION",
    "REGISTERS",
    "STANDARD_ERROR",
    "SUSPENDED",
    "OptOutRates",
    "estimate",
    "subscriber_hash",
]

BUCKET_SECONDS = 4 * 3600
BUCKETS = 6  # six of 4 h: the contract's 24 h
PRECISION = 10
REGISTERS = 1 << PRECISION
# Relative standard error of one estimate (Flajolet et al. 2007).
STANDARD_ERROR = 1.04 / math.sqrt(REGISTERS)
# Distinct opted-out subscribers remembered one by one per sender; beyond,
# the oldest are only counted (a sender with this many STOPs in a day is
# far past any threshold unless it sent to millions).
MAX_OPT_OUTS_PER_SENDER = 100_000

FLAGGED = "flagged"
SUSPENDED = "suspended"

_M64 = (1 << 64) - 1
_RANK_BITS = 64 - PRECISION
_RANK_MASK = (1 << _RANK_BITS) - 1


def subscriber_hash(number: str | int) -> int:
    """A 64-bit hash of a subscriber's number ("+14155550123", its digits, or
    the digits as an integer): SplitMix64's finaliser over the integer,
    the same in every process and every run, and well mixed even for
    consecutive numbers."""
    z = (int(number) + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def register_of(h: int) -> tuple[int, int]:
    """(register index, rank) of a hash: the top PRECISION bits choose the
    register, the rank is 1 + the leading zeros of the other bits."""
    return h >> _RANK_BITS, _RANK_BITS - (h & _RANK_MASK).bit_length() + 1


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        before = z
        z += x * y
        y += y
        if z == before:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        before = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == before:
            return z / 3.0


def estimate(registers: bytes | bytearray) -> float:
    """Distinct items added to these registers: Ertl's improved raw
    estimator ("New cardinality estimation algorithms for HyperLogLog
    sketches", 2017), unbiased from a handful of items to billions without
    the empirical bias tables of HyperLogLog++."""
    m = len(registers)
    q = _RANK_BITS
    counts = [0] * (q + 2)
    for r in registers:
        counts[r] += 1
    z = m * _tau(1.0 - counts[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + counts[k])
    z += m * _sigma(counts[0] / m)
    if z == math.inf:
        return 0.0
    return m * m / (2.0 * math.log(2.0) * z)


class _Sender:
    """One sender's window: a sketch per bucket, its opted-out subscribers."""

    __slots__ = ("epochs", "folded", "opt_outs", "sketches")

    def __init__(self) -> None:
        # Slot i holds the bucket of the epoch in epochs[i] (epoch % BUCKETS == i).
        self.sketches: list[bytearray | None] = [None] * BUCKETS
        self.epochs: list[int] = [-1] * BUCKETS
        # Subscriber (E.164 digits as an integer) → epoch of their latest
        # STOP to this sender, oldest first.
        self.opt_outs: dict[int, int] = {}
        # Epoch → opt-outs no longer held one by one (past the bound).
        self.folded: dict[int, int] = {}

    def fresh(self, slot: int, epoch: int) -> bytearray:
        sketch = self.sketches[slot]
        if sketch is None:
            sketch = self.sketches[slot] = bytearray(REGISTERS)
        else:
            sketch[:] = bytes(REGISTERS)  # the bucket of 24 h ago, reused
        self.epochs[slot] = epoch
        return sketch

    def live(self, oldest: int) -> bool:
        return any(e >= oldest for e in self.epochs) or any(
            e >= oldest for e in self.opt_outs.values()
        )


class OptOutRates:
    """The opt-out rate of every sender number (canonical form, as queued)."""

    __slots__ = ("_clock", "_epoch", "_senders")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._senders: dict[str, _Sender] = {}
        self._epoch = -1

    def __len__(self) -> int:
        """Senders with anything in the window (the memory held)."""
        return len(self._senders)

    def _now_epoch(self) -> int:
        epoch = int(self._clock()) // BUCKET_SECONDS
        if epoch != self._epoch:
            self._epoch = epoch
            self._forget_idle(epoch - BUCKETS + 1)
        return epoch

    def _forget_idle(self, oldest: int) -> None:
        """Senders with nothing left in the window take no memory: looked at
        once per bucket, when the clock enters a new one."""
        idle = [n for n, s in self._senders.items() if not s.live(oldest)]
        for number in idle:
            del self._senders[number]

    # -- what happens ------------------------------------------------------

    def sent(self, sender: str, subscriber: str) -> None:
        """A message from `sender` to `subscriber` ("+E.164") was committed."""
        epoch = int(self._clock()) // BUCKET_SECONDS
        if epoch != self._epoch:
            self._now_epoch()
        state = self._senders.get(sender)
        if state is None:
            state = self._senders[sender] = _Sender()
        slot = epoch % BUCKETS
        sketch = state.sketches[slot]
        if sketch is None or state.epochs[slot] != epoch:
            sketch = state.fresh(slot, epoch)
        # subscriber_hash and register_of, inline: this runs per message.
        z = (int(subscriber) + 0x9E3779B97F4A7C15) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        z ^= z >> 31
        index = z >> _RANK_BITS
        rank = _RANK_BITS - (z & _RANK_MASK).bit_length() + 1
        if sketch[index] < rank:
            sketch[index] = rank

    def opted_out(self, sender: str, subscriber: str) -> None:
        """`subscriber` ("+E.164") opted out by writing to `sender`."""
        epoch = self._now_epoch()
        state = self._senders.get(sender)
        if state is None:
            state = self._senders[sender] = _Sender()
        key = int(subscriber)
        opt_outs = state.opt_outs
        opt_outs.pop(key, None)  # a repeated STOP moves to the end: newest
        opt_outs[key] = epoch
        if len(opt_outs) > MAX_OPT_OUTS_PER_SENDER:
            oldest = next(iter(opt_outs))
            folded_epoch = opt_outs.pop(oldest)
            state.folded[folded_epoch] = state.folded.get(folded_epoch, 0) + 1

    def reset(self, sender: str) -> None:
        """Start the sender's window afresh (an operator resumed it: the
        STOPs that suspended it must not suspend it again)."""
        self._senders.pop(sender, None)

    # -- what it comes to --------------------------------------------------

    def registers(self, sender: str) -> bytes:
        """The sender's window as one sketch (its buckets merged)."""
        oldest = self._now_epoch() - BUCKETS + 1
        state = self._senders.get(sender)
        if state is None:
            return bytes(REGISTERS)
        live = [
            s
            for s, e in zip(state.sketches, state.epochs, strict=True)
            if s is not None and e >= oldest
        ]
        if not live:
            return bytes(REGISTERS)
        if len(live) == 1:
            return bytes(live[0])
        return bytes(map(max, *live))

    def recipients(self, sender: str) -> int:
        """Distinct subscribers the sender sent to in the window (estimated)."""
        return round(estimate(self.registers(sender)))

    def opt_outs(self, sender: str) -> int:
        """Distinct subscribers who opted out to the sender in the window."""
        oldest = self._now_epoch() - BUCKETS + 1
        state = self._senders.get(sender)
        if state is None:
            return 0
        opt_outs = state.opt_outs
        # Oldest first: drop what left the window, count the rest.
        while opt_outs:
            first = next(iter(opt_outs))
            if opt_outs[first] >= oldest:
                break
            del opt_outs[first]
        for epoch in [e for e in state.folded if e < oldest]:
            del state.folded[epoch]
        return len(opt_outs) + sum(state.folded.values())

    def rate(self, sender: str) -> tuple[int, int, float]:
        """(opt-outs, recipients, opt-outs / recipients) over the window."""
        opt_outs = self.opt_outs(sender)
        recipients = self.recipients(sender)
        return opt_outs, recipients, opt_outs / recipients if recipients else 0.0

    def verdict(
        self, sender: str, min_recipients: int, flag_rate: float, suspend_rate: float
    ) -> str | None:
        """FLAGGED at `flag_rate`, SUSPENDED at `suspend_rate`, None below
        or while fewer than `min_recipients` were sent to (CONTRACT §6:
        the rate counts once the sample is large enough)."""
        _, recipients, rate = self.rate(sender)
        return verdict_of(recipients, rate, min_recipients, flag_rate, suspend_rate)


def verdict_of(
    recipients: int, rate: float, min_recipients: int, flag_rate: float, suspend_rate: float
) -> str | None:
    if recipients < min_recipients:
        return None
    if rate >= suspend_rate:
        return SUSPENDED
    if rate >= flag_rate:
        return FLAGGED
    return None
