"""Failed authentications, throttled per source address (CONTRACT §11).

1,000 wrong API keys or SMPP passwords took 0.3 s on one connection: a
guessing attack costs the attacker nothing. After `limit` failures from one
address within `window` seconds, every authentication from that address is
refused for `cooldown` seconds, right or wrong (a right guess during the
cool-down must not be confirmed). fail2ban's defaults (maxretry 5, findtime
and bantime 10 min) are the model; ours are looser because an aggregator's
partners sit behind shared NAT. Pure and clock-injected.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

LIMIT = 20
WINDOW_SECONDS = 60.0
COOLDOWN_SECONDS = 60.0
# Addresses remembered at once, oldest forgotten first: a flood of spoofed
# or rotating sources cannot grow the table without bound.
MAX_ADDRESSES = 100_000


class AuthThrottle:
    __slots__ = ("_blocked", "_clock", "_cooldown", "_failures", "_limit", "_max", "_window")

    def __init__(
        self,
        *,
        limit: int = LIMIT,
        window: float = WINDOW_SECONDS,
        cooldown: float = COOLDOWN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self._limit = limit
        self._window = window
        self._cooldown = cooldown
        self._clock = clock
        self._max = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._blocked: dict[str, float] = {}  # address -> end of its cool-down

    def retry_after(self, address: str) -> float:
        """Seconds left of this address's cool-down; 0.0 when it may try."""
        until = self._blocked.get(address)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._blocked[address]
            return 0.0
        return left

    def failed(self, address: str) -> bool:
        """Count one failure; True when it starts the address's cool-down
        (the moment to write one log line about it)."""
        now = self._clock()
        times = self._failures.get(address)
        if times is None:
            times = self._failures[address] = deque()
            while len(self._failures) > self._max:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(address)
        times.append(now)
        while times and now - times[0] >= self._window:
            times.popleft()
        if len(times) >= self._limit and address not in self._blocked:
            if len(self._blocked) >= self._max:
                self._blocked = {a: t for a, t in self._blocked.items() if t > now}
                while len(self._blocked) >= self._max:  # the cool-down ending first goes
                    del self._blocked[next(iter(self._blocked))]
            self._blocked[address] = now + self._cooldown
            times.clear()
            return True
        return False

    @property
    def blocked_addresses(self) -> int:
        return len(self._blocked)
