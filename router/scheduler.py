"""One scheduler over every sender queue: per-number token buckets, exact.

Carriers throttle per sender number, counted in message parts (CONTRACT §2:
a long code sends 1 part per 4 s, a toll-free number 40/s to the US, ...).
Over the limit a message waits in its sender's queue; it is never dropped
or reordered. A deployment may own a million sender numbers of which only a
few thousand have work at any moment, so (DESIGN "One scheduler, not one
task per number"):

* a key with queued work sits in **one** heap ordered by the time its next
  token is available; releasing a part costs one heap operation,
  O(log n) in the number of active keys;
* a key whose queue is empty is forgotten once its bucket is full again.
  Until then it is "cooling": forgetting it earlier would hand the next
  message a fresh, full bucket and allow a burst over the limit. Cooling
  keys wait in a second heap of "full again" times that ``push`` and
  ``pop_ready`` sweep lazily;
* nothing here owns a task, a timer or a clock: the caller asks
  ``next_release_at()`` and sleeps until then (or until a ``push``).

Token arithmetic is GCRA (ITU-T I.371's virtual scheduling, the token
bucket seen as "theoretical arrival time"), anchored so that it never
accumulates rounding error: a bucket stores an anchor time ``base`` and
the count ``n`` of parts released since then, and the time at which it is
full again is ``base + n / rate``, one division and one addition whatever
``n`` is. Adding ``1 / rate`` per part instead would drift (1/40 is not a
binary fraction) and, over hours of a saturated key, shift the schedule.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from heapq import heapify, heappop, heappush, heapreplace, nlargest
from operator import attrgetter
from typing import Generic, TypeVar, cast

__all__ = ["SenderQueueFull", "SenderScheduler"]

T = TypeVar("T")

# Matches ``[queues] max_per_sender`` (CONTRACT §2): about a day of a
# long code's traffic at 1 part per 4 s, or 40 min of a short code at 100/s.
DEFAULT_MAX_QUEUED_PARTS = 100_000

# Forgotten keys leave dummy slots in the key dict (CPython dicts never shrink
# on deletion), so after many forgets the dict is rebuilt; the copy is paid
# for by at least this many forgets, and only when they outnumber live keys.
_COMPACT_AFTER = 1024


class SenderQueueFull(Exception):
    """A sender's queue holds too many parts (CONTRACT §2: full → refused).

    HTTP answers it with 429 and SMPP with ESME_RMSGQFUL (CONTRACT §4).
    """

    def __init__(self, key: str, queued_parts: int, limit: int) -> None:
        self.key = key
        self.queued_parts = queued_parts
        self.limit = limit
        super().__init__(f"sender queue {key!r} full: {queued_parts} parts queued, limit {limit}")


class _Bucket(Generic[T]):
    """One key's token bucket and FIFO queue.

    The queue is split into ``head`` (the message being released, with the
    index of its next part) and ``rest`` (a deque created only once a second
    message waits), because most active senders hold a single message and a
    deque costs ~760 bytes even when empty. ``rest`` entries are
    ``(item, next_part, end_part)``: the parts still to release are
    ``next_part`` up to, not including, ``end_part``.
    """

    __slots__ = (
        "base",
        "head",
        "head_end",
        "head_next",
        "held",
        "key",
        "n",
        "queued",
        "rate",
        "rest",
        "seq",
    )

    def __init__(self, key: str, rate: float, now: float) -> None:
        self.key = key
        self.rate = rate
        # Full at ``now``: a key that becomes active starts with a full bucket
        # (CONTRACT §2 "full at start").
        self.base = now
        self.n = 0
        # Tokens frozen while the rate is 0 ("no sending"); unused otherwise.
        self.held = 1.0
        self.queued = 0
        # Sequence number of this key's live entry in the ready heap, or -1
        # when not scheduled (empty queue, or rate 0). Older heap entries for
        # the key carry another number and are skipped when popped.
        self.seq = -1
        self.head: T | None = None
        self.head_next = 0
        self.head_end = 0
        self.rest: deque[tuple[T, int, int]] | None = None

    # -- token arithmetic ------------------------------------------------
    # Capacity is max(1, rate * 1 s) tokens (CONTRACT §2): at least one, so a
    # long code at 0.25/s can still send a part at all.

    def capacity(self) -> float:
        return max(1.0, self.rate)

    def full_at(self) -> float:
        """Time from which the bucket is full (the GCRA theoretical arrival time)."""
        if self.rate == 0:
            return -math.inf if self.held >= 1.0 else math.inf
        return self.base + self.n / self.rate

    def next_token_at(self) -> float:
        """Earliest time at which the bucket holds a whole token."""
        # tokens(t) = cap - (full_at - t) * rate >= 1  <=>  t >= full_at - (cap - 1) / rate
        return self.base + (self.n - self.capacity() + 1.0) / self.rate

    def tokens(self, now: float) -> float:
        if self.rate == 0:
            return self.held
        return self.capacity() - max(0.0, self.full_at() - now) * self.rate

    def take(self, now: float) -> None:
        """Spend one token at ``now`` (the caller checked next_token_at() <= now)."""
        if self.full_at() <= now:
            # The bucket overflowed while waiting: re-anchor at now. Besides a
            # rate change this is the only place the anchor moves, and it
            # moves to an exact clock reading, so no error builds up.
            self.base = now
            self.n = 1
        else:
            self.n += 1

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate keeping the tokens the bucket holds, capped to the new capacity."""
        tokens = min(max(1.0, rate), self.tokens(now))
        self.rate = rate
        if rate == 0:
            self.held = tokens
        else:
            self.base = now + (self.capacity() - tokens) / rate
            self.n = 0

    # -- queue -----------------------------------------------------------

    def append(self, item: T, first: int, parts: int) -> None:
        if self.queued == 0:
            self.head, self.head_next, self.head_end = item, first, first + parts
        else:
            if self.rest is None:
                self.rest = deque()
            self.rest.append((item, first, first + parts))
        self.queued += parts

    def prepend(self, item: T, first: int, parts: int) -> None:
        if self.queued > 0:
            if self.rest is None:
                self.rest = deque()
            self.rest.appendleft((cast(T, self.head), self.head_next, self.head_end))
        self.head, self.head_next, self.head_end = item, first, first + parts
        self.queued += parts

    def release(self) -> tuple[T, int]:
        """Take the next part of the head message off the queue."""
        item, index = self.head, self.head_next
        self.queued -= 1
        if index + 1 < self.head_end:
            self.head_next = index + 1
        else:
            self._advance()
        return cast(T, item), index

    def _advance(self) -> None:
        rest = self.rest
        if rest:
            self.head, self.head_next, self.head_end = rest.popleft()
            if not rest:
                self.rest = None
        else:
            self.head, self.head_next, self.head_end = None, 0, 0
            self.rest = None

    def entries(self) -> list[tuple[T, int, int]]:
        out: list[tuple[T, int, int]] = []
        if self.queued:
            out.append((cast(T, self.head), self.head_next, self.head_end))
            if self.rest:
                out.extend(self.rest)
        return out

    def replace_entries(self, entries: list[tuple[T, int, int]]) -> None:
        self.queued = sum(end - first for _, first, end in entries)
        if entries:
            self.head, self.head_next, self.head_end = entries[0]
            self.rest = deque(entries[1:]) if len(entries) > 1 else None
        else:
            self.head, self.head_next, self.head_end = None, 0, 0
            self.rest = None


