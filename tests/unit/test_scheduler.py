"""SenderScheduler in virtual time: exact token-bucket releases per sender queue."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrouter.router.scheduler import SenderQueueFull, SenderScheduler

LONG_CODE = 0.25
TOLL_FREE = 40.0


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(
    rates: dict[str, float] | float, *, max_queued_parts: int = 100_000
) -> tuple[FakeClock, SenderScheduler[str]]:
    clock = FakeClock()
    rate_of: Callable[[str], float]
    if isinstance(rates, dict):
        table = rates
        rate_of = table.__getitem__
    else:
        fixed = rates
        rate_of = lambda _key: fixed  # noqa: E731
    return clock, SenderScheduler(clock, rate_of, max_queued_parts=max_queued_parts)


def items(released: list[tuple[str, int]]) -> list[str]:
    return [item for item, _ in released]


# -- exact release times ------------------------------------------------------


def test_long_code_releases_one_part_every_four_seconds() -> None:
    clock, sched = make(LONG_CODE)
    for name in ("a", "b", "c"):
        sched.push("+14155550101", name)

    assert sched.pop_ready() == [("a", 0)]
    assert sched.next_release_at() == 4.0
    clock.now = 3.999
    assert sched.pop_ready() == []
    clock.now = 4.0
    assert sched.pop_ready() == [("b", 0)]
    assert sched.next_release_at() == 8.0
    clock.now = 8.0
    assert sched.pop_ready() == [("c", 0)]
    assert sched.next_release_at() is None
    assert sched.queued_parts == 0


def test_toll_free_bursts_its_capacity_then_one_part_every_25_ms() -> None:
    clock, sched = make(TOLL_FREE)
    for i in range(100):
        sched.push("+18005550100", f"m{i}")

    assert items(sched.pop_ready()) == [f"m{i}" for i in range(40)]
    assert sched.next_release_at() == 0.025
    clock.now = 0.0249
    assert sched.pop_ready() == []
    for k in range(1, 61):
        clock.now = k / 40
        assert items(sched.pop_ready()) == [f"m{39 + k}"], k
    assert sched.queued_parts == 0


def test_late_poll_releases_the_tokens_that_accrued_meanwhile() -> None:
    clock, sched = make(TOLL_FREE)
    for i in range(100):
        sched.push("tf", f"m{i}")
    sched.pop_ready()
    # 0.1 s later 4 tokens have accrued (one per 25 ms), whoever asks when.
    clock.now = 0.1
    assert len(sched.pop_ready()) == 4


@pytest.mark.parametrize(("rate", "burst"), [(LONG_CODE, 1), (1.0, 1), (2.5, 2), (TOLL_FREE, 40)])
def test_capacity_is_never_exceeded_after_an_idle_period(rate: float, burst: int) -> None:
    clock, sched = make(rate)
    for i in range(200):
        sched.push("k", f"a{i}")
    assert len(sched.pop_ready()) == burst
    sched.remove("k", lambda _item: True)
    # Idle far longer than a refill: the bucket is full, not overfull.
    clock.now = 1000.0
    for i in range(200):
        sched.push("k", f"b{i}")
    assert len(sched.pop_ready()) == burst
    clock.now = 1000.0 + 1e-6
    assert sched.pop_ready() == []


def test_partly_refilled_bucket_gives_only_what_refilled() -> None:
    clock, sched = make(TOLL_FREE)
    for i in range(40):
        sched.push("tf", f"a{i}")
    assert len(sched.pop_ready()) == 40
    clock.now = 0.5
    for i in range(40):
        sched.push("tf", f"b{i}")
    assert len(sched.pop_ready()) == 20


def test_cooling_key_does_not_get_a_fresh_bucket() -> None:
    clock, sched = make(LONG_CODE)
    sched.push("lc", "first")
    assert items(sched.pop_ready()) == ["first"]
    # The queue is empty, but the bucket is not full again until t=4: a key
    # forgotten now would release "second" at once, 2 parts in 0.1 s.
    clock.now = 0.1
    sched.push("lc", "second")
    assert sched.pop_ready() == []
    assert sched.next_release_at() == 4.0
    clock.now = 4.0
    assert items(sched.pop_ready()) == ["second"]


def test_cooling_key_stays_remembered_until_full_then_is_forgotten() -> None:
    clock, sched = make(LONG_CODE)
    for i in range(1000):
        sched.push(f"+1415555{i:04d}", "m")
    assert len(sched.pop_ready()) == 1000
    assert sched.active_keys == 1000
    clock.now = 3.9
    sched.pop_ready()
    assert sched.active_keys == 1000
    clock.now = 4.0
    sched.pop_ready()
    assert sched.active_keys == 0
    assert sched.depth("+14155550000") == 0


def test_key_emptied_twice_is_kept_until_its_later_full_time() -> None:
    clock, sched = make(TOLL_FREE)
    sched.push("tf", "a")
    sched.pop_ready()  # full again at 0.025
    clock.now = 0.01
    sched.push("tf", "b")
    sched.pop_ready()  # now full again only at 0.05
    clock.now = 0.03
    # At 0.03 the bucket holds 40 - 0.8 tokens: 39 whole ones, not 40.
    for i in range(50):
        sched.push("tf", f"c{i}")
    assert len(sched.pop_ready()) == 39


def test_push_also_sweeps_idle_keys() -> None:
    clock, sched = make({"a": TOLL_FREE, "b": TOLL_FREE})
    sched.push("a", "x")
    sched.pop_ready()
    assert sched.active_keys == 1
    clock.now = 1.0
    sched.push("b", "y")
    assert sched.active_keys == 1
    assert sched.depth("b") == 1


# -- order ----------------------------------------------------------------------


def test_multipart_message_releases_part_by_part_in_order() -> None:
    clock, sched = make(LONG_CODE)
    sched.push("lc", "long", parts=3)
    sched.push("lc", "short")
    assert sched.depth("lc") == 4
    assert sched.queued_parts == 4

    released = []
    for t in (0.0, 4.0, 8.0, 12.0):
        clock.now = t
        released.append((t, sched.pop_ready()))
    assert released == [
        (0.0, [("long", 0)]),
        (4.0, [("long", 1)]),
        (8.0, [("long", 2)]),
        (12.0, [("short", 0)]),
    ]
    assert sched.depth("lc") == 0


def test_multipart_message_on_toll_free_spends_one_token_per_part() -> None:
    clock, sched = make(TOLL_FREE)
    sched.push("tf", "m", parts=50)
    assert sched.pop_ready() == [("m", i) for i in range(40)]
    clock.now = 0.05
    assert sched.pop_ready() == [("m", 40), ("m", 41)]
    assert sched.depth("tf") == 8


def test_fifo_per_key_across_many_keys() -> None:
    clock, sched = make(1.0)
    keys = [f"k{i:02d}" for i in range(50)]
    for round_ in range(3):
        for key in keys:
            sched.push(key, f"{key}-{round_}")

    for round_ in range(3):
        clock.now = float(round_)
        assert items(sched.pop_ready()) == [f"{key}-{round_}" for key in keys]
    assert sched.queued_parts == 0


def test_keys_release_in_order_of_their_next_token_time() -> None:
    clock, sched = make({"slow": LONG_CODE, "fast": 1.0})
    for i in range(3):
        sched.push("slow", f"s{i}")
        sched.push("fast", f"f{i}")
    assert items(sched.pop_ready()) == ["s0", "f0"]
    # slow's next token came at t=4, fast's at t=1: fast goes first.
    clock.now = 10.0
    assert items(sched.pop_ready()) == ["f1", "s1"]


def test_burst_capable_keys_take_turns() -> None:
    _clock, sched = make(TOLL_FREE)
    for i in range(40):
        sched.push("a", f"a{i}")
        sched.push("b", f"b{i}")
    assert items(sched.pop_ready(limit=4)) == ["a0", "b0", "a1", "b1"]


def test_limit_caps_one_call_and_leaves_the_rest_ready() -> None:
    _clock, sched = make(TOLL_FREE)
    for i in range(10):
        sched.push("tf", f"m{i}")
    assert items(sched.pop_ready(limit=3)) == ["m0", "m1", "m2"]
    assert sched.next_release_at() == 0.0
    assert items(sched.pop_ready(limit=0)) == []
    assert items(sched.pop_ready()) == [f"m{i}" for i in range(3, 10)]


def test_push_front_goes_ahead_of_queued_work() -> None:
    clock, sched = make(LONG_CODE)
    sched.push("lc", "a")
    sched.push("lc", "b")
    assert items(sched.pop_ready()) == ["a"]
    sched.push_front("lc", "a-retry")
    clock.now = 4.0
    assert items(sched.pop_ready()) == ["a-retry"]
    clock.now = 8.0
    assert items(sched.pop_ready()) == ["b"]


def test_push_front_before_the_rest_of_a_partly_sent_message() -> None:
    clock, sched = make(LONG_CODE)
    sched.push("lc", "m", parts=3)
    sched.push("lc", "n")
    assert sched.pop_ready() == [("m", 0)]
    sched.push_front("lc", "m0-retry")
    released = []
    for t in (4.0, 8.0, 12.0, 16.0):
        clock.now = t
        released.extend(sched.pop_ready())
    assert released == [("m0-retry", 0), ("m", 1), ("m", 2), ("n", 0)]


def test_push_front_on_idle_key_respects_its_bucket() -> None:
    clock, sched = make(LONG_CODE)
    sched.push("lc", "a")
    sched.pop_ready()
    clock.now = 1.0
    sched.push_front("lc", "a-retry")
    assert sched.pop_ready() == []
    assert sched.next_release_at() == 4.0


def test_first_part_queues_only_the_remaining_parts_under_their_indexes() -> None:
    clock, sched = make(LONG_CODE)
    # Parts 0 and 1 of a 4-part message went out before a restart.
    sched.push("lc", "m", 2, first_part=2)
    sched.push("lc", "n")
    assert sched.depth("lc") == 3
    released = []
    for t in (0.0, 4.0, 8.0):
        clock.now = t
        released.extend(sched.pop_ready())
    assert released == [("m", 2), ("m", 3), ("n", 0)]


def test_retry_of_a_middle_part_with_push_front() -> None:
    clock, sched = make(LONG_CODE)
    sched.push("lc", "m", 3)
    sched.push("lc", "n")
    assert sched.pop_ready() == [("m", 0)]
    clock.now = 4.0
    assert sched.pop_ready() == [("m", 1)]
    # Part 1 failed temporarily: it goes again, ahead of part 2 (still
    # queued) and of "n".
    sched.push_front("lc", "m", 1, first_part=1)
    released = []
    for t in (8.0, 12.0, 16.0):
        clock.now = t
        released.extend(sched.pop_ready())
    assert released == [("m", 1), ("m", 2), ("n", 0)]


# -- limits -------------------------------------------------------------------


def test_queue_full_refuses_and_queues_nothing() -> None:
    _clock, sched = make(LONG_CODE, max_queued_parts=5)
    sched.push("lc", "a", parts=3)
    sched.push("lc", "b", parts=2)
    with pytest.raises(SenderQueueFull) as excinfo:
        sched.push("lc", "c")
    assert (excinfo.value.key, excinfo.value.queued_parts, excinfo.value.limit) == ("lc", 5, 5)
    assert sched.depth("lc") == 5
    # The limit is per sender: another key still has room.
    sched.push("other", "d", parts=5)
    # A retry was admitted once already: never refused.
    sched.push_front("lc", "retry")
    assert sched.depth("lc") == 6
    assert sched.queued_parts == 11


def test_force_queues_committed_work_beyond_the_limit() -> None:
    _clock, sched = make(LONG_CODE, max_queued_parts=2)
    assert sched.max_queued_parts == 2
    sched.push("lc", "a", 2)
    sched.push("lc", "b", force=True)
    assert sched.depth("lc") == 3
    assert items(sched.pop_ready()) == ["a"]


def test_queue_full_counts_parts_of_the_new_message() -> None:
    _clock, sched = make(LONG_CODE, max_queued_parts=5)
    sched.push("lc", "a", parts=4)
    with pytest.raises(SenderQueueFull):
        sched.push("lc", "b", parts=2)
    with pytest.raises(SenderQueueFull):
        sched.push("new", "c", parts=6)
    assert sched.active_keys == 1


def test_room_frees_up_as_parts_leave() -> None:
    _clock, sched = make(LONG_CODE, max_queued_parts=2)
    sched.push("lc", "a")
    sched.push("lc", "b")
    sched.pop_ready()
    sched.push("lc", "c")
    assert sched.depth("lc") == 2


@pytest.mark.parametrize("parts", [0, -1])
def test_parts_must_be_positive(parts: int) -> None:
    _clock, sched = make(LONG_CODE)
    with pytest.raises(ValueError):
        sched.push("lc", "a", parts=parts)
    with pytest.raises(ValueError):
        sched.push_front("lc", "a", parts=parts)
    with pytest.raises(ValueError):
        sched.push("lc", "a", first_part=-1)
    assert sched.queued_parts == 0


@pytest.mark.parametrize("rate", [-1.0, float("nan"), float("inf")])
def test_bad_rate_is_refused(rate: float) -> None:
    _clock, sched = make(rate)
    with pytest.raises(ValueError):
        sched.push("k", "a")
    assert sched.active_keys == 0


# -- reload and cancel --------------------------------------------------------


def test_set_rates_applies_to_queued_work_from_now() -> None:
    clock, sched = make(LONG_CODE)
    for i in range(5):
        sched.push("lc", f"m{i}")
    assert items(sched.pop_ready()) == ["m0"]
    clock.now = 1.0
    # At t=1 the bucket holds 0.25 token; at 1/s the next whole one is at 1.75.
    sched.set_rates(lambda _key: 1.0)
    assert sched.next_release_at() == 1.75
    assert sched.depth("lc") == 4
    released = []
    for t in (1.75, 2.75, 3.75, 4.75):
        clock.now = t
        released.extend(items(sched.pop_ready()))
    assert released == ["m1", "m2", "m3", "m4"]


def test_set_rates_caps_tokens_to_the_new_capacity() -> None:
    clock, sched = make(TOLL_FREE)
    for i in range(10):
        sched.push("tf", f"m{i}")
    clock.now = 5.0
    sched.set_rates(lambda _key: 1.0)
    assert items(sched.pop_ready()) == ["m0"]
    assert sched.next_release_at() == 6.0


def test_rate_zero_holds_the_queue_until_a_rate_is_set() -> None:
    clock, sched = make(LONG_CODE)
    sched.push("lc", "a")
    sched.push("lc", "b")
    assert items(sched.pop_ready()) == ["a"]
    sched.set_rates(lambda _key: 0.0)
    clock.now = 100.0
    assert sched.pop_ready() == []
    assert sched.next_release_at() is None
    assert sched.queued_parts == 1
    # A bucket refills at its rate, and at 0 that is not at all: the token
    # spent on "a" is still missing when sending resumes.
    sched.set_rates(lambda _key: LONG_CODE)
    assert sched.pop_ready() == []
    assert sched.next_release_at() == 104.0
    clock.now = 104.0
    assert items(sched.pop_ready()) == ["b"]


def test_new_key_with_rate_zero_queues_without_releasing() -> None:
    clock, sched = make({"held": 0.0, "lc": LONG_CODE})
    sched.push("held", "a")
    sched.push("lc", "b")
    assert items(sched.pop_ready()) == ["b"]
    clock.now = 50.0
    assert sched.pop_ready() == []
    assert sched.next_release_at() is None
    assert sched.depth("held") == 1


def test_set_rates_reaches_cooling_keys() -> None:
    clock, sched = make(LONG_CODE)
    sched.push("lc", "a")
    sched.pop_ready()
    sched.set_rates(lambda _key: 0.125)  # full again at t=8 instead of 4
    clock.now = 4.0
    sched.push("lc", "b")
    assert sched.pop_ready() == []
    assert sched.next_release_at() == 8.0
    clock.now = 8.0
    assert items(sched.pop_ready()) == ["b"]


def test_bad_rate_on_reload_leaves_the_scheduler_unchanged() -> None:
    clock, sched = make(LONG_CODE)
    sched.push("lc", "a")
    sched.push("lc", "b")
    sched.pop_ready()
    with pytest.raises(ValueError):
        sched.set_rates(lambda _key: -1.0)
    clock.now = 4.0
    assert items(sched.pop_ready()) == ["b"]


def test_remove_cancels_matching_items_in_queue_order() -> None:
    clock, sched = make(LONG_CODE)
    for i in range(1, 7):
        sched.push("lc", str(i), parts=2 if i == 4 else 1)
    assert sched.remove("lc", lambda item: int(item) % 2 == 0) == ["2", "4", "6"]
    assert sched.depth("lc") == 3
    assert sched.queued_parts == 3
    released = []
    for t in (0.0, 4.0, 8.0, 12.0):
        clock.now = t
        released.extend(items(sched.pop_ready()))
    assert released == ["1", "3", "5"]


def test_remove_everything_leaves_a_cooling_key() -> None:
    clock, sched = make(LONG_CODE)
    sched.push("lc", "a")
    sched.push("lc", "b")
    sched.pop_ready()
    assert sched.remove("lc", lambda _item: True) == ["b"]
    assert sched.next_release_at() is None
    assert sched.queued_parts == 0
    assert sched.active_keys == 1
    clock.now = 4.0
    sched.pop_ready()
    assert sched.active_keys == 0


def test_remove_a_partly_sent_message_drops_its_remaining_parts() -> None:
    clock, sched = make(LONG_CODE)
    sched.push("lc", "m", parts=3)
    sched.push("lc", "n")
    sched.pop_ready()
    assert sched.remove("lc", lambda item: item == "m") == ["m"]
    assert sched.depth("lc") == 1
    clock.now = 4.0
    assert sched.pop_ready() == [("n", 0)]


def test_remove_unknown_key_or_no_match() -> None:
    _clock, sched = make(LONG_CODE)
    assert sched.remove("nobody", lambda _item: True) == []
    sched.push("lc", "a")
    assert sched.remove("lc", lambda _item: False) == []
    assert sched.depth("lc") == 1


# -- long runs ----------------------------------------------------------------


def run_saturated(rate: float, horizon: float, poll: tuple[int, int] | None) -> int:
    """Parts a permanently backlogged key emits in [0, horizon].

    ``poll`` = (num, den) polls every num/den seconds, at step * num / den so
    that the poll times hit the horizon exactly; None polls at each
    next_release_at().
    """
    clock, sched = make(rate, max_queued_parts=10**7)
    total = int(rate * horizon + max(1.0, rate)) + 10
    for i in range(total):
        sched.push("k", str(i))
    emitted = 0
    step = 0
    while True:
        if poll is None:
            at = sched.next_release_at()
            assert at is not None
        else:
            at = step * poll[0] / poll[1]
            step += 1
        if at > horizon:
            return emitted
        clock.now = at
        emitted += len(sched.pop_ready())


# Polls well under 1 s apart: a bucket holds only 1 s of tokens, so a caller
# that sleeps about that long instead of waking at next_release_at() lets
# tokens overflow (a 2.5/s key polled every 1 s sends 2 parts a second).
@pytest.mark.parametrize("poll", [None, (1, 10), (1, 2)])
@pytest.mark.parametrize("rate", [LONG_CODE, 1.0, 2.5, TOLL_FREE, 100.0])
def test_saturated_key_emits_rate_times_60_s(rate: float, poll: tuple[int, int] | None) -> None:
    emitted = run_saturated(rate, 60.0, poll)
    capacity = max(1.0, rate)
    assert emitted <= rate * 60 + capacity
    assert emitted == pytest.approx(rate * 60 + capacity, rel=0.01)


def test_no_drift_over_an_hour_at_40_per_second() -> None:
    # 1/40 is not a binary fraction: summing it 144,000 times would drift.
    assert run_saturated(TOLL_FREE, 3600.0, (1, 1)) == 40 + 40 * 3600


# -- properties ---------------------------------------------------------------

RATES = {"lc": LONG_CODE, "one": 1.0, "frac": 2.5, "tf": TOLL_FREE}

ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from(sorted(RATES)), st.integers(1, 4)),
        st.tuples(st.just("advance"), st.floats(0.0, 6.0), st.just(0)),
        st.tuples(st.just("to_next"), st.just(""), st.just(0)),
        st.tuples(st.just("pop"), st.just(""), st.integers(0, 5)),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_every_window_is_within_rate_and_order_is_fifo(
    script: list[tuple[str, object, int]],
) -> None:
    clock, sched = make(dict(RATES))
    counter = 0
    pushed: dict[str, list[tuple[str, int]]] = defaultdict(list)
    emitted: dict[str, list[tuple[float, str, int]]] = defaultdict(list)

    def pop(limit: int | None) -> None:
        for item, part in sched.pop_ready(limit):
            key = item.split(":")[0]
            emitted[key].append((clock.now, item, part))

    for op, arg, n in script:
        if op == "push":
            counter += 1
            key = str(arg)
            sched.push(key, f"{key}:{counter}", parts=n)
            pushed[key].append((f"{key}:{counter}", n))
        elif op == "advance":
            clock.now += float(str(arg))
            pop(None)
        elif op == "to_next":
            at = sched.next_release_at()
            if at is not None:
                clock.now = max(clock.now, at)
            pop(None)
        else:
            pop(n)
    # Drain: everything queued comes out eventually, in order.
    while (at := sched.next_release_at()) is not None:
        clock.now = max(clock.now, at)
        pop(None)
    assert sched.queued_parts == 0

    for key, rate in RATES.items():
        times = [t for t, _, _ in emitted[key]]
        expected = [(item, part) for item, parts in pushed[key] for part in range(parts)]
        assert [(item, part) for _, item, part in emitted[key]] == expected
        capacity = max(1.0, rate)
        for i in range(len(times)):
            for j in range(i, len(times)):
                assert j - i + 1 <= rate * (times[j] - times[i]) + capacity + 1e-9


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(RATES)), st.floats(0.0, 3.0)), max_size=60))
def test_released_parts_never_come_early(script: list[tuple[str, float]]) -> None:
    # next_release_at() is exact: nothing is ready before it, something at it.
    clock, sched = make(dict(RATES))
    for key, gap in script:
        sched.push(key, key)
        clock.now += gap
        at = sched.next_release_at()
        assert at is not None
        if at > clock.now:
            clock.now = max(clock.now, at - 1e-6)
            assert sched.pop_ready() == []
            clock.now = at
        assert sched.pop_ready(limit=1) != []


def test_deepest_names_the_keys_holding_the_most_parts_and_leaves_empty_ones_out() -> None:
    clock = FakeClock()
    sched: SenderScheduler[str] = SenderScheduler(clock, lambda key: 1.0)
    for key, parts in (("a", 3), ("b", 5), ("c", 1)):
        sched.push(key, key, parts)
    assert sched.deepest(2) == [("b", 5), ("a", 3)]
    assert sched.deepest(10) == [("b", 5), ("a", 3), ("c", 1)]
    assert sched.deepest(0) == []
    assert sched.pop_ready() == [("a", 0), ("b", 0), ("c", 0)]
    assert "c" in sched.queue_keys(), "c's bucket refills: it is still held"
    assert sched.deepest(10) == [("b", 4), ("a", 2)]
