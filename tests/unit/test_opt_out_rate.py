"""router/opt_out_rate.py: the rolling window, the sketch, the verdict, in
virtual time."""

from __future__ import annotations

import pytest

from smsrouter.router.opt_out_rate import (
    BUCKET_SECONDS,
    BUCKETS,
    FLAGGED,
    MAX_OPT_OUTS_PER_SENDER,
    REGISTERS,
    STANDARD_ERROR,
    SUSPENDED,
    OptOutRates,
    estimate,
    register_of,
    subscriber_hash,
    verdict_of,
)

SENDER = "+14155550101"
OTHER = "+14155550102"
# The start of a bucket, so that tests know how far the window reaches.
T0 = 1_000 * BUCKET_SECONDS


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def subscribers(n: int, start: int = 14155560000) -> list[str]:
    return [f"+{start + i}" for i in range(n)]


def rates_with(clock: Clock, sender: str, sent: int, opted_out: int) -> OptOutRates:
    rates = OptOutRates(clock)
    numbers = subscribers(sent)
    for s in numbers:
        rates.sent(sender, s)
    for s in numbers[:opted_out]:
        rates.opted_out(sender, s)
    return rates


def test_hash_is_stable_and_spelling_free() -> None:
    # Fixed values: issue 19 merges sketches made by other processes.
    assert subscriber_hash("+14155550123") == subscriber_hash("14155550123")
    assert subscriber_hash(14155550123) == subscriber_hash("+14155550123")
    assert subscriber_hash(0) == 0xE220A8397B1DCDAF  # SplitMix64's first output for seed 0
    assert subscriber_hash(1) != subscriber_hash(2)


def test_hash_spreads_consecutive_numbers_over_registers() -> None:
    used = {register_of(subscriber_hash(14155550000 + i))[0] for i in range(REGISTERS * 4)}
    # 4m balls into m bins leave about e^-4 ≈ 1.8 % empty.
    assert len(used) > REGISTERS * 0.95


def test_rank_counts_leading_zeros() -> None:
    index, rank = register_of((5 << 54) | (1 << 53))
    assert (index, rank) == (5, 1)
    assert register_of(7 << 54) == (7, 55)  # all rank bits zero
    assert register_of(1) == (0, 54)


def test_empty_sketch_estimates_zero() -> None:
    assert estimate(bytes(REGISTERS)) == 0.0
    assert OptOutRates(Clock()).rate(SENDER) == (0, 0, 0.0)


@pytest.mark.parametrize("n", [1, 5, 10, 50, 100])
def test_small_counts_are_near_exact(n: int) -> None:
    rates = rates_with(Clock(), SENDER, n, 0)
    assert abs(rates.recipients(SENDER) - n) <= max(1, n * 0.05)


@pytest.mark.parametrize("n", [1_000, 3_000, 10_000, 50_000])
def test_estimate_within_three_standard_errors(n: int) -> None:
    rates = rates_with(Clock(), SENDER, n, 0)
    assert abs(rates.recipients(SENDER) / n - 1) < 3 * STANDARD_ERROR


def test_error_over_many_sets_of_ten_thousand_matches_the_stated_error() -> None:
    errors = []
    for k in range(20):
        rates = OptOutRates(Clock())
        for s in subscribers(10_000, start=33_600_000_000 + k * 1_000_000):
            rates.sent(SENDER, s)
        errors.append(rates.recipients(SENDER) / 10_000 - 1)
    rms = (sum(e * e for e in errors) / len(errors)) ** 0.5
    assert rms < 1.5 * STANDARD_ERROR
    assert abs(sum(errors) / len(errors)) < STANDARD_ERROR  # no bias to speak of


def test_repeats_count_once() -> None:
    rates = OptOutRates(Clock())
    for _ in range(5):
        for s in subscribers(200):
            rates.sent(SENDER, s)
    assert abs(rates.recipients(SENDER) - 200) <= 10


def test_senders_are_counted_apart() -> None:
    rates = OptOutRates(Clock())
    for s in subscribers(100):
        rates.sent(SENDER, s)
    rates.opted_out(SENDER, "+14155560000")
    assert rates.recipients(OTHER) == 0
    assert rates.opt_outs(OTHER) == 0
    assert rates.opt_outs(SENDER) == 1


def test_opt_outs_are_distinct_subscribers() -> None:
    rates = OptOutRates(Clock())
    for _ in range(3):
        rates.opted_out(SENDER, "+14155560000")
    rates.opted_out(SENDER, "+14155560001")
    assert rates.opt_outs(SENDER) == 2


