"""Flag and suspend sender numbers by their opt-out rate (CONTRACT §6
"Opt-out rate").

Every committed message counts towards its sender's recipients (`sent`,
O(1): router/opt_out_rate.py); the rate is looked at only when a STOP
commits (`opted_out`, from Inbound's commit callback). A rate past a
threshold applies here at once and is written as a `sender_states` row
(with an audit row and a NOTIFY), on which every process loads the rows
again (`apply`, from a SenderWatch). What a state does:

- flagged: gauge `smsrouter_sender_flagged{sender}` 1 and one warning line;
- suspended: the same, admission refuses new sends `sender_suspended`
  (Admission reads the same SenderStates), and the engine ends the
  sender's queued messages `rejected` with `sender_suspended` (refunded:
  none reached a carrier). Keyword replies are spared: "the reply to a STOP
  is sent even when that STOP suspends its sender";
- resumed (the row deleted by an operator): the gauge goes, and the
  window's counts start afresh so that the same STOPs do not suspend the
  number again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import asyncpg
import structlog

from smsrouter.router import metrics
from smsrouter.router.admission import Compliance
from smsrouter.router.messages import KEYWORD_INGRESS, Message, utcnow
from smsrouter.router.opt_out_rate import OptOutRates, verdict_of
from smsrouter.router.sender_states import (
    SUSPENDED,
    SenderState,
    SenderStates,
    StateChanges,
    rises,
)
from smsrouter.router.store.sender_states import record_state

log = structlog.get_logger("senders")

#: The refusal and error code of a suspended sender's messages (CONTRACT §6).
SENDER_SUSPENDED = "sender_suspended"

# Seconds between tries of a state's row while the database is away.
PERSIST_RETRY_SECONDS = 1.0

_STORE_DOWN: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresError,
    TimeoutError,
)


class QueuedMessages(Protocol):
    """The engine, as the guard sees it."""

    def end_queued(self, sender: str, refused: Callable[[Message], bool], code: str) -> int: ...


class SenderGuard:
    def __init__(
        self,
        *,
        states: SenderStates,
        thresholds: Callable[[], Compliance],
        pool: asyncpg.Pool | None = None,
        decided_by: str = "router",
        rates: OptOutRates | None = None,
    ) -> None:
        # Shared with Admission: what it refuses is what is held here.
        self.states = states
        self.rates = rates if rates is not None else OptOutRates()
        # [compliance] opt_out_* of the config in force (replaced on reload).
        self._thresholds = thresholds
        self._pool = pool
        self._decided_by = decided_by
        self._engine: QueuedMessages | None = None
        # Decisions of this process whose rows are not committed yet: a
        # snapshot loaded meanwhile must not undo them.
        self._pending: dict[str, SenderState] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def use_engine(self, engine: QueuedMessages) -> None:
        """Where a suspended sender's queued messages are ended (the engine
        is built after the guard: it asks `refuses` for every part)."""
        self._engine = engine

    # -- per message -------------------------------------------------------

    def sent(self, message: Message) -> None:
        """A committed message: its recipient counts for its sender."""
        self.rates.sent(message.sender, message.recipient)

    def refuses(self, message: Message) -> bool:
        """Must this queued message end instead of leaving? (Its sender is
        suspended, and it is no keyword reply.)"""
        return self.states.suspended(message.sender) and message.ingress != KEYWORD_INGRESS

    # -- per STOP ----------------------------------------------------------

    def opted_out(self, account_id: str, number: str, subscriber: str) -> None:
        """A subscriber's STOP to `number` committed: count it, and flag or
        suspend the number if its rate now says so."""
        rates = self.rates
        rates.opted_out(number, subscriber)
        c = self._thresholds()
        opt_outs, recipients, rate = rates.rate(number)
        verdict = verdict_of(
            recipients, rate, c.opt_out_min_recipients, c.opt_out_flag_rate,
            c.opt_out_suspend_rate,
        )  # fmt: skip
        if verdict is None or not rises(self.states.state_of(number), verdict):
            return
        state = SenderState(number, account_id, verdict, opt_outs, recipients, rate, utcnow())
        self._pending[number] = state
        self._effects(self.states.set(state))
        if self._pool is not None:
            task = asyncio.get_running_loop().create_task(self._persist(state))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _persist(self, state: SenderState) -> None:
        pool = self._pool
        assert pool is not None
        while True:
            failed: BaseException | None = None
            try:
                async with pool.acquire() as conn:
                    await record_state(conn, state, self._decided_by)
            except _STORE_DOWN as exc:
                failed = exc  # retried below: no await in an except clause
            if failed is None:
                break
            log.error(
                "sender state not recorded yet", sender=state.number, state=state.state,
                error=repr(failed),
            )  # fmt: skip
            await asyncio.sleep(PERSIST_RETRY_SECONDS)
        if self._pending.get(state.number) is state:
            del self._pending[state.number]

    # -- the rows ----------------------------------------------------------

    def apply(self, rows: list[SenderState], *, loaded: bool = False) -> None:
        """The rows as loaded (at start with `loaded`, then on NOTIFY)."""
        by_number = {r.number: r for r in rows}
        for number, mine in self._pending.items():
            stored = by_number.get(number)
            if rises(None if stored is None else stored.state, mine.state):
                by_number[number] = mine
        changes = self.states.replace(by_number.values())
        for number in changes.cleared:
            self.rates.reset(number)
            with contextlib.suppress(KeyError):
                metrics.SENDER_FLAGGED.remove(number)
            log.info("sender resumed", sender=number)
        self._effects(changes, loaded=loaded)

    def _effects(self, changes: StateChanges, *, loaded: bool = False) -> None:
        for state in (*changes.flagged, *changes.suspended):
            metrics.SENDER_FLAGGED.labels(state.number).set(1)
            fields = {
                "sender": state.number, "account": state.account_id, "opt_outs": state.opt_outs,
                "recipients": state.recipients, "rate": round(state.rate, 4),
            }  # fmt: skip
            if loaded:
                log.info(f"sender {state.state}", **fields)
            elif state.state == SUSPENDED:
                log.warning("sender suspended: its opt-out rate passed the threshold", **fields)
            else:
                log.warning("sender flagged: its opt-out rate passed the threshold", **fields)
        engine = self._engine
        if engine is None:
            return
        for state in changes.suspended:
            ended = engine.end_queued(state.number, self.refuses, SENDER_SUSPENDED)
            if ended:
                log.warning("queued messages of a suspended sender ended", sender=state.number,
                            count=ended)  # fmt: skip

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
