"""Repeated log lines, once per interval with a count (CONTRACT §11).

A fault that hits every message (a carrier stalled, a database gone) would
otherwise write one line per message: a 10 s carrier stall wrote 34,802
"retrying later" lines, burying the one line an operator needs. Each kind
of line (its key) is written at most once per interval; the next one that
is written says how many were held back meanwhile (`repeated`), so the
volume stays visible. Pure and clock-injected, like the scheduler.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

# Seconds between two lines of one key. syslog's "last message repeated N
# times" and journald's RateLimitIntervalSec (30 s) work the same way.
DEFAULT_INTERVAL = 10.0
# Distinct keys remembered; the oldest is forgotten first (a key forgotten
# only costs one extra line).
MAX_KEYS = 4096


class RepeatLimiter:
    """Decides, per key, whether a line is written now or counted."""

    __slots__ = ("_clock", "_interval", "_keys", "_max_keys")

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._max_keys = max_keys
        # key -> [time of the last line written, lines held back since]
        self._keys: OrderedDict[Hashable, list[float]] = OrderedDict()

    def admit(self, key: Hashable) -> int | None:
        """None: hold this line back. Otherwise write it, saying that this
        many lines of the key were held back before it."""
        now = self._clock()
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            return None
        held = 0 if entry is None else int(entry[1])
        self._keys[key] = [now, 0]
        self._keys.move_to_end(key)
        while len(self._keys) > self._max_keys:
            self._keys.popitem(last=False)
        return held


class LimitedLog:
    """A structlog logger whose lines are rate-limited per key (default: the
    event text). `log.warning("retrying later", key=("retry", carrier), ...)`"""

    __slots__ = ("_limiter", "_log")

    def __init__(self, logger: Any, limiter: RepeatLimiter | None = None) -> None:
        self._log = logger
        self._limiter = limiter or RepeatLimiter()

    def _emit(self, level: str, event: str, key: Hashable | None, fields: dict[str, Any]) -> bool:
        held = self._limiter.admit(event if key is None else (event, key))
        if held is None:
            return False
        if held:
            fields["repeated"] = held
        getattr(self._log, level)(event, **fields)
        return True

    def info(self, event: str, *, key: Hashable | None = None, **fields: Any) -> bool:
        return self._emit("info", event, key, fields)

    def warning(self, event: str, *, key: Hashable | None = None, **fields: Any) -> bool:
        return self._emit("warning", event, key, fields)

    def error(self, event: str, *, key: Hashable | None = None, **fields: Any) -> bool:
        return self._emit("error", event, key, fields)
