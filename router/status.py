"""What the operator's status page shows (CONTRACT §8 `GET /status`), as
one JSON document built from this process's own state.

Every figure is read from memory: carrier binds and health, the sender
scheduler's queues, the counters `/metrics` exposes (turned into rates by a
`CounterRates`), the flagged and suspended senders every process holds, the
latest errors of its log. A refresh every second or two costs no query.
The carrier side (connectors/) is not imported: the daemon hands a callable
that counts each carrier's binds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smsrouter.router import metrics
from smsrouter.router.counter_rates import CounterRates
from smsrouter.router.health import CarrierHealth
from smsrouter.router.recent_errors import RecentErrors
from smsrouter.router.scheduler import SenderScheduler
from smsrouter.router.sender_states import SUSPENDED, SenderStates
from smsrouter.router.senders import sender_of_key
from smsrouter.router.store.sender_states import state_json

# Rows of each list: what fits on one screen.
BUSIEST_QUEUES = 10
# Finding the busiest queues reads every active key (about 0.1 µs each,
# 10 ms for 100,000). With a great many, the list is found again at most
# once per this many keys' seconds (100,000 keys: every 10 s), so that a
# page left open takes under 0.1 % of the event loop's time.
KEYS_SCANNED_PER_SECOND = 10_000
MAX_SENDERS = 50
MAX_ERRORS = 20

# The names of the counters sampled, as `counter_totals` gives them.
IN = "in"
OUT = "out"
REJECTED = "rejected"
RECEIPTS = "receipts"
_SUBMITTED = "submitted:"
_ERRORS = "errors:"


@dataclass(frozen=True, slots=True)
class BindCount:
    """A carrier's binds: those bound now, and those configured (a
    transmitter and a receiver are two)."""

    name: str
    up: int
    total: int


def counter_totals() -> dict[str, float]:
    """The counters the page turns into rates, summed over their labels:
    messages accepted (in), parts submitted to carriers (out), messages
    refused at admission, receipts, and each carrier's submits and errors."""
    totals = {
        IN: sum(metrics.MESSAGES_RECEIVED.values().values()),
        OUT: sum(metrics.SUBMITTED.values().values()),
        REJECTED: sum(metrics.MESSAGES_REJECTED.values().values()),
        RECEIPTS: sum(metrics.DLR_RECEIVED.values().values()),
    }
    for (carrier,), value in metrics.SUBMITTED.values().items():
        totals[_SUBMITTED + carrier] = value
    for (carrier, _), value in metrics.SUBMIT_ERRORS.values().items():
        totals[_ERRORS + carrier] = totals.get(_ERRORS + carrier, 0.0) + value
    return totals