def _checked_rate(rate_of: Callable[[str], float], key: str) -> float:
    rate = float(rate_of(key))
    # Rates come from config, which check-config already validated; a NaN or
    # negative here would silently stall or crash the heap, so refuse it loudly.
    if not (rate >= 0.0 and math.isfinite(rate)):
        raise ValueError(f"rate for sender queue {key!r} must be finite and >= 0, got {rate!r}")
    return rate


def _check_parts(parts: int, first_part: int) -> None:
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    if first_part < 0:
        raise ValueError(f"first_part must not be negative, got {first_part}")


class SenderScheduler(Generic[T]):
    """Per-key FIFO queues drained under per-key token buckets, by one heap.

    ``clock`` returns monotonic seconds; ``rate_of(key)`` gives a key's rate
    in parts per second (0 holds its queue) and is asked when a key becomes
    active and on ``set_rates``. Items are opaque; each carries a number of
    parts and every part spends one token (CONTRACT §2 counts parts).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        rate_of: Callable[[str], float],
        *,
        max_queued_parts: int = DEFAULT_MAX_QUEUED_PARTS,
        empty_at: Callable[[str], float] | None = None,
    ) -> None:
        if max_queued_parts < 1:
            raise ValueError("max_queued_parts must be at least 1")
        self._clock = clock
        self._rate_of = rate_of
        self._limit = max_queued_parts
        # When a key's bucket was last known empty elsewhere (CONTRACT §9: a
        # sender taken over from another instance, which may have just spent
        # its tokens); a key the scheduler does not remember otherwise
        # starts full.
        self._empty_at = empty_at
        # Every key the scheduler remembers: those with queued work and those
        # cooling down. A key absent from here has, by construction, a full
        # bucket, so forgetting it changes nothing a sender could observe.
        self._buckets: dict[str, _Bucket[T]] = {}
        # (next token time, seq, bucket) of every key with work and rate > 0.
        # seq breaks ties in scheduling order (FIFO across keys) and marks
        # stale entries (bucket.seq != seq) for lazy deletion.
        self._ready: list[tuple[float, int, _Bucket[T]]] = []
        # (full-again time, key) of keys whose queue emptied. Entries are
        # hints: the sweep re-checks the bucket before forgetting it.
        self._cooling: list[tuple[float, str]] = []
        self._seq = 0
        self._queued = 0
        self._forgotten = 0

    # -- introspection ---------------------------------------------------

    @property
    def queued_parts(self) -> int:
        """Parts waiting in all queues (the ``queue_depth`` metric)."""
        return self._queued

    @property
    def max_queued_parts(self) -> int:
        """The per-key limit ``push`` enforces (``[queues] max_per_sender``)."""
        return self._limit

    @property
    def active_keys(self) -> int:
        """Keys holding state: queued work, or a bucket still refilling.

        This is the ``sender_queues_active`` metric and the scheduler's memory
        footprint; it returns to 0 once every idle key's bucket is full again.
        """
        return len(self._buckets)

    def queue_keys(self) -> list[str]:
        """Every key held (queued work or a bucket refilling)."""
        return list(self._buckets)

    def depth(self, key: str) -> int:
        """Parts queued for ``key`` (0 for an unknown key)."""
        bucket = self._buckets.get(key)
        return bucket.queued if bucket is not None else 0

    def deepest(self, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` keys holding the most parts, deepest first, with
        their depth; keys with none are left out (the status page's busiest
        sender queues). One pass over the keys held, about 0.1 µs each."""
        found = nlargest(limit, self._buckets.values(), key=attrgetter("queued"))
        return [(b.key, b.queued) for b in found if b.queued > 0]

    # -- queueing --------------------------------------------------------

    def push(
        self, key: str, item: T, parts: int = 1, *, first_part: int = 0, force: bool = False
    ) -> None:
        """Queue ``item`` (``parts`` message parts) at the tail of ``key``'s queue.

        Its parts are released as ``(item, first_part)``, ``(item,
        first_part + 1)``, ...: ``first_part`` lets a message whose first
        parts already went out (found again after a restart) queue only the
        rest under their own indexes.

        Raises SenderQueueFull, queueing nothing, if the key would hold more
        than ``max_queued_parts`` parts (CONTRACT §2: bounded, full → refused).
        ``force`` queues anyway, for work that is already committed and must
        not be dropped (the limit guards admission, not recovery).
        """
        _check_parts(parts, first_part)
        now = self._clock()
        self._sweep(now)
        bucket = self._buckets.get(key)
        queued = bucket.queued if bucket is not None else 0
        if not force and queued + parts > self._limit:
            raise SenderQueueFull(key, queued, self._limit)
        bucket = self._activate(key, bucket, now)
        bucket.append(item, first_part, parts)
        self._queued += parts

    def push_front(self, key: str, item: T, parts: int = 1, *, first_part: int = 0) -> None:
        """Queue ``item`` ahead of everything queued for ``key``.

        For a retry after a temporary carrier error: the message goes out
        before anything the sender submitted later, keeping per-sender order
        (CONTRACT §2: never reordered). It is never refused, since the message
        was admitted once already; the queue may exceed its limit by it.
        ``first_part`` as for ``push``: a retry of part 2 of 3 is
        ``push_front(key, item, 2, first_part=1)``.
        """
        _check_parts(parts, first_part)
        now = self._clock()
        self._sweep(now)
        bucket = self._activate(key, self._buckets.get(key), now)
        bucket.prepend(item, first_part, parts)
        self._queued += parts

    def remove(self, key: str, predicate: Callable[[T], bool]) -> list[T]:
        """Cancel ``key``'s queued items for which ``predicate`` is true.

        For messages whose validity passed while they waited. Removed items
        are returned in queue order; a partly released message that matches
        loses its remaining parts. The key's bucket is kept: its tokens were
        spent.
        """
        bucket = self._buckets.get(key)
        if bucket is None or bucket.queued == 0:
            return []
        kept: list[tuple[T, int, int]] = []
        removed: list[T] = []
        for entry in bucket.entries():
            if predicate(entry[0]):
                removed.append(entry[0])
            else:
                kept.append(entry)
        if not removed:
            return []
        before = bucket.queued
        bucket.replace_entries(kept)
        self._queued -= before - bucket.queued
        if bucket.queued == 0:
            self._start_cooling(bucket)
        return removed

    def drop_keys(self, doomed: Callable[[str], bool]) -> list[T]:
        """Forget every key `doomed` names, queue and bucket: its sender
        went to another instance (CONTRACT §9), which queues the same work
        from the database. The items that were queued, once each."""
        dropped: dict[int, T] = {}
        for key in [k for k in self._buckets if doomed(k)]:
            bucket = self._buckets.pop(key)
            for item, _, _ in bucket.entries():
                dropped[id(item)] = item
            self._queued -= bucket.queued
            bucket.queued = 0
            bucket.seq = -1  # its heap entries are stale now
        return list(dropped.values())

    # -- releasing -------------------------------------------------------

    def pop_ready(self, limit: int | None = None) -> list[tuple[T, int]]:
        """Release every part whose key holds a token now: ``(item, part_index)``.

        One token per part, so a 3-part message on a long code goes out as
        part 0 now, part 1 four seconds later, part 2 four more later.
        Within a key parts leave in FIFO order; across keys in order of the
        time their token became usable. ``limit`` caps the parts released
        (e.g. the free slots in the carrier's submit window).
        """
        now = self._clock()
        self._sweep(now)
        out: list[tuple[T, int]] = []
        ready = self._ready
        while ready and (limit is None or len(out) < limit):
            at, seq, bucket = ready[0]
            if at > now:
                break
            if bucket.seq != seq:
                heappop(ready)
                continue
            bucket.take(now)
            out.append(bucket.release())
            if bucket.queued:
                # Clamped to now: a key with tokens to spare goes behind the
                # keys already waiting, so one burst-capable sender (40/s
                # toll-free) cannot hold up the others within one call.
                self._seq += 1
                bucket.seq = self._seq
                heapreplace(ready, (max(bucket.next_token_at(), now), self._seq, bucket))
            else:
                heappop(ready)
                self._start_cooling(bucket)
        self._queued -= len(out)
        return out

    def next_release_at(self) -> float | None:
        """Earliest clock time at which ``pop_ready`` can release a part.

        May be in the past (work is ready now). None when nothing is queued,
        or when every queued key has rate 0: only a ``push`` or ``set_rates``
        can change that, so the caller waits for one of those.
        """
        ready = self._ready
        while ready:
            at, seq, bucket = ready[0]
            if bucket.seq == seq:
                return at
            heappop(ready)
        return None

    # -- reload ----------------------------------------------------------

    def set_rates(self, rate_of: Callable[[str], float]) -> None:
        """Apply new rates (config reload, CONTRACT §1 SIGHUP).

        Queued work stays where it is; each bucket keeps the tokens it holds,
        capped to its new capacity, and refills at the new rate from now.
        O(number of remembered keys), which reload can afford.
        """
        now = self._clock()
        # Ask every rate before changing anything, so a bad rate leaves the
        # scheduler as it was.
        rates = {key: _checked_rate(rate_of, key) for key in self._buckets}
        self._rate_of = rate_of
        ready: list[tuple[float, int, _Bucket[T]]] = []
        cooling: list[tuple[float, str]] = []
        for key, bucket in self._buckets.items():
            bucket.set_rate(rates[key], now)
            if bucket.queued == 0:
                bucket.seq = -1
                if bucket.full_at() != math.inf:
                    cooling.append((bucket.full_at(), key))
            elif bucket.rate == 0:
                bucket.seq = -1
            else:
                if bucket.seq < 0:
                    self._seq += 1
                    bucket.seq = self._seq
                # Keeping seq keeps the order among keys that are ready.
                ready.append((max(bucket.next_token_at(), now), bucket.seq, bucket))
        heapify(ready)
        heapify(cooling)
        self._ready = ready
        self._cooling = cooling
        self._sweep(now)

    # -- internals -------------------------------------------------------

    def _activate(self, key: str, bucket: _Bucket[T] | None, now: float) -> _Bucket[T]:
        """Return ``key``'s bucket, scheduled in the ready heap if it has no work yet."""
        if bucket is None:
            bucket = _Bucket(key, _checked_rate(self._rate_of, key), now)
            if self._empty_at is not None and bucket.rate > 0:
                # Empty then, it is full a whole capacity's refill later.
                full_at = self._empty_at(key) + bucket.capacity() / bucket.rate
                if full_at > now:
                    bucket.base = full_at
            self._buckets[key] = bucket
        if bucket.queued == 0 and bucket.rate > 0:
            # A cooling key keeps its bucket: its next token may still be
            # ahead, which is exactly the burst the cooling state prevents.
            self._seq += 1
            bucket.seq = self._seq
            heappush(self._ready, (max(bucket.next_token_at(), now), self._seq, bucket))
        return bucket

    def _start_cooling(self, bucket: _Bucket[T]) -> None:
        bucket.seq = -1
        full_at = bucket.full_at()
        if full_at != math.inf:
            heappush(self._cooling, (full_at, bucket.key))
        # A paused (rate 0) key that is not full stays until set_rates gives
        # it a rate again; forgetting it would refill it for free.

    def _sweep(self, now: float) -> None:
        """Forget idle keys whose bucket is full again (amortised O(log n) each)."""
        cooling = self._cooling
        buckets = self._buckets
        while cooling and cooling[0][0] <= now:
            _, key = heappop(cooling)
            bucket = buckets.get(key)
            # The entry is only a hint: the key may have work again, or a
            # rate change may have moved its full time (a newer entry exists).
            if bucket is not None and bucket.queued == 0 and bucket.full_at() <= now:
                del buckets[key]
                self._forgotten += 1
        if self._forgotten > _COMPACT_AFTER and self._forgotten > 2 * len(buckets):
            self._buckets = dict(buckets)
            self._forgotten = 0
