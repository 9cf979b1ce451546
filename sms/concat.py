"""Reassembly of concatenated short messages (TS 23.040 §9.2.3.24.1/.8,
SMPP 3.4 SAR TLVs §5.3.2.22-24), sans-IO.

Parts arrive in any order, interleaved with other messages' parts, and some
never arrive. A message is complete when all its parts are in; parts of an
incomplete message are given up after `timeout` seconds, and at most
`max_pending` messages wait at once (the oldest is given up first), so a
sender of endless first parts cannot grow the buffer without bound. What
is given up is returned, not dropped silently: the caller delivers the
parts it has as they are.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

# A message is waited for this long (seconds). SMSCs and handsets use tens
# of seconds to minutes; the parts of one message arrive within seconds.
DEFAULT_TIMEOUT = 60.0
# Messages waiting for parts at once.
DEFAULT_MAX_PENDING = 10_000


@dataclass(slots=True)
class Reassembled:
    """A whole message (or, when `complete` is False, the parts that came)."""

    key: tuple[object, ...]
    total: int
    parts: dict[int, bytes]
    complete: bool

    def payload(self) -> bytes:
        """The parts' payloads in order (missing parts left out)."""
        return b"".join(self.parts[i] for i in sorted(self.parts))


@dataclass(slots=True)
class _Pending:
    total: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)


class Reassembler:
    def __init__(
        self, *, timeout: float = DEFAULT_TIMEOUT, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        self.timeout = timeout
        self.max_pending = max_pending
        self._pending: OrderedDict[tuple[object, ...], _Pending] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self,
        key: tuple[object, ...],
        ref: int,
        total: int,
        seq: int,
        payload: bytes,
        now: float,
    ) -> list[Reassembled]:
        """Take one part; return what is finished by it: the completed
        message, and any message given up to make room.

        `key` says whose parts belong together (e.g. sender, recipient);
        the concat reference is added to it. A part with a bad total or
        sequence number (TS 23.040 §9.2.3.24.1: ignore the element) comes
        back at once as a message of its own.
        """
        if not 1 <= seq <= total:
            return [Reassembled((*key, ref), 1, {1: payload}, True)]
        full_key = (*key, ref, total)
        out: list[Reassembled] = []
        pending = self._pending.get(full_key)
        if pending is None:
            if len(self._pending) >= self.max_pending:
                old_key, old = self._pending.popitem(last=False)
                out.append(Reassembled(old_key, old.total, old.parts, False))
            pending = self._pending[full_key] = _Pending(total, now)
        # A repeated part (a retransmission) replaces the earlier copy.
        pending.parts[seq] = payload
        if len(pending.parts) == pending.total:
            del self._pending[full_key]
            out.append(Reassembled(full_key, pending.total, pending.parts, True))
        return out

    def expire(self, now: float) -> list[Reassembled]:
        """Give up the messages that waited longer than the timeout."""
        out: list[Reassembled] = []
        while self._pending:
            key, oldest = next(iter(self._pending.items()))
            if now - oldest.started < self.timeout:
                break
            del self._pending[key]
            out.append(Reassembled(key, oldest.total, oldest.parts, False))
        return out

    def next_expiry(self) -> float | None:
        if not self._pending:
            return None
        return next(iter(self._pending.values())).started + self.timeout
