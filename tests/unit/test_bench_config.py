"""The benchmark's router config (bench/router.py), with and without the
compliance rules of bench/compliance_config.py (`--without-compliance`)
and with and without the account rules of CONTRACT §6
(`--without-account-rules`), as the daemon's own parser reads it."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

from bench.compliance_config import CONTENT_PATTERNS, SENDER_RULE_COUNTRIES
from bench.router import SmsrouterSystem, config_text, scenario4_senders
from smsrouter.router.config import Config, parse_config


def _config(*, compliance: bool, account_rules: bool = True) -> Config:
    text = config_text(
        http_port=18080,
        smpp_port=12775,
        data_dir=Path("/tmp/bench-pg"),
        carrier_port=12776,
        carrier_system_id="router",
        carrier_password="secret",
        senders=scenario4_senders(short_codes=2, long_codes=2),
        admin_port=18081,
        compliance=compliance,
        account_rules=account_rules,
    )
    return parse_config(tomllib.loads(text), environ={})


def test_the_compliance_rules_are_on_by_default() -> None:
    config = _config(compliance=True)
    assert len(config.content_rules) == len(CONTENT_PATTERNS)
    assert len(config.sender_rules) == len(SENDER_RULE_COUNTRIES)
    assert config.compliance.max_per_recipient_per_hour == 1000
    assert "templated" in {a.id for a in config.accounts}


def test_without_compliance_the_account_rules_of_issue_17_stay() -> None:
    config = _config(compliance=False)
    assert config.content_rules == [] and config.sender_rules == []
    assert config.compliance.max_per_recipient_per_hour == 0
    (bench,) = config.accounts
    # Credit, a throughput plan and both daily thresholds: the rules the
    # issue 17 budget is measured with.
    assert bench.id == "bench" and bench.max_tps > 0
    assert bench.daily_alarm > 0 and bench.daily_limit > 0


def test_without_account_rules_nothing_is_charged_counted_or_throttled(tmp_path: Path) -> None:
    config = _config(compliance=False, account_rules=False)
    (bench,) = config.accounts
    assert bench.max_tps == 0 and bench.daily_alarm == 0 and bench.daily_limit == 0
    assert bench.credit_limit == 0
    assert {p.price for p in config.prices} == {Decimal("0")}
    senders = scenario4_senders(short_codes=1, long_codes=1)
    bare = SmsrouterSystem(tmp_path, senders, account_rules=False)
    assert "--idempotency-keys" not in bare.http_args()
    assert "--idempotency-keys" in SmsrouterSystem(tmp_path, senders).http_args()


def test_the_account_rules_are_priced_by_default() -> None:
    config = _config(compliance=False)
    assert {p.price for p in config.prices} == {Decimal("0.0062")}
    assert config.accounts[0].credit_limit == Decimal("10")
