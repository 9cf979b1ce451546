"""The latest errors, for the operator's status page (CONTRACT §8).

A structlog processor keeps the last warnings and errors the process logged
(a carrier bind that failed, a link lost, the database away, ...) in a small
ring. A fault repeats: a line with the same event and the same carrier,
account, address or error as one already held is counted on that entry and
moves it to the front, so one noisy fault cannot push every other one out.
Nothing is read from the database; what the ring holds went through the
log's secret redaction first (smsrouter/logs.py puts it after that step).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Entries held: a screenful.
DEFAULT_CAPACITY = 30
# The levels kept: what an operator may have to act on.
DEFAULT_LEVELS = frozenset({"warning", "error", "critical", "exception"})
# Fields that tell one fault from another of the same event.
IDENTITY_FIELDS = ("logger", "carrier", "account", "sender", "address", "ingress", "error")
# Fields of a log line that are not shown as its details.
_NOT_DETAILS = frozenset(
    {"event", "level", "timestamp", "exc_info", "exception", "stack_info", "stack"}
)
# A detail's value is cut to this many characters.
MAX_VALUE = 300
MAX_DETAILS = 12


@dataclass(slots=True)
class RecentError:
    """One fault: its event, level, the details of its latest line, how often
    it was seen and when first and last."""

    event: str
    level: str
    details: dict[str, str | int | float | bool]
    count: int
    first_at: datetime
    last_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "at": _rfc3339(self.last_at),
            "first_at": _rfc3339(self.first_at),
            "level": self.level,
            "event": self.event,
            "count": self.count,
            "details": dict(self.details),
        }


class RecentErrors:
    """The ring, and the structlog processor that fills it (`__call__`).

    `also` names events kept whatever their level: faults logged at info
    because each one is expected now and then (a carrier's temporary
    failure), that an operator still wants to see when they come.
    """

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        levels: Collection[str] = DEFAULT_LEVELS,
        also: Collection[str] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.levels = frozenset(levels)
        self.also = frozenset(also)
        self._clock = clock
        # Newest last; a repeat moves its entry to the end. Logging may
        # happen on another thread (a library's, asyncio.to_thread).
        self._entries: dict[tuple[str, ...], RecentError] = {}
        self._lock = threading.Lock()

    def __call__(
        self, logger: object, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """A structlog processor: keeps what it should, passes the line on
        unchanged, never raises for a line it cannot read."""
        level = str(event_dict.get("level") or method)
        event = str(event_dict.get("event", ""))
        if level in self.levels or event in self.also:
            self.record(level, event, event_dict)
        return event_dict

    def record(self, level: str, event: str, fields: MutableMapping[str, Any]) -> None:
        details = _details(fields.items())
        key = (event, *(str(fields.get(name, "")) for name in IDENTITY_FIELDS))
        # A rate-limited line stands for those held back before it
        # (router/log_limits.py says how many).
        held = fields.get("repeated")
        seen = 1 + (held if type(held) is int and held > 0 else 0)
        now = self._clock()
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                entry = RecentError(event, level, details, seen, now, now)
            else:
                entry.count += seen
                entry.last_at = now
                entry.level = level
                entry.details = details
            self._entries[key] = entry
            while len(self._entries) > self.capacity:
                del self._entries[next(iter(self._entries))]

    def latest(self, limit: int | None = None) -> list[RecentError]:
        """Newest first, at most `limit`."""
        with self._lock:
            entries = list(self._entries.values())
        entries.reverse()
        return entries if limit is None else entries[:limit]

    def __len__(self) -> int:
        return len(self._entries)


def _details(items: Iterable[tuple[str, Any]]) -> dict[str, str | int | float | bool]:
    details: dict[str, str | int | float | bool] = {}
    for name, value in items:
        if name in _NOT_DETAILS or name.startswith("_"):
            continue
        if len(details) >= MAX_DETAILS:
            break
        if isinstance(value, (bool, int, float)):
            details[name] = value
        else:
            text = value if isinstance(value, str) else repr(value)
            details[name] = text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"
    return details


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