class StatusBoard:
    """Builds the status document on demand; each call samples the counters
    (so rates appear from the second look on)."""

    def __init__(
        self,
        *,
        binds: Callable[[], Iterable[BindCount]],
        health: CarrierHealth,
        queues: SenderScheduler[Any],
        rate_of: Callable[[str], float],
        senders: SenderStates,
        errors: RecentErrors,
        database_reachable: Callable[[], bool],
        about: Mapping[str, str],
        rates: CounterRates | None = None,
        totals: Callable[[], Mapping[str, float]] = counter_totals,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        keys_scanned_per_second: int = KEYS_SCANNED_PER_SECOND,
    ) -> None:
        self.binds = binds
        self.health = health
        self.queues = queues
        self.rate_of = rate_of
        self.senders = senders
        self.errors = errors
        self.database_reachable = database_reachable
        self.about = dict(about)
        self.rates = rates if rates is not None else CounterRates(clock=monotonic)
        self.totals = totals
        self._clock = clock
        self._monotonic = monotonic
        self._keys_per_second = keys_scanned_per_second
        self._busiest: list[dict[str, Any]] = []
        self._busiest_until = -math.inf

    def document(self) -> dict[str, Any]:
        totals = self.totals()
        self.rates.sample(totals)
        return {
            **self.about,
            "at": _rfc3339(self._clock()),
            "database": {"reachable": self.database_reachable()},
            "messages": self._messages(totals),
            "carriers": [self._carrier(b, totals) for b in self.binds()],
            "queues": self._queues(),
            "senders": self._senders(),
            "errors": [e.as_json() for e in self.errors.latest(MAX_ERRORS)],
        }

    def _messages(self, totals: Mapping[str, float]) -> dict[str, Any]:
        """Per second over the rates' window (None until two looks), and
        the counts since the process started."""
        rate = self.rates.rate
        return {
            "window_seconds": self.rates.window,
            "in_per_second": _rounded(rate(IN)),
            "out_per_second": _rounded(rate(OUT)),
            "rejected_per_second": _rounded(rate(REJECTED)),
            "receipts_per_second": _rounded(rate(RECEIPTS)),
            "in_total": int(totals.get(IN, 0.0)),
            "out_total": int(totals.get(OUT, 0.0)),
            "rejected_total": int(totals.get(REJECTED, 0.0)),
            "receipts_total": int(totals.get(RECEIPTS, 0.0)),
        }

    def _carrier(self, binds: BindCount, totals: Mapping[str, float]) -> dict[str, Any]:
        name = binds.name
        snapshot = self.health.snapshot(name)
        # As the carrier_health metric: no bind, no health.
        health = self.health.score(name) if binds.up > 0 else 0.0
        return {
            "name": name,
            "binds_up": binds.up,
            "binds_total": binds.total,
            "health": health,
            "breaker": snapshot["state"],
            "latency_ms": snapshot["latency_ms"],
            "submit_per_second": _rounded(self.rates.rate(_SUBMITTED + name)),
            "errors_per_second": _rounded(self.rates.rate(_ERRORS + name)),
            "submitted_total": int(totals.get(_SUBMITTED + name, 0.0)),
            "errors_total": int(totals.get(_ERRORS + name, 0.0)),
        }

    def _queues(self) -> dict[str, Any]:
        now, keys = self._monotonic(), self.queues.active_keys
        if now >= self._busiest_until:
            self._busiest = busiest_queues(self.queues, self.rate_of)
            self._busiest_until = now + keys / self._keys_per_second
        return {
            "depth": self.queues.queued_parts,
            "active": keys,
            "max_per_sender": self.queues.max_queued_parts,
            "busiest": self._busiest,
        }

    def _senders(self) -> dict[str, Any]:
        """Flagged and suspended numbers (CONTRACT §6 "Opt-out rate"), the
        latest decisions first."""
        states = sorted(self.senders.all(), key=lambda s: s.since, reverse=True)
        suspended = [s for s in states if s.state == SUSPENDED]
        flagged = [s for s in states if s.state != SUSPENDED]
        return {
            "flagged_count": len(flagged),
            "suspended_count": len(suspended),
            "flagged": [state_json(s) for s in flagged[:MAX_SENDERS]],
            "suspended": [state_json(s) for s in suspended[:MAX_SENDERS]],
        }


def busiest_queues(
    queues: SenderScheduler[Any], rate_of: Callable[[str], float], limit: int = BUSIEST_QUEUES
) -> list[dict[str, Any]]:
    """The sender queues holding the most parts, deepest first: sender,
    destination country when the queue is per country, parts queued, the
    rate they leave at and the seconds that takes (None at rate 0: held)."""
    busiest: list[dict[str, Any]] = []
    for key, depth in queues.deepest(limit):
        sender = sender_of_key(key)
        rate = rate_of(key)
        busiest.append(
            {
                "sender": sender,
                "country": key[len(sender) + 1 :] or None,
                "depth": depth,
                "rate": rate,
                "drain_seconds": round(depth / rate, 1) if rate > 0 else None,
            }
        )
    return busiest


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