def test_window_keeps_six_buckets_then_rolls() -> None:
    clock = Clock()
    rates = OptOutRates(clock)
    first, later = subscribers(100), subscribers(100, start=14155570000)
    for s in first:
        rates.sent(SENDER, s)
    rates.opted_out(SENDER, first[0])
    clock.now += BUCKET_SECONDS
    for s in later:
        rates.sent(SENDER, s)
    rates.opted_out(SENDER, later[0])
    both = rates.recipients(SENDER)
    assert abs(both - 200) <= 10
    assert rates.opt_outs(SENDER) == 2
    # The first bucket is in the window until its sixth successor begins.
    clock.now = T0 + BUCKETS * BUCKET_SECONDS - 1
    assert rates.recipients(SENDER) == both
    assert rates.opt_outs(SENDER) == 2
    clock.now = T0 + BUCKETS * BUCKET_SECONDS
    assert abs(rates.recipients(SENDER) - 100) <= 5
    assert rates.opt_outs(SENDER) == 1
    clock.now += BUCKET_SECONDS
    assert rates.rate(SENDER) == (0, 0, 0.0)


def test_a_reused_bucket_starts_empty() -> None:
    clock = Clock()
    rates = OptOutRates(clock)
    for s in subscribers(100):
        rates.sent(SENDER, s)
    clock.now += BUCKETS * BUCKET_SECONDS  # same slot, next day
    rates.sent(SENDER, "+14155590000")
    assert rates.recipients(SENDER) == 1


def test_repeated_stop_moves_to_its_latest_time() -> None:
    clock = Clock()
    rates = OptOutRates(clock)
    rates.opted_out(SENDER, "+14155560000")
    rates.opted_out(SENDER, "+14155560001")
    clock.now += 3 * BUCKET_SECONDS
    rates.opted_out(SENDER, "+14155560000")  # again, later
    clock.now = T0 + BUCKETS * BUCKET_SECONDS
    assert rates.opt_outs(SENDER) == 1


def test_idle_senders_are_forgotten_when_a_bucket_begins() -> None:
    clock = Clock()
    rates = OptOutRates(clock)
    rates.sent(SENDER, "+14155560000")
    rates.opted_out(OTHER, "+14155560000")
    assert len(rates) == 2
    clock.now += BUCKETS * BUCKET_SECONDS
    rates.sent("+14155550199", "+14155560000")
    assert len(rates) == 1


def test_reset_starts_the_window_afresh() -> None:
    rates = rates_with(Clock(), SENDER, 100, 20)
    assert rates.verdict(SENDER, 10, 0.05, 0.1) == SUSPENDED
    rates.reset(SENDER)
    assert rates.rate(SENDER) == (0, 0, 0.0)
    assert rates.verdict(SENDER, 10, 0.05, 0.1) is None


def test_opt_outs_past_the_bound_are_still_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    from smsrouter.router import opt_out_rate

    monkeypatch.setattr(opt_out_rate, "MAX_OPT_OUTS_PER_SENDER", 10)
    clock = Clock()
    rates = OptOutRates(clock)
    for s in subscribers(15):
        rates.opted_out(SENDER, s)
    assert rates.opt_outs(SENDER) == 15
    assert len(rates._senders[SENDER].opt_outs) == 10
    clock.now += BUCKETS * BUCKET_SECONDS  # the folded ones expire with their bucket
    assert rates.opt_outs(SENDER) == 0
    assert MAX_OPT_OUTS_PER_SENDER == 100_000


def test_registers_merge_buckets() -> None:
    clock = Clock()
    rates = OptOutRates(clock)
    for s in subscribers(50):
        rates.sent(SENDER, s)
    one = rates.registers(SENDER)
    clock.now += BUCKET_SECONDS
    for s in subscribers(50):
        rates.sent(SENDER, s)  # the same subscribers in the next bucket
    assert rates.registers(SENDER) == one


@pytest.mark.parametrize(
    ("recipients", "rate", "expected"),
    [
        (9, 0.5, None),  # below the minimum sample
        (10, 0.049, None),
        (10, 0.05, FLAGGED),
        (10, 0.099, FLAGGED),
        (10, 0.10, SUSPENDED),
        (1000, 0.9, SUSPENDED),
    ],
)
def test_verdict_thresholds(recipients: int, rate: float, expected: str | None) -> None:
    assert verdict_of(recipients, rate, 10, 0.05, 0.10) == expected


def test_verdict_from_counts() -> None:
    clock = Clock()
    assert rates_with(clock, SENDER, 100, 4).verdict(SENDER, 100, 0.05, 0.1) is None
    assert rates_with(clock, SENDER, 100, 6).verdict(SENDER, 100, 0.05, 0.1) == FLAGGED
    assert rates_with(clock, SENDER, 100, 12).verdict(SENDER, 100, 0.05, 0.1) == SUSPENDED
    # Too small a sample: no verdict, however high the rate.
    assert rates_with(clock, SENDER, 20, 20).verdict(SENDER, 100, 0.05, 0.1) is None
