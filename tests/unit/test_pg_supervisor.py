"""The supervisor's pure parts: how long it waits between failed restarts."""

from __future__ import annotations

import signal

from smsrouter.pg_supervisor import MAX_RETRY_DELAY, _signal_name, retry_delay


def test_retry_delays_double_from_half_a_second_up_to_the_cap() -> None:
    delays = [retry_delay(n) for n in range(1, 9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, MAX_RETRY_DELAY, MAX_RETRY_DELAY, MAX_RETRY_DELAY]
    # Never given up: a thousandth failure still waits the cap, no more.
    assert retry_delay(1000) == MAX_RETRY_DELAY


def test_an_exit_status_names_the_signal_that_ended_the_server() -> None:
    assert _signal_name(-signal.SIGKILL) == "SIGKILL"
    assert _signal_name(-signal.SIGSEGV) == "SIGSEGV"
    assert _signal_name(1) is None  # exited by itself, no signal
