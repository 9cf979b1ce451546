"""Who hears what a group commit did: one interface, given to the writer
(`group_commit.GroupCommit`) when it is made.

A listener is told once per flush, never per operation, from inside the
writer: nothing it does may block, and the time it takes delays every
waiter of the next flush.
"""

from __future__ import annotations

import uuid
from typing import Protocol

import asyncpg
import structlog

from smsrouter.router.store.operations import Notification

log = structlog.get_logger("store")


class CommitListener(Protocol):
    """What a GroupCommit tells of its flushes."""

    async def plan_notifications(
        self, conn: asyncpg.Connection, ended: list[uuid.UUID]
    ) -> list[Notification]:
        """Inside the transaction of a flush that ended these messages (each
        once, in the order they ended): insert their outbox rows, and return
        them in the order inserted. They commit, or not, with the ends."""
        ...

    def notifications_created(self, created: list[Notification]) -> None:
        """A commit landed with these outbox rows (the planned ones, then
        those of NewNotification operations); its waiters were told."""
        ...

    def settled(self) -> None:
        """A flush has told all its waiters, whatever its outcome."""
        ...


class CommitListeners:
    """Several listeners as one, told in the order they joined.

    Made before its writer and given to it; the parts that need the writer
    themselves, and so are built after it (the notification dispatcher, the
    SMPP server), join with `add` as they are built.
    """

    def __init__(self, *listeners: CommitListener) -> None:
        self._listeners = list(listeners)

    def add(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    async def plan_notifications(
        self, conn: asyncpg.Connection, ended: list[uuid.UUID]
    ) -> list[Notification]:
        created: list[Notification] = []
        for listener in self._listeners:
            created += await listener.plan_notifications(conn, ended)
        return created

    def notifications_created(self, created: list[Notification]) -> None:
        for listener in self._listeners:
            listener.notifications_created(created)

    def settled(self) -> None:
        for listener in self._listeners:
            try:
                listener.settled()
            except Exception:  # one listener's fault must not keep the others from hearing
                log.exception("commit listener failed", listener=type(listener).__name__)
