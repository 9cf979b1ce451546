"""Intake: commit accepted messages, then queue them — in that order.

The acknowledgement (HTTP 202, submit_sm_resp) waits for the commit, so an
acknowledged message survives a crash (CONTRACT §3: "202 means durably
stored"); it enters its sender queue only once committed, so a crash
never leaves queued work that the database does not know about.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from router import metrics
from router.engine import DeliveryEngine
from router.messages import Message
from router.scheduler import SenderQueueFull
from router.store import GroupCommit, InsertMessage


class Intake:
    def __init__(self, writer: GroupCommit, engine: DeliveryEngine) -> None:
        self.writer = writer
        self.engine = engine

    def check_room(self, messages: Sequence[Message]) -> None:
        """Raise SenderQueueFull if a sender queue cannot take these messages."""
        # Parts wanted per queue by these messages (a plain dict: a Counter
        # costs more to make than the check, and most calls have one message).
        wanted: dict[str, int] = {}
        scheduler = self.engine.scheduler
        for m in messages:
            key = self.engine.queue_key(m)
            wanted[key] = want = wanted.get(key, 0) + m.parts
            depth = scheduler.depth(key)
            if depth + want > scheduler.max_queued_parts:
                metrics.throttled("sender_queue_full").inc()
                raise SenderQueueFull(key, depth, scheduler.max_queued_parts)

    async def accept(self, messages: Sequence[Message]) -> None:
        """Commit the messages and queue them; raises StoreError if the commit failed."""
        self.check_room(messages)
        await self.writer.submit(InsertMessage(messages))
        for m in messages:
            self.engine.enqueue(m)
            metrics.received(m.ingress, m.account_id).inc()

    def accept_one(self, message: Message) -> asyncio.Future[None]:
        """The same for one message without a task: the future resolves after
        the commit and the message is queued by then (SMPP's hot path)."""
        self.check_room((message,))
        committed = self.writer.submit(InsertMessage((message,)))
        done: asyncio.Future[None] = committed.get_loop().create_future()

        def queued(f: asyncio.Future[object]) -> None:
            exc = f.exception()
            if exc is not None:
                done.set_exception(exc)
                return
            self.engine.enqueue(message)
            metrics.received(message.ingress, message.account_id).inc()
            done.set_result(None)

        committed.add_done_callback(queued)
        return done
