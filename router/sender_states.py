"""Flagged and suspended sender numbers, in memory (CONTRACT §6 "Opt-out
rate").

The rows in PostgreSQL (`sender_states`, migration 0009) are the truth:
every process loads them at start and again on each NOTIFY
`smsrouter_senders`, and applies its own decisions the moment it makes
them. Admission asks `suspended(number)` for every message: one dict
look-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from smsrouter.router.opt_out_rate import FLAGGED, SUSPENDED

__all__ = ["FLAGGED", "SUSPENDED", "SenderState", "SenderStates", "StateChanges"]

# Higher is worse: a state only rises until an operator resumes the number.
_RANK = {FLAGGED: 1, SUSPENDED: 2}


def rises(old: str | None, new: str | None) -> bool:
    """Is `new` a worse state than `old` (None: neither flagged nor suspended)?"""
    return _RANK.get(new or "", 0) > _RANK.get(old or "", 0)


@dataclass(frozen=True, slots=True)
class SenderState:
    """One row of `sender_states`: a number, its account, its state and the
    rate that put it there."""

    number: str
    account_id: str
    state: str  # FLAGGED | SUSPENDED
    opt_outs: int
    recipients: int
    rate: float
    since: datetime


@dataclass(frozen=True, slots=True)
class StateChanges:
    """What a new snapshot changed: numbers newly flagged, newly suspended,
    and no longer either (resumed)."""

    flagged: tuple[SenderState, ...] = ()
    suspended: tuple[SenderState, ...] = ()
    cleared: tuple[str, ...] = ()


class SenderStates:
    """Number → its state, for the numbers flagged or suspended."""

    __slots__ = ("_by_number", "_suspended")

    def __init__(self) -> None:
        self._by_number: dict[str, SenderState] = {}
        self._suspended: set[str] = set()

    def __len__(self) -> int:
        return len(self._by_number)

    def all(self) -> list[SenderState]:
        return list(self._by_number.values())

    def suspended(self, number: str) -> bool:
        """Is this sender (canonical form) suspended? Asked per message."""
        return number in self._suspended

    def state_of(self, number: str) -> str | None:
        found = self._by_number.get(number)
        return None if found is None else found.state

    def get(self, number: str) -> SenderState | None:
        return self._by_number.get(number)

    def set(self, state: SenderState) -> StateChanges:
        """This process's own decision, applied at once (before its row is
        committed); a state never falls this way."""
        if not rises(self.state_of(state.number), state.state):
            return StateChanges()
        self._put(state)
        if state.state == SUSPENDED:
            return StateChanges(suspended=(state,))
        return StateChanges(flagged=(state,))

    def replace(self, states: Iterable[SenderState]) -> StateChanges:
        """The rows anew (at start, on NOTIFY): what rose and what was cleared."""
        new = {s.number: s for s in states}
        flagged: list[SenderState] = []
        suspended: list[SenderState] = []
        for number, state in new.items():
            if rises(self.state_of(number), state.state):
                (suspended if state.state == SUSPENDED else flagged).append(state)
        cleared = tuple(n for n in self._by_number if n not in new)
        self._by_number = new
        self._suspended = {n for n, s in new.items() if s.state == SUSPENDED}
        return StateChanges(tuple(flagged), tuple(suspended), cleared)

    def _put(self, state: SenderState) -> None:
        self._by_number[state.number] = state
        if state.state == SUSPENDED:
            self._suspended.add(state.number)
        else:
            self._suspended.discard(state.number)
