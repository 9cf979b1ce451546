"""The pure parts of PostgreSQL's ceiling bench (bench/pg_ceiling.py): the
figures from two readings, the arithmetic to a primary, the traffic it
stores, its options."""

from __future__ import annotations

import pytest

from bench.pg_ceiling import (
    Options,
    Snapshot,
    Traffic,
    account_ids,
    account_of,
    ceiling,
    figures,
    parse_args,
)
from bench.procs import MachineCpu


def _snapshot(**kw: object) -> Snapshot:
    base: dict[str, object] = {
        "at": 100.0,
        "completed": 0,
        "flushes": 0,
        "insert_seconds": 0.0,
        "status_seconds": 0.0,
        "pg_cpu": 10.0,
        "driver_cpu": 5.0,
        "machine": MachineCpu(busy=50.0, steal=0.0, total=200.0),
        "wal_lsn": 1_000_000,
        "wal_records": 1000,
        "wal_fpi": 10,
        "wal_fsyncs": 100,
        "checkpoints": 3,
    }
    base.update(kw)
    return Snapshot(**base)  # type: ignore[arg-type]


def test_figures_are_per_message_and_per_second_over_the_window() -> None:
    before = _snapshot()
    after = _snapshot(
        at=110.0,
        completed=20_000,
        flushes=1_000,
        insert_seconds=2.0,
        status_seconds=4.0,
        pg_cpu=12.0,  # 2 s of PostgreSQL
        driver_cpu=6.0,  # 1 s of the driver
        machine=MachineCpu(busy=60.0, steal=0.0, total=220.0),
        wal_lsn=1_000_000 + 60_000_000,
        wal_records=1000 + 400_000,
        wal_fpi=10 + 200,
        wal_fsyncs=100 + 500,
        checkpoints=3,
    )
    f = figures(before, after, cores=2)
    assert f["msg_per_s"] == 2000.0
    assert f["flushes_per_s"] == 100.0
    assert f["messages_per_flush"] == 20.0
    assert f["pg_cpu_ms_per_msg"] == 0.1
    assert f["driver_cpu_ms_per_msg"] == 0.05
    assert f["pg_cores_busy"] == 0.2
    assert f["machine_busy_share"] == 0.5
    # 10 s of busy cores, 2 of PostgreSQL, 1 of the driver: 7 of others.
    assert f["others_cores_busy"] == 0.7
    assert f["wal_bytes_per_msg"] == 3000
    assert f["wal_mb_per_s"] == 6.0
    assert f["wal_records_per_msg"] == 20.0
    assert f["wal_fpi_per_msg"] == 0.01
    assert f["commits_per_wal_fsync"] == 2.0
    # 500 inserts and 500 status flushes.
    assert f["insert_commit_ms"] == 4.0
    assert f["status_commit_ms"] == 8.0
    assert f["checkpoints"] == 0


def test_figures_of_a_server_elsewhere_leave_its_cpu_out() -> None:
    f = figures(_snapshot(pg_cpu=None), _snapshot(at=101.0, completed=10, pg_cpu=None), cores=2)
    assert f["pg_cpu_ms_per_msg"] is None
    assert f["others_cores_busy"] is None
    assert f["driver_cpu_ms_per_msg"] == 0.0


def test_figures_of_an_empty_window_divide_by_nothing() -> None:
    f = figures(_snapshot(), _snapshot(at=101.0, wal_fsyncs=None), cores=2)
    assert f["msg_per_s"] == 0.0
    assert f["pg_cpu_ms_per_msg"] is None
    assert f["wal_bytes_per_msg"] is None
    assert f["commits_per_wal_fsync"] is None


def test_ceiling_arithmetic() -> None:
    c = ceiling(0.1, cores=32, usable=0.75, target=100_000)
    # One core: 1000 / 0.1 ms = 10,000 msg/s; 32 cores at 75 %: 240,000.
    assert c["msg_per_s_per_core"] == 10_000
    assert c["msg_per_s_per_primary"] == 240_000
    assert c["cores_for_target"] == pytest.approx(13.3)
    assert c["primaries_for_target"] == pytest.approx(0.42)


def test_one_account_is_scenario_ones_and_more_are_shared_out() -> None:
    assert {account_of(w, 1) for w in range(8)} == {"bench"}
    assert [account_of(w, 3) for w in range(6)] == [f"bench-{w % 3}" for w in range(6)]
    assert account_ids(3) == ["bench-0", "bench-1", "bench-2"]


def test_traffic_is_one_message_per_request_each_with_its_key() -> None:
    traffic, other = Traffic(0, "bench"), Traffic(1, "bench")
    ops = traffic.requests(5) + traffic.requests(5)
    assert all(len(op.messages) == 1 and op.answer is not None for op in ops)
    assert len({op.messages[0].id for op in ops}) == 10
    assert len({op.answer.key for op in ops if op.answer}) == 10
    assert len({op.messages[0].recipient for op in ops}) == 10
    m = ops[0].messages[0]
    assert (m.account_id, m.ingress, m.parts, m.callback_url is not None) == (
        "bench", "http", 1, True,
    )  # fmt: skip
    assert ops[0].answer is not None and str(m.id).encode() in ops[0].answer.body
    ids = {traffic.carrier_id() for _ in range(100)} | {other.carrier_id() for _ in range(100)}
    assert len(ids) == 200


def test_options() -> None:
    assert parse_args([]) == (Options(), None)
    options, dsn = parse_args(
        [
            "--writers",
            "8",
            "--batch",
            "128",
            "--synchronous-commit",
            "off",
            "--dsn",
            "postgresql://x",
        ]
    )
    assert (options.writers, options.batch, options.synchronous_commit) == (8, 128, "off")
    assert dsn == "postgresql://x"
    with pytest.raises(SystemExit):
        parse_args(["--writers", "0"])
