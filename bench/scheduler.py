"""SenderScheduler at 10^4, 10^5 and 10^6 active sender queues.

    python -m bench.scheduler [--sizes 10000,100000,1000000]

Prints one JSON line:

* ``releases_per_s``: parts released per wall-clock second in a steady state
  where every key stays backlogged (each released part is pushed again, so
  the figure counts one pop_ready release plus one push). Keys are long
  codes (0.25/s) activated evenly over 4 s of virtual time, so every
  pop_ready() call finds about 1,000 keys due and the heap holds all N.
* ``bytes_per_active_key``: memory the scheduler holds per key with one
  queued message, ``..._two_messages`` with two (the second one brings a
  deque); measured with tracemalloc, excluding the items and key strings,
  which belong to the caller.
* ``bytes_per_forgotten_key``: what is left per key once every queue is
  empty and every bucket full again (the DESIGN promise: idle numbers cost
  nothing).

The clock is virtual; only the throughput figure reads the wall clock.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
import tracemalloc

from smsrouter.router.scheduler import SenderScheduler

LONG_CODE = 0.25
PERIOD = 1 / LONG_CODE  # seconds between two tokens of one key
BATCH = 1000  # keys due per pop_ready() call in the steady state


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _keys(n: int) -> list[str]:
    return [f"+1{i:010d}" for i in range(n)]


def releases_per_second(n: int, releases: int) -> float:
    clock = FakeClock()
    sched: SenderScheduler[str] = SenderScheduler(clock, lambda _key: LONG_CODE)
    keys = _keys(n)
    # Activate the keys evenly over one token period, spending each key's
    # first token as it goes, so later token times are spread out too.
    for i, key in enumerate(keys):
        clock.now = PERIOD * i / n
        sched.push(key, key)
        sched.push(key, key)
        if i % BATCH == BATCH - 1:
            for item, _ in sched.pop_ready():
                sched.push(item, item)
    for item, _ in sched.pop_ready():
        sched.push(item, item)

    step = PERIOD * BATCH / n
    start_at = clock.now
    released = 0
    tick = 0
    gc.collect()
    started = time.perf_counter()
    while released < releases:
        tick += 1
        clock.now = start_at + tick * step
        out = sched.pop_ready()
        for item, _ in out:
            sched.push(item, item)
        released += len(out)
    elapsed = time.perf_counter() - started
    assert sched.active_keys == n
    return released / elapsed


def memory_per_key(n: int) -> tuple[float, float, float]:
    clock = FakeClock()
    sched: SenderScheduler[None] = SenderScheduler(clock, lambda _key: LONG_CODE)
    keys = _keys(n)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for key in keys:
            sched.push(key, None)
        one = tracemalloc.get_traced_memory()[0] - base
        for key in keys:
            sched.push(key, None)
        two = tracemalloc.get_traced_memory()[0] - base
        # Two parts per key: the first leaves now, the second once the next
        # token comes (t=4); the buckets are full again at t=8.
        sched.pop_ready()
        clock.now = PERIOD
        sched.pop_ready()
        clock.now = 2 * PERIOD
        sched.pop_ready()
        assert sched.active_keys == 0 and sched.queued_parts == 0
        gc.collect()
        forgotten = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return one / n, two / n, forgotten / n


def memory_per_configured_number(n: int) -> float:
    """Bytes per sender number known to the router but idle: its entries in
    the rate table and in the owner map (keys included), no scheduler state."""
    from smsrouter.router.senders import NumberType, RateDefaults, SenderRates, canonical_sender

    numbers = [f"+1415{i:07d}" for i in range(n)]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        rates = SenderRates(RateDefaults(), {}, {x: (NumberType.LONG_CODE, None) for x in numbers})
        owners = {canonical_sender(x): "account" for x in numbers}
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    del rates, owners
    return used / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    rates: dict[str, int] = {}
    active: dict[str, int] = {}
    active_two: dict[str, int] = {}
    forgotten: dict[str, float] = {}
    for n in sizes:
        rates[str(n)] = round(releases_per_second(n, releases=max(n, 300_000)))
        one, two, left = memory_per_key(n)
        active[str(n)] = round(one)
        active_two[str(n)] = round(two)
        forgotten[str(n)] = round(left, 2)
    result = {
        "bench": "scheduler",
        "python": platform.python_version(),
        "releases_per_s": rates,
        "bytes_per_active_key": active,
        "bytes_per_active_key_two_messages": active_two,
        "bytes_per_forgotten_key": forgotten,
        "bytes_per_configured_idle_number": round(memory_per_configured_number(max(sizes))),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
