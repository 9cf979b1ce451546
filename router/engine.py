"""The delivery engine: sender queues → route → carrier, and receipts back.

One loop releases parts from the sender scheduler as their tokens come due
and hands each to a carrier chosen by route and availability; the outcome
is written through the group-commit writer. The engine knows nothing about
SMPP: a `CarrierGateway` sends a part and says which way it went.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Protocol

import structlog

from smsrouter.router import metrics
from smsrouter.router.health import CarrierHealth
from smsrouter.router.log_limits import LimitedLog
from smsrouter.router.messages import FINAL_STATUSES, Message, Status, utcnow
from smsrouter.router.routes import Candidate, RouteTable
from smsrouter.router.scheduler import SenderQueueFull, SenderScheduler
from smsrouter.router.senders import SenderRates, sender_of_key
from smsrouter.router.shards import Ownership, shard_of_key
from smsrouter.router.store.group_commit import GroupCommit, StoreError
from smsrouter.router.store.operations import (
    FENCED,
    CarrierReceipt,
    HeldReceiptsTried,
    MessageEnded,
    MessageEvent,
    PartSent,
    RetryHeldReceipts,
)

log = structlog.get_logger("engine")
# Lines that a fault repeats for every part (a stalled carrier, no healthy
# route): once per interval and key, with a count (CONTRACT §11).
limited_log = LimitedLog(log)

# Receipts may beat the submit_sm_resp they belong to (the carrier's SMSC
# writes the receipt before the response leaves), or beat our commit of it.
# Unmatched receipts are held in the database (migration 0015) and retried
# for this long before they are given up.
RECEIPT_GRACE_SECONDS = 300.0

# Seconds between checks for scheduled sends that are due, and between
# tries of held receipts (both also run when the queues never let the loop
# idle). One instance tries the held receipts, whichever owns this shard
# (CONTRACT §9: any instance may hold a receipt, one tries them all), at
# most this many a try.
CHORES_INTERVAL = 0.1
HELD_RECEIPT_RETRY = 1.0
HELD_RECEIPTS_SHARD = 0
HELD_RECEIPTS_BATCH = 1000

# Concatenated ESME messages whose carrier is remembered at once.
STICKY_GROUPS = 100_000

# Waits between rounds when every candidate carrier failed temporarily.
RETRY_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


# Seconds between looks at a held account's next part (CONTRACT §6: a
# locked account's messages wait for the unlock); each look costs the part
# its sender's token again, which a locked account's senders can spare.
HELD_ACCOUNT_RETRY = 1.0


class CarrierError(Exception):
    """A carrier refused or lost a part.

    `temporary` errors (throttled, queue full, system error, timeout, link
    lost) are retried on the next candidate; permanent ones end the message
    with `code` (e.g. "smpp:0x0000000B").
    """

    def __init__(
        self, code: str, *, temporary: bool, detail: str = "", throttled: bool = False
    ) -> None:
        super().__init__(detail or code)
        self.code = code
        self.temporary = temporary
        # Throttling is the carrier asking for less, not failing: it moves
        # traffic on but does not count against the carrier's health.
        self.throttled = throttled


class CarrierEvents(Protocol):
    """What the carrier side reports to the engine (the engine is one)."""

    def receipt(self, op: CarrierReceipt) -> asyncio.Future[None]:
        """A delivery receipt; answer the carrier once the future resolves."""
        ...

    def carrier_up(self, carrier: str) -> None:
        """A carrier has a bind that may submit."""
        ...


class CarrierGateway(Protocol):
    def is_available(self, carrier: str) -> bool: ...

    def sends_whole(self, carrier: str, message: Message) -> bool:
        """Does this carrier take the message in one submit (message_payload)?"""
        ...

    async def submit(self, carrier: str, message: Message, part: int) -> str:
        """Send one part; return the carrier's message id or raise CarrierError."""
        ...

    async def submit_whole(self, carrier: str, message: Message) -> str:
        """Send every part in one request; the carrier's message id."""
        ...

    def capacity(self) -> int:
        """Requests the bound carriers can have outstanding at once."""
        ...


