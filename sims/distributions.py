"""Random delays and weighted mixes for the simulators, with their text forms.

Both draw from a `random.Random` the caller owns (seeded in tests), and both
skip the generator entirely when there is nothing to draw (a fixed delay, a
mix of one outcome): the default simulator stays deterministic and pays
nothing for knobs it does not use.

Text forms, as the CLI and the config take them:

* delay: ``0.5`` (fixed), ``0.1-0.5`` (uniform between the two),
  ``exp:0.2`` (exponential with mean 0.2), all in seconds;
* mix: ``DELIVRD=95,UNDELIV=5``; a missing weight is 1; command_status keys
  may be hex (``0x58=1,0x0B=1,0=98``).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "Delay",
    "Exponential",
    "Fixed",
    "Mix",
    "Uniform",
    "parse_delay",
    "parse_mix",
    "parse_status_mix",
    "status_of",
]

T = TypeVar("T")


class Delay:
    """A distribution of delays in seconds."""

    __slots__ = ()

    @property
    def is_zero(self) -> bool:
        """True when every draw is 0: the caller can take its no-delay path."""
        return False

    def sample(self, rng: random.Random) -> float:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Fixed(Delay):
    seconds: float

    def __post_init__(self) -> None:
        if not (self.seconds >= 0 and math.isfinite(self.seconds)):
            raise ValueError(f"a delay must be a finite number of seconds >= 0, not {self.seconds}")

    @property
    def is_zero(self) -> bool:
        return self.seconds == 0

    def sample(self, rng: random.Random) -> float:
        return self.seconds

    def __str__(self) -> str:
        return f"{self.seconds:g}"


@dataclass(frozen=True, slots=True)
class Uniform(Delay):
    low: float
    high: float

    def __post_init__(self) -> None:
        if not (0 <= self.low <= self.high and math.isfinite(self.high)):
            raise ValueError(f"a uniform delay needs 0 <= low <= high, not {self.low}-{self.high}")

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    def __str__(self) -> str:
        return f"{self.low:g}-{self.high:g}"


@dataclass(frozen=True, slots=True)
class Exponential(Delay):
    """Memoryless delays: most short, a long tail, as queueing SMSCs show."""

    mean: float

    def __post_init__(self) -> None:
        if not (self.mean > 0 and math.isfinite(self.mean)):
            raise ValueError(f"an exponential delay needs a mean > 0, not {self.mean}")

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)

    def __str__(self) -> str:
        return f"exp:{self.mean:g}"


def parse_delay(value: str | float | Delay) -> Delay:
    """A Delay from a number of seconds or one of the text forms above."""
    if isinstance(value, Delay):
        return value
    if isinstance(value, int | float):
        return Fixed(float(value))
    text = value.strip().lower()
    try:
        if text.startswith("exp:"):
            return Exponential(float(text[4:]))
        low, sep, high = text.partition("-")
        if sep and low:
            return Uniform(float(low), float(high))
        return Fixed(float(text))
    except ValueError as exc:
        raise ValueError(
            f"delay {value!r}: expected seconds, LOW-HIGH or exp:MEAN ({exc})"
        ) from None


class Mix(Generic[T]):
    """Outcomes drawn by weight; weights need not sum to anything."""

    __slots__ = ("_cumulative", "_only", "_outcomes", "_total", "weights")

    def __init__(self, weights: Mapping[T, float]) -> None:
        items = [(k, float(w)) for k, w in weights.items() if w]
        if not items:
            raise ValueError("a mix needs at least one outcome with a weight above 0")
        for key, weight in items:
            if not (weight > 0 and math.isfinite(weight)):
                raise ValueError(f"weight of {key!r} must be a positive number, not {weight}")
        self.weights: dict[T, float] = dict(items)
        self._outcomes = [k for k, _ in items]
        self._cumulative = list(itertools.accumulate(w for _, w in items))
        self._total = self._cumulative[-1]
        self._only: tuple[T] | None = (self._outcomes[0],) if len(items) == 1 else None

    @property
    def outcomes(self) -> list[T]:
        return list(self._outcomes)

    def sample(self, rng: random.Random) -> T:
        if self._only is not None:
            return self._only[0]
        # bisect on the running sums: one random() and a C search, cheaper
        # than random.choices() re-summing the weights on every call.
        return self._outcomes[bisect.bisect_right(self._cumulative, rng.random() * self._total)]

    def __repr__(self) -> str:
        return f"Mix({self.weights!r})"


def parse_mix(text: str, key: Callable[[str], T]) -> dict[T, float]:
    """``'A=3,B=1'`` → ``{key('A'): 3.0, key('B'): 1.0}``."""
    out: dict[T, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, weight = item.partition("=")
        try:
            out[key(name.strip())] = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"mix item {item.strip()!r}: expected NAME=WEIGHT") from None
    return out


def status_of(value: str | int) -> int:
    """A command_status from ``0x58``, ``88`` or an int; SMPP 3.4 §5.1.3 keeps it in 32 bits."""
    try:
        status = value if isinstance(value, int) else int(value.strip(), 0)
    except ValueError:
        raise ValueError(f"command_status {value!r} is not a number like 0x58 or 88") from None
    if not 0 <= status <= 0xFFFFFFFF:
        raise ValueError(f"command_status {value!r} does not fit 4 octets")
    return status


def parse_status_mix(text: str) -> dict[int, float]:
    """``'0x58=1,0x0B=1,0=98'`` → ``{0x58: 1.0, 0x0B: 1.0, 0: 98.0}``."""
    return parse_mix(text, status_of)
