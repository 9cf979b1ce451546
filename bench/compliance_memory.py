"""RecipientVelocity at 1,000,000 distinct (account, subscriber) pairs
(CONTRACT §6 `max_per_recipient_per_hour`; issue 18 asks for its memory),
and the opt-out list (CONTRACT §6 "Opt-out") at as many opted-out numbers.

    python -m bench.compliance_memory [--subscribers 1000000] [--accounts 20]

Prints one JSON line:

* ``bytes_per_subscriber``: memory the counter holds per (account,
  subscriber) with one message in the window, measured with tracemalloc,
  plus the subscriber's number string, which the counter keeps alive (in
  the router nothing else holds it once the message is sent);
  ``..._without_number`` is the counter's own structures alone.
* ``bytes_per_subscriber_two_messages``: the same once every subscriber got
  a second message (a list of two times instead of one float).
* ``ns_per_take_new`` / ``ns_per_take_second`` / ``ns_per_take_refused``:
  wall time per `take` for a subscriber not yet seen, for its second
  message, and for one refused at the limit (2 here).
* ``opt_out_bytes_per_number``: memory an OptOutList holds per opted-out
  number, loaded as the daemon loads it at start (store/opt_outs.py: each
  account's numbers as integers); ``..._added`` the same list built one
  `add` at a time, as changes arrive; ``opt_out_ns_per_lookup`` the
  look-up every message pays (`opted_out`, half of them listed).

Numbers are realistic E.164 (US, UK, German, Indian and Brazilian mobiles),
spread unevenly over the accounts (account k gets a share in 1/k). The
clock is virtual: every take is a new float, as time.monotonic() gives.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
import tracemalloc

from smsrouter.router.opt_outs import OptOutList, number_key
from smsrouter.router.velocity import RecipientVelocity

LIMIT = 2


class Clock:
    """A clock that moves a microsecond per reading: each reading a new float."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1e-6
        return self.now


def _number(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:  # NANP: NPA-NXX-XXXX
        return (
            f"+1{rng.randint(2, 9)}{rng.randint(0, 99):02d}"
            f"{rng.randint(2, 9)}{rng.randint(0, 99):02d}{rng.randint(0, 9999):04d}"
        )
    if kind == 1:  # UK mobile
        return f"+447{rng.randint(0, 999_999_999):09d}"
    if kind == 2:  # German mobile (015x/016x/017x)
        return f"+49{rng.choice(('151', '160', '170', '176'))}{rng.randint(0, 99_999_999):08d}"
    if kind == 3:  # Indian mobile
        return f"+91{rng.randint(6, 9)}{rng.randint(0, 999_999_999):09d}"
    return f"+55{rng.randint(11, 99)}9{rng.randint(0, 99_999_999):08d}"  # Brazilian mobile


def pairs(n: int, accounts: int, seed: int = 18) -> list[tuple[str, str]]:
    """`n` distinct (account, subscriber) pairs, subscribers distinct too."""
    rng = random.Random(seed)
    names = [f"account-{k}" for k in range(accounts)]
    weights = [1 / (k + 1) for k in range(accounts)]
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    while len(out) < n:
        number = _number(rng)
        if number in seen:
            continue
        seen.add(number)
        out.append((rng.choices(names, weights)[0], number))
    return out


def memory(load: list[tuple[str, str]]) -> tuple[float, float, float]:
    """Bytes per pair: counter only, with the number string, with two messages."""
    velocity = RecipientVelocity(LIMIT, 3600.0, Clock())
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for account, number in load:
            velocity.take(account, number)
        one = tracemalloc.get_traced_memory()[0] - base
        for account, number in load:
            velocity.take(account, number)
        two = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert velocity.subscribers == len(load)
    strings = sum(sys.getsizeof(number) for _, number in load)
    n = len(load)
    return one / n, (one + strings) / n, (two + strings) / n


def timing(load: list[tuple[str, str]]) -> tuple[float, float, float]:
    """Nanoseconds per take: new subscriber, second message, refused."""
    velocity = RecipientVelocity(LIMIT, 3600.0, Clock())
    take = velocity.take
    figures = []
    for _ in range(3):
        gc.collect()
        started = time.perf_counter()
        for account, number in load:
            take(account, number)
        figures.append((time.perf_counter() - started) / len(load) * 1e9)
    assert not take(*load[0])  # the third pass was refused
    return figures[0], figures[1], figures[2]


def opt_out_memory(load: list[tuple[str, str]]) -> tuple[float, float]:
    """Bytes per opted-out number: the list loaded whole, then built by adds."""
    by_account: dict[str, list[int]] = {}
    for account, number in load:
        by_account.setdefault(account, []).append(number_key(number))
    figures = []
    for build in ("load", "add"):
        opt_outs = OptOutList()
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            if build == "load":
                # The keys as the database driver hands them: new ints, which
                # the list then holds alone.
                opt_outs.load_keys({a: [k + 0 for k in keys] for a, keys in by_account.items()})
            else:
                for account, number in load:
                    opt_outs.add(account, number)
            gc.collect()
            figures.append((tracemalloc.get_traced_memory()[0] - base) / len(load))
        finally:
            tracemalloc.stop()
        assert len(opt_outs) == len(load)
    return figures[0], figures[1]


def opt_out_lookup(load: list[tuple[str, str]]) -> float:
    """Nanoseconds per `opted_out`, half the numbers listed."""
    opt_outs = OptOutList()
    for account, number in load[::2]:
        opt_outs.add(account, number)
    asked = [(account, number[1:]) for account, number in load]
    opted_out = opt_outs.opted_out
    started = time.perf_counter()
    listed = sum(opted_out(account, digits) for account, digits in asked)
    seconds = time.perf_counter() - started
    assert listed == len(load[::2])
    return seconds / len(asked) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=20)
    args = parser.parse_args()
    load = pairs(args.subscribers, args.accounts)
    own, with_number, two = memory(load)
    new, second, refused = timing(load)
    opt_out_loaded, opt_out_added = opt_out_memory(load)
    lookup = opt_out_lookup(load)
    print(
        json.dumps(
            {
                "bench": "compliance_memory",
                "python": platform.python_version(),
                "subscribers": args.subscribers,
                "accounts": args.accounts,
                "bytes_per_subscriber": round(with_number, 1),
                "bytes_per_subscriber_without_number": round(own, 1),
                "bytes_per_subscriber_two_messages": round(two, 1),
                "ns_per_take_new": round(new),
                "ns_per_take_second": round(second),
                "ns_per_take_refused": round(refused),
                "opt_out_bytes_per_number": round(opt_out_loaded, 1),
                "opt_out_bytes_per_number_added": round(opt_out_added, 1),
                "opt_out_ns_per_lookup": round(lookup),
            }
        )
    )


if __name__ == "__main__":
    main()