def _settle(done: asyncio.Future[None], _: object, error: StoreError | None) -> None:
    """A write's outcome to whoever waits for it."""
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(None)


class DeliveryEngine:
    def __init__(
        self,
        *,
        writer: GroupCommit,
        carriers: CarrierGateway,
        routes: RouteTable,
        rates: SenderRates,
        max_per_sender: int,
        clock: Callable[[], float] = time.monotonic,
        health: CarrierHealth | None = None,
        rng: random.Random | None = None,
        held: Callable[[str], bool] = lambda account_id: False,
        refused: Callable[[Message], bool] = lambda message: False,
        refused_code: str = "sender_suspended",
        ownership: Ownership | None = None,
        hand_off: Callable[[list[uuid.UUID]], None] = lambda ids: None,
    ) -> None:
        self.writer = writer
        # CONTRACT §9: the sender shards this instance owns. Only their
        # messages are queued here; another shard's are handed to its owner
        # (`hand_off` names them to it), and nothing leaves for a carrier
        # while the leases cannot be trusted. Alone, an instance owns all.
        self.ownership = ownership if ownership is not None else Ownership.sole(clock)
        self._hand_off = hand_off
        # Called when a write said a lease was taken over (the shard keeper
        # renews at once to learn which).
        self.on_fenced: Callable[[], None] = lambda: None
        # Messages queued here and not yet wholly recorded as sent (or
        # ended): what the database's list of pending work is checked
        # against when a shard's messages are loaded again.
        self._live: set[uuid.UUID] = set()
        # Loads of pending work from the database under way, and the messages
        # that left `_live` meanwhile: a load's rows, read before such a
        # message's end was stored, must not queue it again.
        self._loads = 0
        self._left_while_loading: set[uuid.UUID] = set()
        # Whether an account's messages are held (CONTRACT §6 "Account
        # state": a locked account's queued messages wait for the unlock,
        # or expire).
        self.account_held = held
        # Whether a queued message must end `rejected` rather than leave
        # (CONTRACT §6 "Opt-out rate": its sender is suspended), and the
        # error code it ends with. Asked as each part is released, which
        # also catches what entered the queues after `end_queued` swept them.
        self.refused = refused
        self._refused_code = refused_code
        self.health = health or CarrierHealth(clock=clock)
        self._rng = rng or random.Random()
        self.carriers = carriers
        self.routes = routes
        self.rates = rates
        self._clock = clock
        self.scheduler: SenderScheduler[Message] = SenderScheduler(
            clock,
            rates.rate_of,
            max_queued_parts=max_per_sender,
            empty_at=self.ownership.empty_at if not self.ownership.everything else None,
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        # Parts released and not yet answered by a carrier.
        self._busy = 0
        self._parked: list[tuple[Message, int]] = []
        self._attempts: dict[uuid.UUID, int] = {}
        self._trying_held = False  # a RetryHeldReceipts in the writer
        self._scheduled: list[tuple[float, int, Message]] = []  # (due, tiebreak, message)
        self._sticky: OrderedDict[tuple[str, str, int, int], str] = OrderedDict()
        self._order = itertools.count()
        self._stopping = False
        self._health_exported: set[str] = set()
        # Told when a message's first part is taken by a carrier (the
        # optional `sent` webhook, router/sent_callbacks.py); None while no
        # account asks for it, so that it costs nothing then.
        self.on_sent: Callable[[Message, str, datetime], None] | None = None
        # Nothing leaves for a carrier while what is sent cannot be recorded
        # (CONTRACT §11): the writer says when its commits fail and land.
        writer.on_health.append(self._writer_health)

    # ------------------------------------------------------------- intake

    def apply_config(self, routes: RouteTable, rates: SenderRates) -> None:
        """A reloaded config (SIGHUP): new routes and rates; queues stay."""
        self.routes = routes
        self.rates = rates
        self.scheduler.set_rates(rates.rate_of)

    def queue_key(self, message: Message) -> str:
        return self.rates.queue_key(message.sender, message.country)

    def queue_full(self, messages: Sequence[Message]) -> SenderQueueFull | None:
        """The first sender queue these messages would overfill, or None if
        every queue has room for them (checked before their commit)."""
        # Parts wanted per queue by these messages (a plain dict: a Counter
        # costs more to make than the check, and most calls have one message).
        wanted: dict[str, int] = {}
        scheduler = self.scheduler
        limit = scheduler.max_queued_parts
        for m in messages:
            key = self.queue_key(m)
            wanted[key] = want = wanted.get(key, 0) + m.parts
            depth = scheduler.depth(key)
            if depth + want > limit:
                return SenderQueueFull(key, depth, limit)
        return None

    def enqueue(self, message: Message, *, first_part: int = 0) -> None:
        """Queue a committed message (or its remaining parts after a restart).

        A message scheduled for later waits in a timer heap and enters its
        sender queue at its time; it costs no sender-queue room until then.
        """
        key = self.queue_key(message)
        if not self.ownership.owns(shard_of_key(key)):
            self._hand_off([message.id])
            return
        if message.id in self._live or message.id in self._left_while_loading:
            # Queued already, from the database (a commit in doubt resolved
            # after a shard's pending work was loaded again), or sent while
            # the rows that name it were read.
            return
        self._live.add(message.id)
        self._queue(message, key, first_part)

    def _queue(self, message: Message, key: str, first_part: int = 0) -> None:
        if message.send_at is not None and first_part == 0:
            delay = (message.send_at - utcnow()).total_seconds()
            if delay > 0:
                heapq.heappush(self._scheduled, (self._clock() + delay, next(self._order), message))
                self._wake.set()
                return
        remaining = message.parts - first_part
        try:
            self.scheduler.push(key, message, remaining, first_part=first_part)
        except SenderQueueFull:
            # Admission checked room before the commit; another request
            # filled the queue in between. The message is committed, so it
            # must not be dropped: it waits beyond the limit.
            log.warning("sender queue over its limit", key=key, message_id=str(message.id))
            self.scheduler.push(key, message, remaining, first_part=first_part, force=True)
        message.parts_sent = first_part
        self._wake.set()

    def carrier_up(self, carrier: str) -> None:
        """A carrier bound: what waited for any carrier goes back to its queue."""
        parked, self._parked = self._parked, []
        for message, part in reversed(parked):
            self._requeue(message, part)
        if parked:
            self._wake.set()

    def _writer_health(self, healthy: bool) -> None:
        if healthy:
            log.info("releasing to carriers again")
        else:
            log.error("holding messages: the database does not record what is sent")
        self._wake.set()

    # ------------------------------------------------------------- the loop

    def start(self) -> None:
        # Kept: asyncio.get_running_loop() costs a getpid() call on 3.11.
        self._loop = asyncio.get_running_loop()
        # Read when scraped rather than set at every enqueue and release.
        scheduler = self.scheduler
        metrics.QUEUE_DEPTH.set_function(lambda: scheduler.queued_parts)
        metrics.SENDER_QUEUES_ACTIVE.set_function(lambda: scheduler.active_keys)
        self._task = self._loop.create_task(self._run(), name="delivery-engine")

    async def stop(self, drain_seconds: float) -> None:
        """Stop releasing; give in-flight carrier requests time to answer."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=drain_seconds)
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self) -> None:
        scheduler = self.scheduler
        chores_at = receipts_at = 0.0
        while not self._stopping:
            now = self._clock()
            # Also under sustained traffic, when the loop below never idles.
            if now >= chores_at:
                self._release_scheduled()
                chores_at = now + CHORES_INTERVAL
            if now >= receipts_at:
                self._retry_held_receipts()
                receipts_at = now + HELD_RECEIPT_RETRY
            # Take tokens only for parts that can leave now: a part that waits
            # for a free carrier window after taking its token would leave in
            # a burst with others, and the carrier would see the sender go
            # faster than its bucket allows.
            room = min(1000, self.carriers.capacity() - self._busy)
            if not self.writer.healthy:
                # A part sent now could not be recorded: its receipt would
                # match nothing and a restart would send it again. What was
                # sent already waits in the writer until the database is back.
                room = 0
            elif not self.ownership.trusted():
                # CONTRACT §9: a lease not renewed in time (a paused process,
                # a slow database) may be another instance's by now.
                room = 0
            released = scheduler.pop_ready(limit=room) if room > 0 else []
            for message, part in released:
                if message.status in FINAL_STATUSES:
                    continue  # an earlier part ended it
                self._busy += 1
                task = self._loop.create_task(self._deliver_counted(message, part))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if released:
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            at = scheduler.next_release_at()
            if self._scheduled:
                due = self._scheduled[0][0]
                at = due if at is None else min(at, due)
            if room <= 0 and (at is None or at <= self._clock()):
                at = None  # tokens are due but no window is free: wait for one
            wait_until = chores_at if at is None else min(at, chores_at)
            timeout = max(0.0, wait_until - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _usable(self, carrier: str) -> bool:
        return self.carriers.is_available(carrier) and self.health.allows(carrier)

    def _candidates(
        self, digits: str, group: tuple[str, str, int, int] | None = None
    ) -> list[Candidate]:
        """Usable candidates, cheapest first; equal costs spread by weight;
        the carrier that took earlier parts of the same concatenated
        message first of all (a handset reassembles only what one SMSC
        delivered under one reference)."""
        chosen = self.routes.choose(digits, self._usable)
        sticky = self._sticky.get(group) if group is not None else None
        if sticky is not None:
            first = [c for c in chosen if c.carrier == sticky]
            return first + [c for c in chosen if c.carrier != sticky]
        if len(chosen) < 2:
            return chosen
        ordered: list[Candidate] = []
        for _, same_cost in itertools.groupby(chosen, key=lambda c: c.cost):
            tier = list(same_cost)
            while len(tier) > 1:
                pick = self._rng.choices(range(len(tier)), weights=[c.weight for c in tier])[0]
                ordered.append(tier.pop(pick))
            ordered.extend(tier)
        return ordered

    async def _deliver_counted(self, message: Message, part: int) -> None:
        """_deliver, holding one unit of carrier capacity until the carrier
        answered (not until the answer is committed)."""
        held = True

        def free() -> None:
            nonlocal held
            if held:
                held = False
                self._busy -= 1
                self._wake.set()

        try:
            await self._deliver(message, part, free)
        finally:
            free()

    async def _deliver(
        self, message: Message, part: int, answered: Callable[[], None] = lambda: None
    ) -> None:
        if part > 0 and message.first_part is not None:
            await asyncio.shield(message.first_part)
        if message.sent_whole or message.status in FINAL_STATUSES:
            return  # the first part carried the whole text, or ended the message
        if part == 0 and message.parts > 1:
            message.first_part = self._loop.create_future()
            try:
                await self._deliver_part(message, part, answered)
            finally:
                message.first_part.set_result(None)
                message.first_part = None
            return
        await self._deliver_part(message, part, answered)

    async def _deliver_part(
        self, message: Message, part: int, answered: Callable[[], None]
    ) -> None:
        if message.valid_until is not None and utcnow() >= message.valid_until:
            await self._end(message, Status.EXPIRED, "validity_expired")
            return
        if self.account_held(message.account_id):
            asyncio.get_running_loop().call_later(HELD_ACCOUNT_RETRY, self._requeue, message, part)
            return
        if message.parts_sent == 0 and self.refused(message):
            await self._end(message, Status.REJECTED, self._refused_code)
            return
        shard = shard_of_key(self.queue_key(message))
        digits = message.recipient.lstrip("+")
        candidates = self._candidates(digits, message.concat_group)
        if not candidates:
            route = self.routes.lookup(digits)
            if route is None:
                await self._end(message, Status.REJECTED, "no_route")
            elif any(self.carriers.is_available(c.carrier) for c in route[1]):
                # Bound but every breaker is open: try again after a pause.
                self._retry_later(message, part, None)
            else:
                self._parked.append((message, part))
            return
        last: CarrierError | None = None
        previous: str | None = None
        for candidate in candidates:
            carrier = candidate.carrier
            if previous is not None:
                self._event(
                    message, "retrying", f"{previous} {last.code if last else ''} → {carrier}"
                )
            self.health.took(carrier)
            if carrier not in self._health_exported:
                self._export_health(carrier)
            started = time.perf_counter()
            # A payload carrier takes the whole message on its first part, if
            # no part went out yet (tokens were counted per part all the same).
            whole = (
                part == 0
                and message.parts_sent == 0
                and self.carriers.sends_whole(carrier, message)
            )
            failure: CarrierError | None = None
            if not self.ownership.may_send(shard):
                # CONTRACT §9: checked as the part leaves, after any wait for
                # a window: a process paused past its lease sends nothing.
                self._requeue(message, part)
                return
            try:
                if whole:
                    carrier_id = await self.carriers.submit_whole(carrier, message)
                else:
                    carrier_id = await self.carriers.submit(carrier, message, part)
            except CarrierError as exc:
                failure = exc  # handled below: no await in an except clause
            if failure is not None:
                metrics.submit_errors(carrier, failure.code).inc()
                last = failure
                if failure.temporary:
                    if not failure.throttled:
                        self.health.record_failure(carrier)
                    limited_log.info(
                        "carrier failed temporarily",
                        key=(carrier, failure.code),
                        message_id=str(message.id), part=part, carrier=carrier, error=failure.code,
                    )  # fmt: skip
                    previous = carrier
                    continue
                log.info(
                    "carrier refused",
                    message_id=str(message.id), part=part, carrier=carrier, error=failure.code,
                )  # fmt: skip
                await self._end(message, Status.FAILED, failure.code, carrier=carrier)
                return
            answered()
            latency = time.perf_counter() - started
            self.health.record_success(carrier, latency)
            metrics.submitted(carrier).inc()
            metrics.submit_latency(carrier).observe(latency)
            self._attempts.pop(message.id, None)
            if message.concat_group is not None:
                self._stick(message.concat_group, carrier)
            message.status = Status.SENT
            now = utcnow()
            on_sent = self.on_sent
            if on_sent is not None and message.parts_sent == 0:
                on_sent(message, carrier, now)
            covered = range(message.parts) if whole else (part,)
            message.parts_sent += len(covered)
            message.sent_whole = whole
            writer = self.writer
            shard, epoch = self.ownership.fence(shard)
            try:
                if whole:
                    recorded = await asyncio.gather(
                        *(writer.submit(PartSent(message.id, p, carrier, carrier_id, now, shard, epoch))
                          for p in covered)
                    )  # fmt: skip
                else:
                    recorded = [
                        await writer.submit(
                            PartSent(message.id, part, carrier, carrier_id, now, shard, epoch)
                        )
                    ]
                if FENCED in recorded:
                    self._fenced(shard)
                if message.parts_sent >= message.parts:
                    self._left(message.id)
            except StoreError:
                # The writer holds a sent part until the database takes it;
                # this is a shutdown that could not wait for the database:
                # the receipt will not match and the next start sends it again.
                log.error(
                    "could not record a sent part",
                    message_id=str(message.id), part=part, carrier=carrier,
                )  # fmt: skip
            return
        # Every candidate failed temporarily: try again later, head of the queue.
        self._retry_later(message, part, last)

    def _export_health(self, carrier: str) -> None:
        """carrier_health is read when scraped: working it out for every part
        sent would cost each message what a scrape every few seconds needs."""
        self._health_exported.add(carrier)
        carriers, health = self.carriers, self.health
        metrics.carrier_health(carrier).set_function(
            lambda: health.score(carrier) if carriers.is_available(carrier) else 0.0
        )

    def _stick(self, group: tuple[str, str, int, int], carrier: str) -> None:
        """Remember which carrier took a concatenated message's parts.

        Bounded (oldest forgotten first): a group whose parts stop coming
        costs one entry until STICKY_GROUPS newer groups pushed it out.
        """
        self._sticky[group] = carrier
        self._sticky.move_to_end(group)
        while len(self._sticky) > STICKY_GROUPS:
            self._sticky.popitem(last=False)

    def _retry_later(self, message: Message, part: int, last: CarrierError | None) -> None:
        attempt = self._attempts.get(message.id, 0)
        self._attempts[message.id] = attempt + 1
        delay = RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)]
        error = last.code if last else "no healthy carrier"
        limited_log.info(
            "retrying later",
            key=error,
            message_id=str(message.id),
            part=part,
            delay=delay,
            error=error,
        )
        asyncio.get_running_loop().call_later(delay, self._requeue, message, part)

    def _event(self, message: Message, status: str, detail: str) -> None:
        """An entry of the message's history beyond its standard steps."""
        self.writer.submit(MessageEvent(message.id, utcnow(), status, detail))

    def _release_scheduled(self) -> None:
        """Scheduled messages whose time has come enter their sender queues."""
        now = self._clock()
        while self._scheduled and self._scheduled[0][0] <= now:
            _, _, message = heapq.heappop(self._scheduled)
            message.send_at = None
            self._queue(message, self.queue_key(message))

    def end_queued(self, sender: str, refused: Callable[[Message], bool], code: str) -> int:
        """End `rejected` with `code` every message of `sender` waiting in
        its queues, scheduled or parked, that `refused` names and no part of
        which went out (CONTRACT §6: a suspended sender's queued messages
        end rejected and are refunded, `writes._messages_ended`); how many."""

        def ends(m: Message) -> bool:
            return m.sender == sender and m.parts_sent == 0 and refused(m)

        ended: list[Message] = []
        for key in self.scheduler.queue_keys():
            if sender_of_key(key) == sender:
                ended += self.scheduler.remove(key, ends)
        if any(ends(m) for _, _, m in self._scheduled):
            ended += [m for _, _, m in self._scheduled if ends(m)]
            self._scheduled = [e for e in self._scheduled if not ends(e[2])]
            heapq.heapify(self._scheduled)
        if any(ends(m) for m, _ in self._parked):
            ended += [m for m, _ in self._parked if ends(m)]
            self._parked = [e for e in self._parked if not ends(e[0])]
        now = utcnow()
        for m in ended:
            m.status = Status.REJECTED
            self._attempts.pop(m.id, None)
            self.writer.submit_then(
                MessageEnded(m.id, Status.REJECTED, code, now, None),
                functools.partial(self._ended, m.id),
            )
        return len(ended)

    @property
    def scheduled(self) -> int:
        return len(self._scheduled)

    def _requeue(self, message: Message, part: int) -> None:
        if self._stopping:
            return
        key = self.queue_key(message)
        if not self.ownership.owns(shard_of_key(key)):
            # Its shard went to another instance meanwhile, which queues it
            # from the database (told here in case it loaded too early).
            self._live.discard(message.id)
            self._hand_off([message.id])
            return
        # Only this part: the parts after it are still queued behind it.
        self.scheduler.push_front(key, message, 1, first_part=part)
        self._wake.set()

    # ------------------------------------------------------------- shards

    def _left(self, message_id: uuid.UUID) -> None:
        """A message wholly sent or ended, its record stored."""
        self._live.discard(message_id)
        if self._loads:
            self._left_while_loading.add(message_id)

    @contextlib.contextmanager
    def loading(self) -> Iterator[None]:
        """Around a read of pending work and the `take` or `enqueue` of its
        rows: what is sent or ends meanwhile is not queued again."""
        self._loads += 1
        try:
            yield
        finally:
            self._loads -= 1
            if not self._loads:
                self._left_while_loading.clear()

    def take(self, messages: Sequence[Message]) -> int:
        """Queue messages read from the database for the shards this
        instance owns (a takeover, a notice from the instance that stored
        them), skipping those already here; how many were new."""
        taken = 0
        for message in messages:
            if message.id in self._live or message.status in FINAL_STATUSES:
                continue
            self.enqueue(message, first_part=message.parts_sent)
            taken += message.id in self._live
        return taken

    def lose(self, shards: set[int]) -> list[uuid.UUID]:
        """The messages of these shards leave this process (another
        instance took them, or this one hands them back): queued, parked
        and scheduled. Their ids, for the new owner."""

        def doomed(message: Message) -> bool:
            return shard_of_key(self.queue_key(message)) in shards

        dropped = self.scheduler.drop_keys(lambda key: shard_of_key(key) in shards)
        dropped += [m for m, _ in self._parked if doomed(m)]
        self._parked = [e for e in self._parked if not doomed(e[0])]
        if any(doomed(m) for _, _, m in self._scheduled):
            dropped += [m for _, _, m in self._scheduled if doomed(m)]
            self._scheduled = [e for e in self._scheduled if not doomed(e[2])]
            heapq.heapify(self._scheduled)
        ids = list(dict.fromkeys(m.id for m in dropped))
        self._live.difference_update(ids)
        return ids

    def in_flight(self) -> list[asyncio.Task[None]]:
        """The parts at a carrier now, each until its outcome is recorded."""
        return list(self._inflight)

    def wake(self) -> None:
        self._wake.set()

    def _fenced(self, shard: int) -> None:
        log.warning("a sent part's lease was taken over; sending stops until renewed", shard=shard)
        self.ownership.distrust()
        self.on_fenced()

    async def _end(
        self, message: Message, status: Status, code: str, *, carrier: str | None = None
    ) -> None:
        message.status = status
        self._attempts.pop(message.id, None)
        self.scheduler.remove(self.queue_key(message), lambda m: m is message)
        with contextlib.suppress(StoreError):
            await self.writer.run(MessageEnded(message.id, status, code, utcnow(), carrier))
        # Only once its end is stored: until then a look at the database's
        # pending work (a resync, a notice) still finds it queued.
        self._left(message.id)

    # ------------------------------------------------------------- receipts

    def receipt(self, op: CarrierReceipt) -> asyncio.Future[None]:
        """Record a carrier's receipt; the future resolves once it is safe to
        answer the carrier: committed, matched or held in the database
        (migration 0015) for a later match."""
        metrics.dlr_received(op.carrier, str(op.status)).inc()
        self.health.record_receipt(op.carrier, op.status == Status.DELIVERED)
        done: asyncio.Future[None] = self._loop.create_future()
        # A partial, not a closure (a reference cycle per receipt, compiled).
        self.writer.submit_then(op, functools.partial(_settle, done))
        return done

    def _retry_held_receipts(self) -> None:
        if (
            self._trying_held
            or not self.writer.healthy
            or not self.ownership.owns(HELD_RECEIPTS_SHARD)
        ):
            return
        self._trying_held = True
        self.writer.submit_then(
            RetryHeldReceipts(HELD_RECEIPTS_BATCH, RECEIPT_GRACE_SECONDS), self._held_tried
        )

    def _held_tried(self, result: object, error: StoreError | None) -> None:
        self._trying_held = False
        if error is None and isinstance(result, HeldReceiptsTried) and result.given_up:
            log.warning(
                "receipts matched no message", count=result.given_up,
                held_seconds=RECEIPT_GRACE_SECONDS,
            )  # fmt: skip
            metrics.RECEIPTS_UNMATCHED.inc(result.given_up)

    def _ended(self, message_id: uuid.UUID, result: object, error: StoreError | None) -> None:
        self._left(message_id)
        _ended(result, error)


def _ended(result: object, error: StoreError | None) -> None:
    # The writer that retries keeps the end until the database takes it;
    # an error here is a shutdown that could not wait: the message is still
    # queued in its row, and the next start ends it at its release.
    if error is not None:
        log.error("could not record a message's end", error=str(error))
