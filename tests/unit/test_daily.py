"""Daily thresholds (CONTRACT §6): counts per account and day."""

from __future__ import annotations

from datetime import date

from smsrouter.router.daily import DailyCounts

MONDAY, TUESDAY = date(2026, 12, 7), date(2026, 12, 8)


def test_the_limit_holds_and_a_new_day_starts_from_zero() -> None:
    counts = DailyCounts()
    assert [counts.take("a", MONDAY, 3) for _ in range(5)] == [True] * 3 + [False] * 2
    assert counts.count("a", MONDAY) == 3  # a refusal counts nothing
    assert counts.take("b", MONDAY, 3)  # accounts have counts of their own
    assert counts.take("a", TUESDAY, 3) and counts.count("a", TUESDAY) == 1
    assert counts.count("a", MONDAY) == 0  # yesterday is gone


def test_no_limit_counts_all_and_a_message_not_stored_leaves_the_count() -> None:
    counts = DailyCounts()
    assert all(counts.take("a", MONDAY, 0) for _ in range(10))
    counts.give_back("a", MONDAY, 4)
    assert counts.count("a", MONDAY) == 6
    counts.give_back("a", TUESDAY)  # another day's message: nothing to give back today
    assert counts.count("a", MONDAY) == 6
    assert counts.take("a", MONDAY, 7) and not counts.take("a", MONDAY, 7)


def test_the_alarm_raised_by_the_database_is_news_once_a_day() -> None:
    counts = DailyCounts()
    assert counts.mark_alarmed("a", MONDAY)
    assert not counts.mark_alarmed("a", MONDAY)  # heard again: already known
    assert counts.alarmed("a", MONDAY) and not counts.alarmed("a", TUESDAY)
    assert counts.mark_alarmed("a", TUESDAY)


def test_a_day_resumed_at_start_keeps_its_count_and_its_alarm() -> None:
    counts = DailyCounts()
    counts.start("a", MONDAY, 4, alarm=3)
    assert counts.alarmed("a", MONDAY)  # raised before the restart
    assert not counts.mark_alarmed("a", MONDAY)
    assert counts.take("a", MONDAY, 5) and not counts.take("a", MONDAY, 5)
    counts.start("b", MONDAY, 1, alarm=3)
    assert not counts.alarmed("b", MONDAY)


def test_a_day_the_database_found_full_refuses_until_the_limit_changes() -> None:
    """Other instances' messages filled the day: the database refused one of
    ours (migration 0014), and this process refuses the next ones itself
    until an operator raises the limit."""
    counts = DailyCounts()
    assert counts.take("a", MONDAY, 10) and counts.take("a", MONDAY, 10)
    counts.reached("a", MONDAY)
    assert not counts.take("a", MONDAY, 10)
    assert counts.count("a", MONDAY) == 2
    assert counts.take("a", MONDAY, 20)  # raised: the database decides again
    counts.reached("a", TUESDAY)  # another day: nothing to mark
    assert counts.take("a", MONDAY, 20)
    assert counts.take("a", TUESDAY, 10)


def test_a_day_caught_up_later_keeps_the_higher_count_and_its_alarm() -> None:
    counts = DailyCounts()
    day = date(2026, 12, 7)
    assert counts.take("a", day, 0)
    counts.catch_up("a", day, stored=5, alarm=3)
    assert counts.count("a", day) == 5 and counts.alarmed("a", day)
    counts.catch_up("a", day, stored=2, alarm=3)
    assert counts.count("a", day) == 5
    counts.catch_up("b", day, stored=1, alarm=3)
    assert counts.count("b", day) == 1 and not counts.alarmed("b", day)
