"""The counting semaphore of a bind's window and the dispatcher (router/slots.py)."""

from __future__ import annotations

import asyncio

import pytest

from smsrouter.router.slots import Slots


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_free_slots_are_taken_without_waiting_and_counted_back() -> None:
    slots = Slots(2)
    await slots.acquire()
    assert (slots.free, slots.locked()) == (1, False)
    await slots.acquire()
    assert (slots.free, slots.locked()) == (0, True)
    slots.release()
    slots.release()
    assert slots.free == 2


async def test_waiters_get_slots_in_the_order_they_asked() -> None:
    slots = Slots(1)
    await slots.acquire()
    order: list[int] = []

    async def take(n: int) -> None:
        await slots.acquire()
        order.append(n)

    waiters = [asyncio.create_task(take(n)) for n in range(4)]
    await _settle()
    assert order == []
    for expected in range(4):
        slots.release()
        await _settle()
        assert order == list(range(expected + 1))
        # The slot went to the waiter, not to the count.
        assert slots.free == 0
    await asyncio.gather(*waiters)


async def test_a_waiter_cancelled_while_waiting_takes_no_slot() -> None:
    slots = Slots(1)
    await slots.acquire()
    gone = asyncio.create_task(slots.acquire())
    kept = asyncio.create_task(slots.acquire())
    await _settle()
    gone.cancel()
    await _settle()
    assert gone.cancelled()
    slots.release()
    await _settle()
    assert kept.done() and not kept.cancelled()
    slots.release()
    assert slots.free == 1


async def test_a_waiter_cancelled_after_it_was_handed_a_slot_passes_it_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await _settle()
    slots.release()  # handed to `first`, which has not run yet
    first.cancel()
    await _settle()
    assert first.cancelled()
    assert second.done() and not second.cancelled()
    assert slots.free == 0
    slots.release()
    assert slots.free == 1


async def test_a_slot_given_back_with_no_one_waiting_is_free_again() -> None:
    slots = Slots(1)
    await slots.acquire()
    cancelled = asyncio.create_task(slots.acquire())
    await _settle()
    cancelled.cancel()
    await _settle()
    slots.release()  # the only waiter is gone: the slot is counted
    assert (slots.free, slots.locked()) == (1, False)


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Slots(-1)
