"""Recipient velocity (CONTRACT §6 "Geographic permissions and velocity"):
messages per (account, subscriber) over a sliding hour, in virtual time."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrouter.router.velocity import RecipientVelocity

HOUR = 3600.0
BOB, ANN = "+14155550123", "+447700900123"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def velocity(limit: int, window: float = HOUR) -> tuple[RecipientVelocity, Clock]:
    clock = Clock()
    return RecipientVelocity(limit, window, clock), clock


def test_the_limit_holds_and_a_refusal_counts_nothing() -> None:
    v, _ = velocity(3)
    assert [v.take("a", BOB) for _ in range(6)] == [True] * 3 + [False] * 3
    assert v.subscribers == 1


def test_a_message_counts_for_exactly_one_window() -> None:
    v, clock = velocity(2)
    start = clock.now
    assert v.take("a", BOB) and v.take("a", BOB)
    clock.now = start + HOUR - 1e-6
    assert not v.take("a", BOB)  # both still under an hour old
    clock.now = start + HOUR
    assert v.take("a", BOB)  # an hour old: both have left, one counted now
    assert v.take("a", BOB)
    assert not v.take("a", BOB)


def test_the_window_slides_message_by_message() -> None:
    v, clock = velocity(3)
    t0 = clock.now
    for offset in (0, 1000, 2000):
        clock.now = t0 + offset
        assert v.take("a", BOB)
    clock.now = t0 + 3000
    assert not v.take("a", BOB)
    clock.now = t0 + HOUR  # the message of t0 leaves
    assert v.take("a", BOB)
    clock.now = t0 + HOUR + 1
    assert not v.take("a", BOB)  # 1000, 2000 and 3600 are in
    clock.now = t0 + 1000 + HOUR
    assert v.take("a", BOB)
    clock.now = t0 + 2000 + HOUR
    assert v.take("a", BOB)
    assert not v.take("a", BOB)


def test_a_limit_of_one_keeps_one_time_and_no_list() -> None:
    v, clock = velocity(1)
    t0 = clock.now
    assert v.take("a", BOB) and not v.take("a", BOB)
    clock.now = t0 + HOUR - 1
    assert not v.take("a", BOB)
    clock.now = t0 + HOUR
    assert v.take("a", BOB) and not v.take("a", BOB)


def test_accounts_and_subscribers_are_counted_apart() -> None:
    v, _ = velocity(2)
    assert v.take("a", BOB) and v.take("a", BOB) and not v.take("a", BOB)
    assert v.take("b", BOB) and v.take("b", BOB) and not v.take("b", BOB)
    assert v.take("a", ANN) and v.take("a", ANN) and not v.take("a", ANN)
    assert v.subscribers == 3


def test_a_limit_of_zero_is_off_and_holds_nothing() -> None:
    v, _ = velocity(0)
    assert all(v.take("a", BOB) for _ in range(1000))
    v.give_back("a", BOB)
    assert v.subscribers == 0


def test_a_bad_limit_or_window_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        RecipientVelocity(-1)
    with pytest.raises(ValueError, match="window"):
        RecipientVelocity(5, 0.0)


def test_give_back_undoes_the_latest_take() -> None:
    v, clock = velocity(3)
    t0 = clock.now
    assert v.take("a", BOB)
    v.give_back("a", BOB)
    assert v.subscribers == 0  # a subscriber's only message given back: no entry
    clock.now = t0 + 10
    assert v.take("a", BOB)
    clock.now = t0 + 20
    assert v.take("a", BOB) and v.take("a", BOB) and not v.take("a", BOB)
    v.give_back("a", BOB)  # the one of t0+20 that was counted last
    assert v.take("a", BOB) and not v.take("a", BOB)
    # The first (t0+10) is still counted: it leaves first, the others later.
    clock.now = t0 + 10 + HOUR
    assert v.take("a", BOB) and not v.take("a", BOB)
    # Giving back what was never taken changes nothing.
    v.give_back("b", BOB)
    v.give_back("a", ANN)
    assert not v.take("a", BOB)


def test_give_back_down_to_one_message_then_more() -> None:
    v, _ = velocity(2)
    assert v.take("a", BOB) and v.take("a", BOB)
    v.give_back("a", BOB)
    assert v.take("a", BOB) and not v.take("a", BOB)
    v.give_back("a", BOB)
    v.give_back("a", BOB)
    assert v.subscribers == 0
    assert v.take("a", BOB) and v.take("a", BOB) and not v.take("a", BOB)


def test_counts_are_exact_across_the_swap_of_generations() -> None:
    v, clock = velocity(2)
    t0 = clock.now
    clock.now = t0 + HOUR - 1  # just before the swap is due
    assert v.take("a", BOB)
    clock.now = t0 + HOUR  # this take makes the swap: BOB's entry is the previous'
    assert v.take("a", ANN)
    clock.now = t0 + HOUR + 100
    assert v.take("a", BOB)  # moved over with its time of t0+HOUR-1
    assert not v.take("a", BOB)
    clock.now = t0 + 2 * HOUR  # the second swap: BOB was moved over, so kept ...
    assert v.take("a", BOB)  # ... and of its two times, the one of t0+HOUR-1 has left
    assert not v.take("a", BOB)
    clock.now = t0 + 2 * HOUR + 100  # the one of t0+HOUR+100 leaves
    assert v.take("a", BOB) and not v.take("a", BOB)


def test_give_back_finds_an_entry_the_swap_moved_to_the_previous_generation() -> None:
    v, clock = velocity(1)
    t0 = clock.now
    assert v.take("a", BOB)
    clock.now = t0 + HOUR - 1 + 1  # the swap is due: another take makes it
    assert v.take("a", ANN)  # BOB's message is now in the previous generation
    v.give_back("a", BOB)  # its store failed after all
    assert v.take("a", BOB)


def test_memory_of_subscribers_gone_quiet_is_dropped_after_two_windows() -> None:
    v, clock = velocity(5)
    t0 = clock.now
    for i in range(1000):
        assert v.take("a", f"+1415555{i:04d}")
    assert v.subscribers == 1000
    clock.now = t0 + HOUR  # first swap: they are the previous generation
    assert v.take("b", BOB)
    assert v.subscribers == 1001
    clock.now = t0 + 2 * HOUR  # second swap: the previous generation is dropped
    assert v.take("b", BOB)
    assert v.subscribers == 1  # only BOB, written to in the last window
    assert v.take("a", "+14155550000")  # and the dropped had left the window anyway


def test_refused_messages_do_not_keep_a_subscriber_in_memory() -> None:
    v, clock = velocity(1)
    t0 = clock.now
    clock.now = t0 + HOUR - 10
    assert v.take("a", BOB)
    clock.now = t0 + HOUR  # the swap: BOB's entry is the previous generation's
    assert v.take("b", ANN)
    clock.now = t0 + HOUR + 5
    assert not v.take("a", BOB)  # still in the window, refused, left where it is
    clock.now = t0 + 2 * HOUR  # the next swap drops it: its time has left
    assert v.take("b", ANN)
    assert v.subscribers == 1
    assert v.take("a", BOB)


def test_everything_is_dropped_after_a_quiet_of_over_a_window() -> None:
    v, clock = velocity(1)
    t0 = clock.now
    for i in range(100):
        v.take("a", f"+1415555{i:04d}")
    clock.now = t0 + 2 * HOUR + 1  # no call at all in between
    assert v.take("a", BOB)
    assert v.subscribers == 1
    assert v.take("a", "+14155550000")


def test_a_window_shorter_than_an_hour_works_the_same() -> None:
    v, clock = velocity(2, window=10.0)
    t0 = clock.now
    assert v.take("a", BOB) and v.take("a", BOB) and not v.take("a", BOB)
    clock.now = t0 + 10
    assert v.take("a", BOB)


# -- against a plain model: every message's time kept, counted each time ------


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=4),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=1500.0),  # seconds since the last call
            st.sampled_from(["a", "b"]),
            st.sampled_from([BOB, ANN, "+33612345678"]),
            st.booleans(),  # give the take back
        ),
        max_size=80,
    ),
)
def test_the_counts_match_a_model_that_keeps_every_time(
    limit: int, steps: list[tuple[float, str, str, bool]]
) -> None:
    window = 1000.0
    v, clock = velocity(limit, window)
    model: dict[tuple[str, str], list[float]] = {}
    counted_last: dict[tuple[str, str], float] = {}  # a message given back too
    for gap, account, recipient, undo in steps:
        clock.now += gap
        times = model.setdefault((account, recipient), [])
        in_window = [t for t in times if clock.now - t < window]
        expected = len(in_window) < limit
        assert v.take(account, recipient) is expected
        if expected:
            times.append(clock.now)
            counted_last[account, recipient] = clock.now
            if undo:
                v.give_back(account, recipient)
                times.pop()
    # Nothing is held for a subscriber whose last message counted two
    # windows ago, nor one with nothing counted at all.
    assert v.subscribers <= sum(
        1 for key, last in counted_last.items() if model[key] and clock.now - last < 2 * window
    )


def test_a_random_load_matches_the_model() -> None:
    rng = random.Random(18)
    window = 60.0
    v, clock = velocity(3, window)
    model: dict[tuple[str, str], list[float]] = {}
    for _ in range(20_000):
        clock.now += rng.expovariate(50.0)
        key = (f"acct{rng.randrange(3)}", f"+1415555{rng.randrange(200):04d}")
        times = model.setdefault(key, [])
        expected = sum(1 for t in times if clock.now - t < window) < 3
        assert v.take(*key) is expected
        if expected:
            times.append(clock.now)


def test_wait_is_when_the_oldest_counted_message_leaves_the_window() -> None:
    """The Retry-After of a `recipient_velocity` refusal: the moment the
    oldest of the `limit` messages in the window leaves it."""
    now = [1000.0]
    velocity = RecipientVelocity(2, window=3600.0, clock=lambda: now[0])
    assert velocity.wait("a", "+1") == 0.0
    assert velocity.take("a", "+1")
    now[0] += 100
    assert velocity.take("a", "+1")
    now[0] += 50
    assert not velocity.take("a", "+1")
    assert velocity.wait("a", "+1") == 3600.0 - 150
    assert velocity.wait("b", "+1") == 0.0
    now[0] = 1000.0 + 3600.0
    assert velocity.wait("a", "+1") == 0.0
    assert velocity.take("a", "+1")
