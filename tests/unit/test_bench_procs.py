"""The bench's reading of the machine's CPU (bench/procs.py)."""

from __future__ import annotations

import time

import pytest

from bench.procs import CLOCK_TICKS, machine_cpu, machine_cpu_times

STAT = """\
cpu  1000 20 300 5000 400 10 30 40 7 0
cpu0 500 10 150 2500 200 5 15 20 7 0
cpu1 500 10 150 2500 200 5 15 20 0 0
intr 123456 0 0
ctxt 987654
"""


def test_busy_is_everything_but_idle_and_iowait() -> None:
    busy, steal, total = machine_cpu_times(STAT)
    # user + nice + system + irq + softirq + steal; guest is inside user.
    assert busy == (1000 + 20 + 300 + 10 + 30 + 40) / CLOCK_TICKS
    assert steal == 40 / CLOCK_TICKS
    assert total == (1000 + 20 + 300 + 5000 + 400 + 10 + 30 + 40) / CLOCK_TICKS


def test_the_aggregate_line_is_used_not_a_core() -> None:
    per_core_first = "cpu0 1 1 1 1 1 1 1 1\n" + STAT
    assert machine_cpu_times(per_core_first) == machine_cpu_times(STAT)


def test_no_aggregate_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="no aggregate cpu line"):
        machine_cpu_times("cpu0 1 2 3 4 5 6 7 8\n")


def test_this_machine_reads_and_moves_forward() -> None:
    busy, steal, total = machine_cpu()
    assert 0 <= steal <= busy <= total and total > 0
    time.sleep(0.05)  # five clock ticks at least, idle ones included
    after = machine_cpu()
    assert after.busy >= busy and after.steal >= steal and after.total > total
