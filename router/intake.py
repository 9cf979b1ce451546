"""Intake: commit accepted messages, then queue them — in that order.

The acknowledgement (HTTP 202, submit_sm_resp) waits for the commit, so an
acknowledged message survives a crash (CONTRACT §3: "202 means durably
stored"); it enters its sender queue only once committed, so a crash
never leaves queued work that the database does not know about.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable, Sequence

import structlog

from smsrouter.router import metrics
from smsrouter.router.engine import DeliveryEngine
from smsrouter.router.messages import Message
from smsrouter.router.store.group_commit import GroupCommit, StoreError
from smsrouter.router.store.operations import KEY_TAKEN, IdempotentAnswer, InsertMessage, Unpaid

log = structlog.get_logger("intake")

# Messages whose commit is in doubt, remembered until the database answers
# whether it holds them. Each is a message the caller was told was not
# accepted; past the bound the oldest are forgotten (and logged), and the
# next start finds them as it finds any stored message.
MAX_IN_DOUBT = 100_000


class KeyTaken(Exception):
    """The request's Idempotency-Key was taken by another request first;
    none of this one's messages was stored (CONTRACT §3)."""


# What `Intake.accept` hears: the ids the balance could not pay for, or why
# nothing was stored, or that its deadline passed first.
Outcome = StoreError | KeyTaken | TimeoutError | Unpaid

# What accept returns when every message was stored.
ALL_STORED = Unpaid(frozenset())

# Refusal codes of messages the commit did not store (CONTRACT §6).
INSUFFICIENT_CREDIT = "insufficient_credit"
LIMIT_REACHED = "limit_reached"
THROUGHPUT_EXCEEDED = "throughput_exceeded"


def _time_out(done: asyncio.Future[Outcome]) -> None:
    if not done.done():
        done.set_result(TimeoutError())


