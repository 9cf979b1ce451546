"""The alert rules and the Grafana dashboard under deploy/ (CONTRACT §5).

The rules go through promtool (`check rules`, then the unit tests of
alerts.test.yml); every expression of the rules and of the dashboard may
name only series that router/metrics.py's collectors expose, with labels
they carry, so that a renamed metric breaks this test rather than a
dashboard nobody looks at.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from smsrouter.router import metrics
from tests.tools import require_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "smsrouter.json"

ALERTS = {
    "SmsrouterCarrierDown",
    "SmsrouterSubmitErrorRatioHigh",
    "SmsrouterReceiptsUnmatchedRising",
    "SmsrouterQueueGrowing",
    "SmsrouterCallbacksFailing",
    "SmsrouterSenderFlagged",
    "SmsrouterAccountDailyAlarm",
}

# The series each collector type exposes, from its family name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}
_SERIES = re.compile(r"\bsmsrouter_[a-z_]+\b")
# `by (a, b)` / `without (a)` groupings and `{a="x", b!~"y"}` matchers.
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"(smsrouter_[a-z_]+)\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")


def exposed() -> dict[str, set[str]]:
    """Every series name the router's collectors expose, with its labels."""
    series: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        describe = getattr(collector, "describe", None)
        if isinstance(collector, type) or describe is None or not hasattr(collector, "collect"):
            continue
        # LoopCounter/LoopHistogram keep `labelnames`, prometheus_client's Gauge `_labelnames`.
        names = getattr(collector, "labelnames", None)
        labels = set(collector._labelnames if names is None else names)
        for family in describe():
            extra = {"le"} if family.type == "histogram" else set()
            for suffix in _SUFFIXES[family.type]:
                series[family.name + suffix] = labels | extra
    return series


def rule_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def unknown_names(expr: str, series: dict[str, set[str]]) -> list[str]:
    """Series and labels the expression names that no collector exposes."""
    names = _SERIES.findall(expr)
    wrong = [n for n in names if n not in series]
    known_labels = set().union(*(series[n] for n in names if n in series))
    for grouping in _GROUPING.findall(expr):
        wrong += [
            f"label {g}"
            for g in re.split(r"\s*,\s*", grouping.strip())
            if g and g not in known_labels
        ]
    for name, matchers in _SELECTOR.findall(expr):
        for label in _MATCHER_LABEL.findall(matchers):
            if label not in series.get(name, set()):
                wrong.append(f"{name}{{{label}}}")
    return wrong


def test_the_checker_notices_an_unknown_series_or_label() -> None:
    series = exposed()
    assert "smsrouter_outbox_backlog" in series and "smsrouter_build_info" in series
    assert series["smsrouter_submit_latency_seconds_bucket"] == {"carrier", "le"}
    assert unknown_names("rate(smsrouter_messages_sent_total[5m])", series) == [
        "smsrouter_messages_sent_total"
    ]
    assert unknown_names("sum by (account) (rate(smsrouter_callbacks_total[5m]))", series) == [
        "label account"
    ]
    assert unknown_names('smsrouter_carrier_up{route="x"}', series) == [
        "smsrouter_carrier_up{route}"
    ]
    assert (
        unknown_names(
            'sum by (carrier, le) (rate(smsrouter_submit_latency_seconds_bucket{carrier!="a"}[1m]))',
            series,
        )
        == []
    )


@pytest.mark.parametrize("alert, expr", list(rule_exprs()))
def test_each_alert_names_only_exposed_series(alert: str, expr: str) -> None:
    assert unknown_names(expr, exposed()) == [], alert


def test_every_alert_the_issue_asks_for_is_there_with_what_to_do() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert tested == ALERTS


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    promtool = require_tool("promtool", "prometheus")
    for args in (["check", "rules", RULES.name], ["test", "rules", RULE_TESTS.name]):
        run = subprocess.run(
            [promtool, *args], cwd=RULES.parent, capture_output=True, text=True, check=False
        )
        assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("title, expr", list(dashboard_exprs()))
def test_each_dashboard_panel_names_only_exposed_series(title: str, expr: str) -> None:
    assert _SERIES.search(expr), title
    assert unknown_names(expr, exposed()) == [], title


def test_dashboard_uses_a_prometheus_datasource_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_dashboard_covers_every_contract_metric() -> None:
    named = {n for _, expr in dashboard_exprs() for n in _SERIES.findall(expr)}
    for wanted in (
        "smsrouter_messages_received_total",
        "smsrouter_messages_submitted_total",
        "smsrouter_submit_errors_total",
        "smsrouter_dlr_received_total",
        "smsrouter_queue_depth",
        "smsrouter_carrier_up",
        "smsrouter_carrier_health",
        "smsrouter_submit_latency_seconds_bucket",
        "smsrouter_ingress_latency_seconds_bucket",
        "smsrouter_callbacks_total",
        "smsrouter_sender_flagged",
        "smsrouter_account_alarm",
        "smsrouter_outbox_backlog",
    ):
        assert wanted in named
