"""Which daily partitions to make and drop (router/retention.py, CONTRACT §10)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, timedelta
from unittest import mock

import pytest

from smsrouter.router import retention
from smsrouter.router.messages import new_message_id
from smsrouter.router.retention import (
    AHEAD_DAYS,
    CARRIER_SUBMITS,
    DAY,
    IDEMPOTENCY_KEYS,
    MESSAGE_EVENTS,
    MESSAGES,
    OUTBOX,
    TABLES,
    Drop,
)

D = date(2026, 12, 7)


def at(day: date, hour: int = 0, minute: int = 0, microsecond: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, 0, microsecond, tzinfo=UTC)


# -- names ---------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_a_partition_name_says_its_day(table: retention.PartitionedTable) -> None:
    name = retention.partition_name(table, D)
    assert name == f"{table.name}_p20261207"
    assert retention.day_of_partition(table, name) == D


def test_names_of_other_partitions_say_no_day() -> None:
    assert retention.day_of_partition(MESSAGES, "messages_default") is None
    assert retention.default_partition(MESSAGES) == "messages_default"
    # Another table's day, or a day that is no date.
    assert retention.day_of_partition(MESSAGES, "message_events_p20261207") is None
    assert retention.day_of_partition(MESSAGE_EVENTS, "messages_p20261207") is None
    assert retention.day_of_partition(MESSAGES, "messages_p20261307") is None
    assert retention.day_of_partition(MESSAGES, "messages_p2026120") is None
    assert retention.day_of_partition(MESSAGES, "messages_unpartitioned") is None


# -- bounds --------------------------------------------------------------------


def test_the_bounds_of_a_day_of_messages_are_uuid7_times() -> None:
    low, high = retention.bounds(MESSAGES, D)
    ms = int(at(D).timestamp() * 1000)
    assert low == f"'{uuid.UUID(int=ms << 80)}'"
    assert high == f"'{uuid.UUID(int=(ms + 86_400_000) << 80)}'"
    assert retention.bounds(CARRIER_SUBMITS, D) == retention.bounds(MESSAGES, D)


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_days_follow_each_other_without_a_gap(table: retention.PartitionedTable) -> None:
    for day in (D, date(2024, 2, 28), date(2024, 2, 29), date(2026, 12, 31)):
        assert retention.bounds(table, day)[1] == retention.bounds(table, day + DAY)[0]


def test_a_message_id_falls_in_the_day_it_was_made() -> None:
    """new_message_id's version and variant bits lie under its 48 bits of
    time: an id made at any moment of a day is within that day's bounds,
    the first and the last millisecond included."""
    moments = [
        at(D),
        at(D, microsecond=999),
        at(D, 12, 30),
        at(D + DAY) - timedelta(microseconds=1),
    ]
    for moment in moments:
        with mock.patch("time.time_ns", return_value=int(moment.timestamp() * 1e9)):
            message_id = new_message_id()
        low = retention.uuid_floor(retention.day_start(D))
        high = retention.uuid_floor(retention.day_start(D + DAY))
        assert low <= uuid.UUID(str(message_id)) < high, moment


def test_outbox_ids_carry_their_day() -> None:
    low, high = retention.bounds(OUTBOX, D)
    day_number = (D - date(1970, 1, 1)).days
    assert (int(low), int(high)) == (day_number << 47, (day_number + 1) << 47)
    for sequence in (0, 1, 12345, (1 << 47) - 1):
        outbox_id = retention.outbox_id_floor(D) | sequence
        assert retention.day_of_outbox_id(outbox_id) == D
        assert int(low) <= outbox_id < int(high)
    # Ids from before migration 0012 were the sequence alone: the first day.
    assert retention.day_of_outbox_id(41) == date(1970, 1, 1)
    # A bigint holds days to 2149.
    assert retention.outbox_id_floor(date(2149, 6, 1)) < 2**63


def test_the_bounds_of_a_day_of_keys_are_dates() -> None:
    assert retention.bounds(IDEMPOTENCY_KEYS, D) == ("'2026-12-07'", "'2026-12-08'")


# -- making ahead --------------------------------------------------------------


def test_today_and_the_next_days_are_made_where_missing() -> None:
    assert retention.days_to_create([], D) == [D + timedelta(days=n) for n in range(4)]
    assert AHEAD_DAYS == 3
    assert retention.days_to_create([D, D + DAY], D) == [D + 2 * DAY, D + 3 * DAY]
    assert retention.days_to_create([D - DAY, D + 2 * DAY], D, ahead=2) == [D, D + DAY]
    everything = [D + timedelta(days=n) for n in range(-5, 10)]
    assert retention.days_to_create(everything, D) == []


# -- expiry --------------------------------------------------------------------


def test_a_day_expires_when_its_range_ended_long_enough_ago() -> None:
    kept = timedelta(days=30)
    ended = at(D + DAY)
    assert retention.expired_days([D], ended + kept, kept) == [D]
    assert retention.expired_days([D], ended + kept - timedelta(microseconds=1), kept) == []
    assert retention.expired_days([D + DAY, D, D - DAY], ended + kept, kept) == [D - DAY, D]


def test_keys_go_a_day_after_their_range_whatever_days_says() -> None:
    assert retention.kept_for(IDEMPOTENCY_KEYS, 30) == timedelta(hours=24)
    assert retention.kept_for(IDEMPOTENCY_KEYS, 1) == timedelta(hours=24)
    for table in (MESSAGES, CARRIER_SUBMITS, MESSAGE_EVENTS, OUTBOX):
        assert retention.kept_for(table, 7) == timedelta(days=7)


def _all_days(days: list[date]) -> dict[str, list[date]]:
    return {t.name: list(days) for t in TABLES}


def test_drops_take_a_message_day_with_its_parts_and_events_before_it() -> None:
    now = at(D + 31 * DAY)  # D ended 30 days ago
    drops = retention.drops(_all_days([D - DAY, D, D + DAY]), now, 30)
    assert drops == [
        Drop(CARRIER_SUBMITS, D - DAY),
        Drop(CARRIER_SUBMITS, D),
        Drop(MESSAGE_EVENTS, D - DAY),
        Drop(MESSAGE_EVENTS, D),
        Drop(MESSAGES, D - DAY),
        Drop(MESSAGES, D),
        Drop(OUTBOX, D - DAY),
        Drop(OUTBOX, D),
        # Keys go after a day, so all three.
        Drop(IDEMPOTENCY_KEYS, D - DAY),
        Drop(IDEMPOTENCY_KEYS, D),
        Drop(IDEMPOTENCY_KEYS, D + DAY),
    ]
    assert drops[0].name == "carrier_submits_p20261206"


def test_a_day_holding_a_message_not_ended_is_kept_with_its_parts_and_events() -> None:
    now = at(D + 40 * DAY)
    drops = retention.drops(_all_days([D - DAY, D]), now, 30, open_message_days=[D])
    kept = {(d.table.name, d.day) for d in drops}
    for table in (MESSAGES, CARRIER_SUBMITS, MESSAGE_EVENTS):
        assert (table.name, D) not in kept
        assert (table.name, D - DAY) in kept
    assert (OUTBOX.name, D) in kept and (IDEMPOTENCY_KEYS.name, D) in kept


def test_a_day_holding_a_notification_not_done_is_kept() -> None:
    now = at(D + 40 * DAY)
    drops = retention.drops(_all_days([D]), now, 30, pending_notification_days=[D])
    assert Drop(OUTBOX, D) not in drops
    assert Drop(MESSAGES, D) in drops


def test_parts_of_a_day_whose_messages_are_gone_already_go_too() -> None:
    """A run that dropped the messages of a day but not its parts (a lock it
    could not get) leaves the parts to the next run."""
    existing = {CARRIER_SUBMITS.name: [D], MESSAGES.name: []}
    assert retention.drops(existing, at(D + 40 * DAY), 30) == [Drop(CARRIER_SUBMITS, D)]


def test_candidates_are_the_expired_days_of_messages_and_the_outbox() -> None:
    existing = {MESSAGES.name: [D - DAY, D, D + DAY], OUTBOX.name: [D + DAY]}
    now = at(D + 31 * DAY)
    assert retention.candidates(existing, now, 30) == {
        retention.MESSAGE_DAYS: [D - DAY, D],
        retention.NOTIFICATION_DAYS: [],
    }


def test_drops_never_take_what_is_not_expired_nor_held_and_take_the_rest() -> None:
    """Every clock, retention, set of days and held days of a small world."""
    days = [D + timedelta(days=n) for n in range(-3, 4)]
    moments = [at(D + timedelta(days=n), hour) for n in range(-2, 12) for hour in (0, 13)]
    for now, keep, held in itertools.product(moments, (1, 2, 5), ([], [D], [D - DAY, D + DAY])):
        drops = retention.drops(
            _all_days(days), now, keep, open_message_days=held, pending_notification_days=held
        )
        dropped = {(d.table.name, d.day) for d in drops}
        for table in TABLES:
            kept = retention.kept_for(table, keep)
            for day in days:
                expired = retention.day_start(day + DAY) + kept <= now
                is_held = day in held and table is not IDEMPOTENCY_KEYS
                assert ((table.name, day) in dropped) == (expired and not is_held), (
                    now,
                    keep,
                    held,
                    table.name,
                    day,
                )
        # Within a table, oldest first; a day's parts and events before it.
        order = [(TABLES.index(d.table), d.day) for d in drops]
        assert order == sorted(order)


# -- the ledger ----------------------------------------------------------------


def test_the_ledger_is_kept_for_ever_unless_told() -> None:
    now = at(D, 12)
    assert retention.ledger_cutoff(now, 0) is None
    assert retention.ledger_cutoff(now, 90) == now - timedelta(days=90)
