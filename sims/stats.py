"""What the load clients share: run bounds, number lists, latency percentiles, one JSON line.

`smsrouter sim esme`, `sim http` and `sim webhook` each print one JSON object
on one line when they finish, so that a benchmark script can run smsrouter
and its peers (Kannel, Jasmin) through the same clients and compare the
lines. Latencies are in milliseconds, rates per second, CPU in seconds of
this process.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from array import array
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "Budget",
    "Latencies",
    "address_of",
    "emit",
    "expand_numbers",
    "per_second",
    "percentile",
]


# ---------------------------------------------------------------------------
# Sender and destination lists


_RANGE_RE = re.compile(r"\{(\d+)\.\.(\d+)\}")
# Bound on the numbers one spec may expand to: a typo such as {0..99999999}
# must not eat the machine's memory before the first message is sent.
MAX_NUMBERS = 1_000_000


def expand_numbers(spec: str) -> list[str]:
    """The numbers a `--senders` / `--destinations` value names, in order.

    * ``12345`` — one number;
    * ``+1415555{0000..0999}`` — a range, zero-padded to the width of the
      lower bound as written (shell brace style); several ranges multiply;
    * ``a,b,c`` — a list of any of the above;
    * ``@path`` or the path of an existing file — one number per line
      (blank lines and ``#`` comments skipped).

    Raises ValueError for an empty result, a reversed range or more than
    ``MAX_NUMBERS`` numbers.
    """
    spec = spec.strip()
    path = Path(spec[1:]) if spec.startswith("@") else Path(spec)
    if spec.startswith("@") or path.is_file():
        lines = path.read_text().splitlines()
        numbers = [s for line in lines if (s := line.split("#", 1)[0].strip())]
    else:
        numbers = []
        for item in spec.split(","):
            if item.strip():
                numbers.extend(_expand_ranges(item.strip()))
                if len(numbers) > MAX_NUMBERS:
                    break
    if not numbers:
        raise ValueError(f"no numbers in {spec!r}")
    if len(numbers) > MAX_NUMBERS:
        raise ValueError(f"{spec!r} names more than {MAX_NUMBERS} numbers")
    return numbers


def _expand_ranges(item: str) -> list[str]:
    match = _RANGE_RE.search(item)
    if match is None:
        return [item]
    low, high = match.group(1), match.group(2)
    if int(high) < int(low):
        raise ValueError(f"reversed range {{{low}..{high}}} in {item!r}")
    if int(high) - int(low) + 1 > MAX_NUMBERS:
        raise ValueError(f"range {{{low}..{high}}} names more than {MAX_NUMBERS} numbers")
    width = len(low)
    head, tail = item[: match.start()], item[match.end() :]
    out: list[str] = []
    for value in range(int(low), int(high) + 1):
        out.extend(_expand_ranges(f"{head}{value:0{width}d}{tail}"))
        if len(out) > MAX_NUMBERS:
            break
    return out


def address_of(number: str) -> tuple[int, int, str]:
    """(TON, NPI, address) of a number as SMPP carries it (CONTRACT §4).

    International numbers travel as TON 1 / NPI 1 without the ``+``; 3 to 8
    digits are a short code, TON 3 / NPI 0; anything with a letter is an
    alphanumeric sender, TON 5 / NPI 0; other digit strings are taken as
    international.
    """
    if number.startswith("+") and number[1:].isdigit():
        return 1, 1, number[1:]
    if number.isdigit():
        return (3, 0, number) if len(number) <= 8 else (1, 1, number)
    return 5, 0, number


# ---------------------------------------------------------------------------
# Run bounds


class Budget:
    """Hands out message numbers 0, 1, 2 ... until `count` or the deadline.

    `rate` (messages per second, 0 = unbounded) adds a token bucket, so a
    run can offer a fixed load instead of as much as the peer takes. The
    bucket starts with one token and holds 10 ms of rate (at least one):
    a steady offer, no burst at the start or after a stall. Time is
    `time.monotonic`.
    """

    def __init__(self, count: int, duration: float, rate: float = 0.0) -> None:
        if count < 0 or duration <= 0 or rate < 0:
            raise ValueError("count >= 0, duration > 0 and rate >= 0 are required")
        self.count = count
        self.duration = duration
        self.rate = rate
        self.taken = 0
        self.started_at = 0.0
        self.deadline = math.inf
        self._tokens = 0.0
        self._capacity = 1.0
        self._refilled_at = 0.0
        self._stopped = False

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.deadline = self.started_at + self.duration
        self._refilled_at = self.started_at
        self._capacity = max(1.0, self.rate * 0.01)
        self._tokens = 1.0

    def stop(self) -> None:
        """No more numbers from now on (the peer went away, Ctrl-C ...)."""
        self._stopped = True

    @property
    def exhausted(self) -> bool:
        return self._stopped or self.taken >= self.count or time.monotonic() >= self.deadline

    def take(self) -> int | None:
        """The next message number, or None when the run is over or (with a
        rate) no token is left right now; `wait()` tells which and how long."""
        if self._stopped or self.taken >= self.count:
            return None
        now = time.monotonic()
        if now >= self.deadline:
            return None
        if self.rate:
            if self._tokens < 1.0:
                self._tokens = min(
                    self._capacity, self._tokens + (now - self._refilled_at) * self.rate
                )
                self._refilled_at = now
                if self._tokens < 1.0:
                    return None
            self._tokens -= 1.0
        n = self.taken
        self.taken += 1
        return n

    def wait(self) -> float | None:
        """Seconds until the next token, or None when the run is over."""
        if self.exhausted:
            return None
        if not self.rate:
            return 0.0
        return max(0.0, (1.0 - self._tokens) / self.rate)


# ---------------------------------------------------------------------------
# Latencies and rates


def percentile(ordered: list[float] | array[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of an ascending sequence."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class Latencies:
    """Seconds, kept compactly (8 bytes each), summarised in milliseconds."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: array[float] = array("d")

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    def __len__(self) -> int:
        return len(self.values)

    def summary(self, points: Iterable[float] = (50, 99)) -> dict[str, float | None]:
        """{"p50": ms, "p99": ms, "max": ms}; None for each when empty."""
        ordered = sorted(self.values)
        out: dict[str, float | None] = {}
        for p in points:
            key = f"p{p:g}"
            out[key] = round(percentile(ordered, p) * 1000.0, 3) if ordered else None
        out["max"] = round(ordered[-1] * 1000.0, 3) if ordered else None
        return out


def per_second(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def emit(record: Mapping[str, Any], out: TextIO | None = None) -> str:
    """Print `record` as one JSON line (and return the line)."""
    line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    stream = out if out is not None else sys.stdout
    stream.write(line + "\n")
    stream.flush()
    return line
