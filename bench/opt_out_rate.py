"""The opt-out rate's cost (CONTRACT §6 "Opt-out rate"; issue 18 asks that
its denominator cost no query per message, measured).

    python -m bench.opt_out_rate [--senders 10000] [--messages 1000000]

Prints one JSON line:

* ``ns_per_message``: wall time of `OptOutRates.sent` (what every committed
  message costs), over `--messages` messages spread over the senders (a
  share in 1/k for sender k, as a few big senders and a long tail do), to
  subscribers drawn from 10,000,000 numbers.
* ``bytes_per_sender_one_bucket`` / ``bytes_per_sender_full_window``:
  memory per active sender measured with tracemalloc, with one 4-hour
  bucket written and with all six (a sender busy the whole 24 h).
* ``us_per_verdict``: wall time of `verdict` for a sender with six buckets
  (what each STOP costs: six sketches merged, one estimate).
* ``error_at_10000`` / ``standard_error``: the estimate's relative error for
  a sender with 10,000 distinct subscribers, and the sketch's stated error.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import random
import sys
import time
import tracemalloc

from smsrouter.router.opt_out_rate import BUCKET_SECONDS, BUCKETS, STANDARD_ERROR, OptOutRates


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * BUCKET_SECONDS

    def __call__(self) -> float:
        return self.now


def _senders(n: int) -> list[str]:
    return [f"+1415{5550000 + k:07d}" for k in range(n)]


def _skewed(rng: random.Random, senders: list[str], count: int) -> list[str]:
    weights = [1 / (k + 1) for k in range(len(senders))]
    return rng.choices(senders, weights=weights, k=count)


def _memory(senders: list[str], buckets: int) -> float:
    clock = Clock()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    rates = OptOutRates(clock)
    for _ in range(buckets):
        for s in senders:
            rates.sent(s, "+14155550123")
        clock.now += BUCKET_SECONDS
    clock.now -= BUCKET_SECONDS
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / len(senders)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.opt_out_rate")
    parser.add_argument("--senders", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    rng = random.Random(18)
    senders = _senders(args.senders)

    froms = _skewed(rng, senders, args.messages)
    tos = [f"+1{rng.randrange(2_000_000_000, 9_999_999_999)}" for _ in range(args.messages)]
    # A C-level clock, as time.time is in the router: a Python __call__
    # would cost more than what is measured.
    rates = OptOutRates(itertools.repeat(float(1_000 * BUCKET_SECONDS)).__next__)
    sent = rates.sent
    gc.collect()
    started = time.perf_counter_ns()
    for sender, to in zip(froms, tos, strict=True):
        sent(sender, to)
    ns_per_message = (time.perf_counter_ns() - started) / args.messages

    clock = Clock()
    busy = OptOutRates(clock)
    for b in range(BUCKETS):
        clock.now = 1_000 * BUCKET_SECONDS + b * BUCKET_SECONDS
        for i in range(2_000):
            busy.sent(senders[0], f"+1{4_155_560_000 + b * 2_000 + i}")
    for i in range(10):
        busy.opted_out(senders[0], f"+1{4_155_560_000 + i}")
    rounds = 200
    started = time.perf_counter_ns()
    for _ in range(rounds):
        busy.verdict(senders[0], 100, 0.05, 0.10)
    us_per_verdict = (time.perf_counter_ns() - started) / rounds / 1000

    exact = OptOutRates(Clock())
    for _ in range(10_000):
        exact.sent(senders[0], f"+1{rng.randrange(2_000_000_000, 9_999_999_999)}")
    error = exact.recipients(senders[0]) / 10_000 - 1

    print(
        json.dumps(
            {
                "bench": "opt_out_rate",
                "python": platform.python_version(),
                "compiled": not sys.modules[OptOutRates.__module__].__file__.endswith(".py"),  # type: ignore[union-attr]
                "senders": args.senders,
                "messages": args.messages,
                "ns_per_message": round(ns_per_message, 1),
                "bytes_per_sender_one_bucket": round(_memory(senders, 1)),
                "bytes_per_sender_full_window": round(_memory(senders, BUCKETS)),
                "us_per_verdict": round(us_per_verdict, 1),
                "error_at_10000": round(error, 4),
                "standard_error": round(STANDARD_ERROR, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