class Intake:
    def __init__(
        self,
        writer: GroupCommit,
        engine: DeliveryEngine,
        not_stored: Callable[[Sequence[Message]], None] = lambda messages: None,
        committed: Callable[[Message], None] = lambda message: None,
        limited: Callable[[Sequence[Message]], None] = lambda messages: None,
        throttled: Callable[[Sequence[Message]], None] = lambda messages: None,
    ) -> None:
        self.writer = writer
        self.engine = engine
        # Told of admitted messages that were not stored after all
        # (Admission.not_stored: they leave their day's count).
        self._not_stored = not_stored
        # Told of each message once it is committed (SenderGuard.sent: its
        # recipient counts towards its sender's opt-out rate, CONTRACT §6).
        self._committed = committed
        # Told of messages the database refused for their account's daily
        # limit, which other instances' messages reached (Admission.reached).
        self._limited = limited
        # Told of messages the database refused for their account's max_tps,
        # which other instances' messages used (Admission.throttled).
        self._throttled = throttled
        self._in_doubt: list[Message] = []

    def _queue(self, messages: Sequence[Message]) -> None:
        committed = self._committed
        for m in messages:
            self.engine.enqueue(m)
            committed(m)
            metrics.received(m.ingress, m.account_id).inc()

    def _failed(self, messages: Sequence[Message], error: StoreError) -> None:
        """A commit that lost its connection may have landed all the same:
        such messages are checked once the database is back (`resolve_doubts`),
        so that a stored message never waits outside its queue."""
        if not error.in_doubt:
            self._not_stored(messages)
            return
        self._in_doubt.extend(messages)
        if len(self._in_doubt) > MAX_IN_DOUBT:
            dropped = len(self._in_doubt) - MAX_IN_DOUBT
            del self._in_doubt[:dropped]
            log.error("forgot messages whose commit was in doubt", count=dropped)

    @property
    def in_doubt(self) -> int:
        return len(self._in_doubt)

    async def resolve_doubts(
        self, stored: Callable[[list[uuid.UUID]], Awaitable[set[uuid.UUID]]]
    ) -> int:
        """Queue the messages in doubt that the database holds after all
        (`stored` answers which); returns how many. The rest were never
        stored: their callers were told so."""
        doubts, self._in_doubt = self._in_doubt, []
        if not doubts:
            return 0
        try:
            held = await stored([m.id for m in doubts])
        except BaseException:
            self._in_doubt[:0] = doubts  # ask again next time
            raise
        found = [m for m in doubts if m.id in held]
        if found:
            log.warning(
                "messages stored although their commit reported a lost connection",
                count=len(found),
                message_ids=[str(m.id) for m in found[:20]],
            )
            self._queue(found)
        return len(found)

    def check_room(self, messages: Sequence[Message]) -> None:
        """Raise SenderQueueFull if a sender queue cannot take these messages."""
        full = self.engine.queue_full(messages)
        if full is not None:
            metrics.throttled("sender_queue_full").inc()
            self._not_stored(messages)
            raise full

    async def accept(
        self,
        messages: Sequence[Message],
        answer: IdempotentAnswer | None = None,
        timeout: float | None = None,
    ) -> Unpaid:
        """Commit the messages and queue them; returns those not stored
        because the account's balance could not pay for them or its day had
        reached its daily_limit (CONTRACT §6), ALL_STORED when none. Raises StoreError if the commit failed, KeyTaken if
        `answer`'s Idempotency-Key belongs to another request (then nothing
        was stored).

        The messages are queued inside the writer once committed, not after
        this coroutine resumes: a caller that stops waiting (a request past
        its deadline, CONTRACT §11) must not leave a committed message
        outside its sender queue.

        With `timeout`, TimeoutError once that many seconds pass without
        the commit's outcome; the commit goes on and what it stores is
        queued all the same.
        """
        self.check_room(messages)
        loop = self.writer.loop
        done: asyncio.Future[Outcome] = loop.create_future()

        def committed(result: object, error: StoreError | None) -> None:
            outcome: Outcome = ALL_STORED
            if error is not None:
                outcome = error
                self._failed(messages, error)
            elif result == KEY_TAKEN:
                outcome = KeyTaken()
                self._not_stored(messages)
            elif isinstance(result, Unpaid):
                outcome = result
                refused = result.message_ids
                self._not_stored([m for m in messages if m.id in refused])
                if result.limited:
                    self._limited([m for m in messages if m.id in result.limited])
                if result.throttled:
                    self._throttled([m for m in messages if m.id in result.throttled])
                self._queue([m for m in messages if m.id not in refused])
            else:
                self._queue(messages)
            if not done.done():
                done.set_result(outcome)

        self.writer.submit_then(InsertMessage(messages, answer), committed)
        if timeout is None:
            outcome = await done
        else:
            # A timer on the future rather than asyncio.timeout(), which
            # per request looked the loop up, rescheduled and uncancelled
            # the task: 3 % of the router's time under scenario 1.
            timer = loop.call_later(timeout, _time_out, done)
            try:
                outcome = await done
            finally:
                timer.cancel()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def accept_one(
        self, message: Message, answer: Callable[[StoreError | None, str | None], None]
    ) -> None:
        """The same for one message without a task or a future: `answer(None,
        None)` is called inside the writer once the message is committed and
        queued, `answer(None, code)` if it was not stored for want of credit,
        for its account's daily limit or for its max_tps over all instances
        (code `insufficient_credit`, `limit_reached` or
        `throughput_exceeded`, CONTRACT §6), `answer(error, None)` if the commit
        failed (SMPP's hot path: the submit_sm_resp goes out in the turn its
        commit settles)."""
        self.check_room((message,))
        # A partial, not a closure: compiled, a closure kept with the
        # frame it closes over is a reference cycle per message, which only
        # the cycle collector frees.
        self.writer.submit_then(
            InsertMessage((message,)), functools.partial(self._one_committed, message, answer)
        )

    def _one_committed(
        self,
        message: Message,
        answer: Callable[[StoreError | None, str | None], None],
        result: object,
        error: StoreError | None,
    ) -> None:
        if error is not None:
            self._failed((message,), error)
            answer(error, None)
        elif isinstance(result, Unpaid):
            self._not_stored((message,))
            if result.limited:
                self._limited((message,))
                answer(None, LIMIT_REACHED)
            elif result.throttled:
                self._throttled((message,))
                answer(None, THROUGHPUT_EXCEEDED)
            else:
                answer(None, INSUFFICIENT_CREDIT)
        else:
            self._queue((message,))
            answer(None, None)
