"""What the bench reports from several rounds (bench/report.py): each
system's median run in the tables, ratios and targets, and every round's
figures beside them."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from bench import report
from bench.router import measured_version
from bench.suite import SuiteResult

ROOT = Path(__file__).resolve().parents[2]

JASMIN_NOTE = "no receipts: see its issue"


def _run(system: str, scenario: str, rate: float, round_: int, **extra: Any) -> dict[str, Any]:
    return {
        "bench": scenario,
        "system": system,
        "round": round_,
        "accepted": 1000,
        "accepted_per_s": rate,
        report.RATE: rate,
        "receipts_matched": 1000,
        "receipts_per_s": rate,
        "latency_p50_ms": 10.0,
        "latency_p99_ms": 1000.0 / rate,
        "cpu_ms_per_msg": 1.0 / rate,
        "machine_busy_pct": 80.0,
        **extra,
    }


def _three_rounds() -> list[dict[str, Any]]:
    # The systems take turns: smsrouter, kannel, jasmin, round after round.
    ours, kannel, jasmin = [300.0, 100.0, 200.0], [100.0, 100.0, 50.0], [2.0, 4.0, 3.0]
    records = []
    for n in range(3):
        records.append(_run("smsrouter", "scenario1", ours[n], n + 1))
        records.append(_run("kannel", "scenario1", kannel[n], n + 1))
        records.append(_run("jasmin", "scenario1", jasmin[n], n + 1, notes=[JASMIN_NOTE]))
    return records


def test_the_median_run_stands_for_a_system() -> None:
    records = _three_rounds()
    assert report._find(records, "scenario1", "smsrouter")[report.RATE] == 200.0  # type: ignore[index]
    assert report._find(records, "scenario1", "jasmin")[report.RATE] == 3.0  # type: ignore[index]
    # Of two, the lower one; of one, that one; of none, nothing.
    two = [_run("kannel", "scenario2", r, n) for n, r in enumerate([5.0, 9.0], 1)]
    assert report._find(two, "scenario2", "kannel")[report.RATE] == 5.0  # type: ignore[index]
    assert report._find(two[1:], "scenario2", "kannel")[report.RATE] == 9.0  # type: ignore[index]
    assert report._find(records, "scenario2", "smsrouter") is None


def test_tables_show_one_row_per_system_its_median_run() -> None:
    cells = report.scenario_tables(_three_rounds())["scenario1"]
    assert [row[0] for row in cells[1:]] == ["smsrouter", "kannel", "jasmin"]
    rate_column = [title for _, title in report.THROUGHPUT_COLUMNS].index("submit_sm/s at carrier")
    assert [row[rate_column] for row in cells[1:]] == ["200.0", "100.0", "3.000"]


def test_ratios_and_targets_come_from_the_medians_and_rounds_pair_up() -> None:
    records = _three_rounds()
    rows = {r["peer"]: r for r in report.ratios(records)}
    assert rows["kannel"]["msg_per_s"] == 2.0  # 200 / 100
    assert rows["jasmin"]["msg_per_s"] == 66.67  # 200 / 3
    assert rows["kannel"]["msg_per_s_by_round"] == [3.0, 1.0, 4.0]
    assert rows["jasmin"]["msg_per_s_by_round"] == [150.0, 25.0, 66.67]
    targets = {t["target"]: t for t in report.targets(records)}
    assert targets["scenario 1 msg/s >= 2x Kannel"]["met"] is True
    assert targets["scenario 1 msg/s >= 2x Kannel"]["smsrouter"] == 200.0
    assert targets["scenario1 msg/s >= 50x Jasmin"]["needed"] == 150.0


def test_one_round_reports_as_before() -> None:
    records = [_run(s, "scenario1", r, 1) for s, r in (("smsrouter", 10.0), ("kannel", 5.0))]
    for r in records:
        del r["round"]
    (row,) = report.ratios(records)
    assert row["msg_per_s"] == 2.0 and "msg_per_s_by_round" not in row
    assert report.round_notes(records, "scenario1") == []


def test_the_results_page_lists_every_round_and_each_note_once() -> None:
    result = SuiteResult(records=_three_rounds())
    page, raw = report.results_markdown(result, ["all", "--rounds", "3"]).split("## JSON lines")
    assert page.count(JASMIN_NOTE) == 1
    assert raw.count(JASMIN_NOTE) == 3  # every record as it was, below
    assert "smsrouter: median of 3 rounds; msg/s at the carrier by round: 300.0, 100.0, 200.0" in (
        page
    )
    assert "scenario1, kannel: msg/s by round 3.000, 1.000, 4.000" in page
    assert "`python -m bench all --rounds 3`" in page


def test_the_version_reported_is_the_one_measured(tmp_path: Path) -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        assert measured_version(None) == tomllib.load(f)["project"]["version"]
    # A build's own metadata, whatever is installed or left in the checkout.
    dist = tmp_path / "smsrouter-9.8.7.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: smsrouter\nVersion: 9.8.7\n")
    assert measured_version(tmp_path) == "9.8.7"
    assert measured_version(tmp_path / "empty") == "?"


def _with_cpu(record: dict[str, Any], router: float, postgres: float, tools: float) -> None:
    """CPU seconds of a run of 1,000 carrier submits: per message, ms = s."""
    record.update(
        carrier_submits=1000,
        cpu_by_part={"router": router, "postgres": postgres},
        client_cpu_s=tools * 0.75,
        carrier_cpu_s=tools * 0.25,
    )


def test_each_rate_target_shows_what_it_leaves_per_message_on_the_cores() -> None:
    ours = _run("smsrouter", "scenario1", 2000.0, 1)
    kannel = _run("kannel", "scenario1", 1000.0, 1)
    smpp = _run("smsrouter", "scenario2", 3000.0, 1)
    _with_cpu(ours, router=0.3, postgres=0.1, tools=0.2)
    _with_cpu(smpp, router=0.25, postgres=0.4, tools=0.05)
    rows = {r["target"]: r for r in report.cpu_budgets([ours, kannel, smpp], cores=2)}
    # 2x Kannel = 2,000 msg/s: 1 ms per message from two cores, 0.2 to the
    # tools, 0.8 left against 0.4 spent; one router process tops at 3,333/s.
    twice = rows["scenario 1 msg/s >= 2x Kannel"]
    assert (twice["machine_ms"], twice["tools_ms"], twice["left_ms"]) == (1.0, 0.2, 0.8)
    assert (twice["smsrouter_ms"], twice["postgres_ms"]) == (0.4, 0.1)
    assert twice["one_process_per_s"] == 3333.3
    assert twice["verdict"] == "yes"
    # 5x Kannel = 5,000 msg/s: 0.4 ms, 0.35 left, under what PostgreSQL spends.
    five = rows["scenario 2 msg/s >= 5x Kannel scenario 1"]
    assert five["left_ms"] == 0.35
    assert five["verdict"] == "no: less than PostgreSQL alone spends now (0.400 ms)"

    # At 4x Kannel: 0.5 ms, 0.3 left against 0.4 spent, and past one core.
    ours[report.RATE] = kannel[report.RATE] = 1000.0
    _with_cpu(ours, router=0.3, postgres=0.1, tools=0.2)
    kannel[report.RATE] = 2000.0
    (twice,) = [r for r in report.cpu_budgets([ours, kannel], cores=2) if "2x" in r["target"]]
    assert twice["needed"] == 4000.0 and twice["left_ms"] == 0.3
    assert (
        twice["verdict"]
        == "only with 25% less CPU per message and the router on more than one core"
    )


def test_the_results_page_has_the_cpu_budget_table() -> None:
    ours, kannel = _run("smsrouter", "scenario1", 2000.0, 1), _run("kannel", "scenario1", 1000.0, 1)
    _with_cpu(ours, router=0.3, postgres=0.1, tools=0.2)
    page = report.results_markdown(SuiteResult(records=[ours, kannel]), ["all"])
    assert "What each rate target leaves per message on this machine's" in page
    _target_row, budget_row = (
        line for line in page.splitlines() if line.startswith("| scenario 1 msg/s >= 2x")
    )
    assert budget_row.count("|") == len(report.BUDGET_COLUMNS) + 1
    assert budget_row.endswith("| 0.400 | 0.100 | 3,333.3 | yes |")


def test_a_run_keeps_the_before_and_after_section() -> None:
    from bench.report import CHANGES_HEADING, kept_changes

    previous = (
        "# Benchmark results\n\n## scenario1\n\n| a |\n\n" + CHANGES_HEADING + "\n\n### x\n\nrow\n"
    )
    assert kept_changes(previous) == CHANGES_HEADING + "\n\n### x\n\nrow\n"
    assert kept_changes("# Benchmark results\n\n## scenario1\n") == ""
