"""Several commit listeners as one (store.listeners.CommitListeners)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from smsrouter.router.messages import Status
from smsrouter.router.store.listeners import CommitListeners
from smsrouter.router.store.operations import Finished, Notification

AT = datetime(2025, 1, 1, tzinfo=UTC)


def _row(n: int) -> Notification:
    return Notification(n, "webhook", "acc", None, "http://x/", b"{}", 0, AT, AT)


class Told:
    """A listener that writes down what it is told, under its name."""

    def __init__(self, name: str, told: list[str], planned: list[Notification]) -> None:
        self.name = name
        self.told = told
        self.planned = planned

    async def plan_notifications(self, conn: object, ended: list[Finished]) -> list[Notification]:
        self.told.append(f"{self.name} plans {len(ended)}")
        return self.planned

    def notifications_created(self, created: list[Notification]) -> None:
        self.told.append(f"{self.name} hears {[n.id for n in created]}")

    def commit_failed(self, created: list[Notification], in_doubt: bool) -> None:
        self.told.append(f"{self.name} hears {[n.id for n in created]} failed, in doubt {in_doubt}")

    def settled(self) -> None:
        self.told.append(f"{self.name} settled")


class Broken(Told):
    def settled(self) -> None:
        raise RuntimeError("a listener's bug")


async def test_listeners_are_told_in_the_order_they_joined() -> None:
    told: list[str] = []
    listeners = CommitListeners(Told("planner", told, [_row(1), _row(2)]))
    listeners.add(Told("dispatcher", told, []))
    ended = [Finished(uuid.uuid4(), Status.DELIVERED)]
    planned = await listeners.plan_notifications(None, ended)  # type: ignore[arg-type]
    assert [n.id for n in planned] == [1, 2]
    listeners.notifications_created(planned)
    listeners.settled()
    listeners.commit_failed(planned[:1], True)
    assert told == [
        "planner plans 1",
        "dispatcher plans 1",
        "planner hears [1, 2]",
        "dispatcher hears [1, 2]",
        "planner settled",
        "dispatcher settled",
        "planner hears [1] failed, in doubt True",
        "dispatcher hears [1] failed, in doubt True",
    ]


def test_a_listener_that_raises_when_settled_keeps_no_other_from_hearing() -> None:
    told: list[str] = []
    listeners = CommitListeners(Broken("broken", told, []), Told("smsc", told, []))
    listeners.settled()
    assert told == ["smsc settled"]
