"""Who hears what a group commit did: one interface, given to the writer
(`group_commit.GroupCommit`) when it is made.

A listener is told once per flush, never per operation, from inside the
writer: nothing it does may block, and the time it takes delays every
waiter of the next flush.
"""

from __future__ import annotations

from typing import Protocol

import asyncpg
import structlog

from smsrouter.router.store.operations import Finished, Notification

log = structlog.get_logger("store")


class CommitListener(Protocol):
    """What a GroupCommit tells of its flushes."""

    async def plan_notifications(
        self, conn: asyncpg.Connection, ended: list[Finished]
    ) -> list[Notification]:
        """Inside the transaction of a flush that ended these messages (each
        once, in the order they ended): write what keeps their notifications
        (store.notices), and return them in the order they are to be sent.
        They commit, or not, with the ends."""
        ...

    def notifications_created(self, created: list[Notification]) -> None:
        """A commit landed with these notifications (the planned ones, then
        the outbox rows of NewNotification operations); its waiters were
        told."""
        ...

    def commit_failed(self, created: list[Notification], in_doubt: bool) -> None:
        """A flush that had created these failed; `in_doubt` when no answer
        came, so that its commit may have landed after all."""
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
        self, conn: asyncpg.Connection, ended: list[Finished]
    ) -> list[Notification]:
        created: list[Notification] = []
        for listener in self._listeners:
            created += await listener.plan_notifications(conn, ended)
        return created

    def notifications_created(self, created: list[Notification]) -> None:
        for listener in self._listeners:
            listener.notifications_created(created)

    def commit_failed(self, created: list[Notification], in_doubt: bool) -> None:
        for listener in self._listeners:
            listener.commit_failed(created, in_doubt)

    def settled(self) -> None:
        for listener in self._listeners:
            try:
                listener.settled()
            except Exception:  # one listener's fault must not keep the others from hearing
                log.exception("commit listener failed", listener=type(listener).__name__)
