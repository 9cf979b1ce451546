"""Sender shards and their ownership (router/shards.py, CONTRACT §9), and
what the scheduler does with them: takeover buckets, dropped keys."""

from __future__ import annotations

import math

import pytest

from smsrouter.router.scheduler import SenderScheduler
from smsrouter.router.shards import (
    LEASE_MARGIN,
    SHARDS,
    LeasePlan,
    Ownership,
    fair_share,
    plan_leases,
    shard_of,
    shard_of_key,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_sender_has_one_shard_however_it_is_spelled() -> None:
    assert shard_of("+14155550101") == shard_of("14155550101")
    # Fixed for the life of a database: the same in every process and release.
    assert shard_of("+14155550101") == 492
    assert shard_of("ACME") == 436


def test_every_queue_key_of_a_sender_is_in_its_shard() -> None:
    assert shard_of_key("+14155550101|US") == shard_of("+14155550101")
    assert shard_of_key("+14155550101") == shard_of("14155550101")


def test_senders_spread_over_the_shards() -> None:
    shards = {shard_of(f"+1415555{n:04d}") for n in range(10_000)}
    assert len(shards) > 0.95 * SHARDS


@pytest.mark.parametrize("first", ["20000", "30000", "+14155550100", "+447700900000"])
def test_a_block_of_consecutive_numbers_spreads_over_both_halves(first: str) -> None:
    """Two instances hold half the shards each: a block of short codes or
    long codes must not all land in one half."""
    base = int(first.lstrip("+"))
    plus = "+" if first.startswith("+") else ""
    lower = sum(shard_of(f"{plus}{base + n}") < SHARDS // 2 for n in range(64))
    assert 16 <= lower <= 48


@pytest.mark.parametrize(
    ("live", "share"), [(1, 1024), (2, 512), (3, 342), (0, 1024), (1024, 1), (2000, 1)]
)
def test_the_fair_share_covers_every_shard(live: int, share: int) -> None:
    assert fair_share(live) == share
    assert fair_share(live) * max(live, 1) >= SHARDS


def test_an_instance_alone_claims_every_free_shard() -> None:
    plan = plan_leases([], list(range(SHARDS)), 1)
    assert plan.claim == tuple(range(SHARDS)) and plan.release == ()


def test_an_instance_claims_up_to_its_share_only() -> None:
    plan = plan_leases([0, 1], list(range(SHARDS)), 2)
    assert len(plan.claim) == 510 and 0 not in plan.claim and 1 not in plan.claim
    assert plan.claim == tuple(range(2, 512))


def test_an_instance_above_its_share_hands_back_its_highest_shards() -> None:
    plan = plan_leases(range(SHARDS), [], 2)
    assert plan.claim == () and plan.release == tuple(range(512, SHARDS))


def test_an_instance_at_its_share_does_nothing() -> None:
    assert plan_leases(range(512), list(range(600, 700)), 2) == LeasePlan((), ())


def test_two_instances_settle_on_halves() -> None:
    """Both follow the plan round after round: every shard ends up held by
    exactly one of them, each holding its share."""
    held: dict[str, set[int]] = {"a": set(range(SHARDS)), "b": set()}
    for _ in range(4):
        for name in ("a", "b"):
            taken = held["a"] | held["b"]
            free = [s for s in range(SHARDS) if s not in taken]
            plan = plan_leases(held[name], free, 2)
            held[name] |= set(plan.claim)
            held[name] -= set(plan.release)
    assert len(held["a"]) == len(held["b"]) == 512
    assert held["a"].isdisjoint(held["b"])


def test_an_instance_whose_peer_died_keeps_what_it_holds() -> None:
    # Counted alone again, it holds no surplus: nothing is handed back to
    # no one, and what the dead peer held is claimed as it expires.
    plan = plan_leases(range(512), list(range(512, SHARDS)), 1)
    assert plan.release == () and plan.claim == tuple(range(512, SHARDS))


def test_leases_are_trusted_until_the_margin_before_expiry() -> None:
    clock = Clock()
    own = Ownership(clock)
    assert not own.trusted()
    own.gained(7, 3, -math.inf)
    own.confirmed(clock.now, 5.0)
    assert own.may_send(7) and not own.may_send(8)
    clock.now += 5.0 - LEASE_MARGIN - 0.01
    assert own.may_send(7)
    clock.now += 0.02
    # A process paused past its lease finds on waking that it may not send.
    assert not own.trusted() and not own.may_send(7)


def test_a_shard_being_handed_back_is_not_owned() -> None:
    clock = Clock()
    own = Ownership(clock)
    own.gained(7, 3, -math.inf)
    own.confirmed(clock.now, 5.0)
    own.leaving.add(7)
    assert not own.owns(7) and not own.may_send(7)
    own.lost(7)
    assert 7 not in own.epochs and 7 not in own.leaving


def test_a_fenced_write_stops_sending_until_renewed() -> None:
    clock = Clock()
    own = Ownership(clock)
    own.gained(7, 3, -math.inf)
    own.confirmed(clock.now, 5.0)
    own.distrust()
    assert not own.may_send(7)
    own.confirmed(clock.now, 5.0)
    assert own.may_send(7)


def test_parts_are_recorded_under_the_shards_epoch() -> None:
    own = Ownership(Clock())
    own.gained(7, 3, -math.inf)
    assert own.fence(7) == (7, 3)
    assert Ownership.sole(Clock()).fence(7) == (-1, 0)


def test_the_sole_owner_owns_every_shard_for_ever() -> None:
    clock = Clock()
    own = Ownership.sole(clock)
    clock.now += 1e9
    assert all(own.may_send(s) for s in (0, 511, SHARDS - 1))


def test_a_taken_over_shards_keys_were_empty_when_its_owner_went_quiet() -> None:
    clock = Clock()
    own = Ownership(clock)
    own.gained(shard_of("+14155550101"), 1, 99.0)
    assert own.empty_at("+14155550101|US") == 99.0
    other = next(
        f"+1415555{n:04d}"
        for n in range(200, 300)
        if shard_of(f"+1415555{n:04d}") != shard_of("+14155550101")
    )
    assert own.empty_at(other) == -math.inf  # a shard held all along
    own.forget_quiet(100.0)
    assert own.empty_at("+14155550101") == -math.inf


def test_a_key_taken_over_starts_with_an_empty_bucket() -> None:
    """A long code (1 part per 4 s) whose previous owner went quiet 1 s ago:
    its first part waits until 4 s after that, not a full bucket's burst."""
    clock = Clock()
    quiet = {"+14155550101": clock.now - 1.0}
    sched: SenderScheduler[str] = SenderScheduler(
        clock, lambda key: 0.25, empty_at=lambda key: quiet.get(key, -math.inf)
    )
    sched.push("+14155550101", "m1")
    sched.push("+14155550102", "m2")  # no previous owner: full at start
    assert sched.pop_ready() == [("m2", 0)]
    clock.now += 2.99
    assert sched.pop_ready() == []
    clock.now += 0.02
    assert sched.pop_ready() == [("m1", 0)]


def test_a_toll_free_key_taken_over_refills_from_empty() -> None:
    clock = Clock()
    sched: SenderScheduler[int] = SenderScheduler(
        clock, lambda key: 40.0, empty_at=lambda key: clock.now
    )
    for n in range(40):
        sched.push("+18005550100", n)
    assert sched.pop_ready() == []
    clock.now += 0.5
    # Half a second refills 20 tokens of an empty 40-token bucket.
    assert len(sched.pop_ready()) == 20


def test_dropped_keys_give_their_items_once_and_leave_nothing_queued() -> None:
    clock = Clock()
    sched: SenderScheduler[str] = SenderScheduler(clock, lambda key: 1.0)
    sched.push("a", "m1", 3)
    sched.push("a", "m2")
    sched.push("b", "m3")
    dropped = sched.drop_keys(lambda key: key == "a")
    assert sorted(dropped) == ["m1", "m2"]
    assert sched.queued_parts == 1 and sched.depth("a") == 0
    assert sched.pop_ready() == [("m3", 0)]
    clock.now += 10
    assert sched.pop_ready() == []
