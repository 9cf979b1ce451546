"""A counting semaphore for paths taken once per message: a bind's window of
outstanding requests (SMPP 3.4 §2.7), the notification dispatcher's
concurrency.

asyncio.Semaphore keeps the same contract, but on Python 3.11 its acquire()
asks locked(), which builds a generator over the waiters on every call, free
slot or not: 2-3 % of the router's time under SMPP load. Here a free slot
costs a compare.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """`count` slots, taken in the order asked for (FIFO). A slot given back
    goes straight to the first waiter still waiting; a waiter cancelled after
    it was handed one passes it on, so none is lost."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, count: int) -> None:
        if count < 0:
            raise ValueError("the count of slots cannot be negative")
        self._free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        """Slots that can be taken now without waiting."""
        return self._free

    def locked(self) -> bool:
        """True if acquire() would wait."""
        return self._free == 0

    async def acquire(self) -> None:
        if self._free > 0:
            # No one waits while a slot is free: release() hands a slot to a
            # waiter instead of counting it.
            self._free -= 1
            return
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(handed)
        try:
            await handed
        except asyncio.CancelledError:
            if not handed.cancelled():
                self.release()  # it was ours already: to the next in line
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # one cancelled while waiting is skipped
                waiter.set_result(None)
                return
        self._free += 1
