"""Config: every error with its key path, env overrides, the demo file."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from smsrouter.router.config import (
    AdminToken,
    ConfigError,
    load_config,
    parse_config,
    parse_listen,
)

ROOT = Path(__file__).resolve().parents[2]


def test_demo_config_is_valid() -> None:
    config = load_config(ROOT / "config" / "demo.toml", environ={})
    assert config.http.listen == "127.0.0.1:8080"
    assert [c.name for c in config.carriers] == ["sim-a", "sim-b"]
    assert config.routes[0].carriers[0].cost == Decimal("0.0045")
    assert config.accounts[0].smpp is not None
    assert config.rates.country["CA"]["toll_free"] == 1
    # SMPP 3.4 §5.2.2: a bind's password is at most 8 characters (smpplib
    # refuses longer, Kannel cuts it); the README names this password.
    password = config.accounts[0].smpp.password
    assert len(password) <= 8
    assert f"`{password}`" in (ROOT / "README.md").read_text()


def test_every_error_is_reported_with_its_key_path() -> None:
    raw = {
        "http": {"listen": "127.0.0.1:8080", "bogus": 1},
        "carriers": [{"name": "a", "port": "x"}, {"name": "b", "window": 0}],
        "routes": [{"prefix": "+1", "carriers": [{"name": "zz", "cost": "0.1"}]}],
        "accounts": [{"id": "x", "allowed_ips": ["not-an-ip"], "callback_url": "ftp://a"}],
        "numbers": [{"number": "+14155550101", "account": "nobody"}],
        "nonsense": {},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ={})
    paths = {path for path, _ in info.value.errors}
    assert paths == {
        "http.bogus",
        "carriers[0].port",
        "carriers[1].window",
        "routes[0].prefix",
        "routes[0].carriers[0].name",
        "accounts[0].allowed_ips[0]",
        "accounts[0].callback_url",
        "numbers[0].account",
        "nonsense",
    }


def test_environment_overrides_any_table_key() -> None:
    config = parse_config(
        {"http": {"listen": "127.0.0.1:8080"}},
        environ={
            "SMSROUTER_HTTP_LISTEN": "127.0.0.1:8081",
            "SMSROUTER_QUEUES_MAX_PER_SENDER": "5",
            "SMSROUTER_DATABASE_URL": "postgresql://u@h/db",
            "SMSROUTER_SHUTDOWN_DRAIN_SECONDS": "2.5",
        },
    )
    assert config.http.listen == "127.0.0.1:8081"
    assert config.queues.max_per_sender == 5
    assert config.database.url == "postgresql://u@h/db"
    assert config.shutdown.drain_seconds == 2.5


def test_the_admin_clients_variables_are_not_daemon_keys() -> None:
    # `smsrouter admin` reads them; the daemon started from the same shell
    # must not take them for [admin] keys it lacks.
    config = parse_config(
        {},
        environ={
            "SMSROUTER_ADMIN_TOKEN": "an-operator-token-0123",
            "SMSROUTER_ADMIN_URL": "http://127.0.0.1:8082",
            "SMSROUTER_ADMIN_LISTEN": "127.0.0.1:9092",
        },
    )
    assert config.admin.listen == "127.0.0.1:9092"


def test_bad_env_override_names_its_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({}, environ={"SMSROUTER_QUEUES_MAX_PER_SENDER": "lots"})
    assert info.value.errors[0][0] == "queues.max_per_sender"


def test_a_file_variable_holds_the_value_of_its_variable(tmp_path: Path) -> None:
    # The Docker secrets convention (CONTRACT §1): SMSROUTER_X_FILE names a
    # file whose contents are SMSROUTER_X, one trailing newline dropped.
    url, queue = tmp_path / "url", tmp_path / "queue"
    url.write_text("postgresql://u:s3cret@h/db\n")
    queue.write_text("7")
    config = parse_config(
        {},
        environ={
            "SMSROUTER_DATABASE_URL_FILE": str(url),
            "SMSROUTER_QUEUES_MAX_PER_SENDER_FILE": str(queue),
        },
    )
    assert config.database.url == "postgresql://u:s3cret@h/db"
    assert config.queues.max_per_sender == 7


def test_a_missing_file_is_an_error_naming_its_variable(tmp_path: Path) -> None:
    secret = tmp_path / "present"
    secret.write_text("postgresql://u:s3cret@h/db")
    with pytest.raises(ConfigError) as info:
        parse_config(
            {},
            environ={
                "SMSROUTER_HTTP_LISTEN_FILE": str(tmp_path / "absent"),
                "SMSROUTER_DATABASE_URL": "postgresql://u@h/db",
                "SMSROUTER_DATABASE_URL_FILE": str(secret),
            },
        )
    assert sorted(path for path, _ in info.value.errors) == [
        "SMSROUTER_DATABASE_URL_FILE",
        "SMSROUTER_HTTP_LISTEN_FILE",
    ]
    assert "s3cret" not in str(info.value.errors)


@pytest.mark.parametrize("interval", [-0.01, 1.5])
def test_status_flush_interval_out_of_range_names_its_key(interval: float) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"database": {"status_flush_interval": interval}}, environ={})
    assert [path for path, _ in info.value.errors] == ["database.status_flush_interval"]


def test_status_flush_interval_defaults_to_ten_milliseconds() -> None:
    assert parse_config({}, environ={}).database.status_flush_interval == 0.01
    zero = parse_config({"database": {"status_flush_interval": 0}}, environ={})
    assert zero.database.status_flush_interval == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:2775", ("::1", 2775)), ("h:0", ("h", 0))],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["8080", "host:", ":80", "h:99999", "a:b"])
def test_parse_listen_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(value)


def test_check_config_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[smpp]\nlisten = "nowhere"\n[[carriers]]\nname = "a"\nsessions = 0\n')
    run = subprocess.run(
        [sys.executable, "-m", "smsrouter", "check-config", str(bad)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "smpp.listen" in run.stderr
    assert "carriers[0].sessions" in run.stderr
    good = subprocess.run(
        [sys.executable, "-m", "smsrouter", "check-config", "config/demo.toml"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr


def test_simulator_entries_are_checked_by_the_simulator_under_their_key_path() -> None:
    from smsrouter import config as daemon_config

    raw = {
        "simulators": [
            {"name": "a", "port": 0},
            {"name": "b", "port": 2, "receipt_delay": "soon"},
            {"name": "c", "port": 3, "errors": {"0x58": 1, "x": 1}},
            {"name": "d", "port": 4, "receipt_forms": {"mail": 1}},
            {"name": "e", "port": 5, "receipts": {"DELIVRD": 0}},
        ],
        "carriers": [{"name": "x", "window": 0}],
    }
    with pytest.raises(ConfigError) as info:
        daemon_config.parse_config(raw, environ={})
    assert info.value.errors == [
        (
            "simulators[1]",
            "delay 'soon': expected seconds, LOW-HIGH or exp:MEAN"
            " (could not convert string to float: 'soon')",
        ),
        ("simulators[2]", "command_status 'x' is not a number like 0x58 or 88"),
        ("simulators[3]", "receipt_forms keys are text, tlv and both"),
        ("simulators[4]", "a mix needs at least one outcome with a weight above 0"),
        ("carriers[0].window", "must be at least 1"),
        ("simulators[0].port", "must be 1..65535"),
    ]
    # The router's own loader reads the keys; their forms are the simulator's.
    del raw["carriers"]
    raw["simulators"] = raw["simulators"][1:]
    assert len(parse_config(raw, environ={}).simulators) == 4


def test_check_config_cli_reports_a_bad_simulator(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[simulators]]\nname = "s"\nport = 2776\nresp_latency = "exp:0"\n')
    run = subprocess.run(
        [sys.executable, "-m", "smsrouter", "check-config", str(bad)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "simulators[0]: delay 'exp:0'" in run.stderr
    assert "an exponential delay needs a mean > 0" in run.stderr


def test_a_negative_account_throughput_plan_names_its_key() -> None:
    raw = {"accounts": [{"id": "a"}, {"id": "b", "max_tps": -1}]}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ={})
    assert [path for path, _ in info.value.errors] == ["accounts[1].max_tps"]
    assert (
        parse_config({"accounts": [{"id": "a", "max_tps": 2.5}]}, environ={}).accounts[0].max_tps
        == 2.5
    )


def test_a_negative_credit_limit_names_its_key() -> None:
    raw = {"accounts": [{"id": "a", "credit_limit": "-1"}]}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ={})
    assert [path for path, _ in info.value.errors] == ["accounts[0].credit_limit"]


def test_daily_thresholds_and_their_time_zone_name_their_keys() -> None:
    raw = {
        "accounts": [
            {"id": "a", "daily_limit": -1, "daily_alarm": -2, "timezone": "Mars/Olympus"},
            {"id": "b", "alert_url": "ftp://x"},
            {
                "id": "c",
                "daily_limit": 10,
                "timezone": "Asia/Tokyo",
                "alert_url": "https://ops.example/a",
            },
        ]
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ={})
    assert sorted(path for path, _ in info.value.errors) == [
        "accounts[0].daily_alarm",
        "accounts[0].daily_limit",
        "accounts[0].timezone",
        "accounts[1].alert_url",
    ]


def test_price_plans_are_checked_and_an_account_names_an_existing_one() -> None:
    raw = {
        "price_plans": [
            {
                "name": "w",
                "prices": [{"prefix": "1", "price": "0.005"}, {"prefix": "1", "price": "0.004"}],
            },
            {"name": "w", "prices": [{"prefix": "+44", "price": "-1"}]},
        ],
        "accounts": [{"id": "a", "price_plan": "w"}, {"id": "b", "price_plan": "retail"}],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ={})
    assert sorted(path for path, _ in info.value.errors) == [
        "accounts[1].price_plan",
        "price_plans[0].prices[1].prefix",
        "price_plans[1].name",
        "price_plans[1].prices[0].prefix",
        "price_plans[1].prices[0].price",
    ]
    ok = parse_config(
        {
            "price_plans": [{"name": "w", "prices": [{"prefix": "1", "price": "0.005"}]}],
            "accounts": [{"id": "a", "price_plan": "w"}],
        },
        environ={},
    )
    assert ok.accounts[0].price_plan == "w" and ok.price_plans[0].prices[0].price == Decimal(
        "0.005"
    )


def test_account_fields_are_the_keys_each_accounts_table_sets(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[accounts]]\nid = "a"\napi_keys = ["k-a"]\ncredit = "5"\nverified = true\n'
        'smpp = { system_id = "a", password = "p" }\n\n'
        '[[accounts]]\nid = "b"\nmax_tps = 0\n',
        encoding="utf-8",
    )
    config = load_config(path, environ={})
    # A key set to its default value is still set by the file.
    assert config.account_fields == {
        "a": frozenset({"id", "api_keys", "credit", "verified", "smpp"}),
        "b": frozenset({"id", "max_tps"}),
    }
    assert parse_config({}, environ={}).account_fields == {}


def test_admin_section_defaults_and_tokens() -> None:
    default = parse_config({}, environ={})
    assert default.admin.listen == "127.0.0.1:8082" and default.admin.tokens == []
    config = parse_config(
        {
            "admin": {
                "listen": "0.0.0.0:9000",
                "tokens": [{"name": "ops", "token": "0123456789abcdef"}],
            }
        },
        environ={},
    )
    assert config.admin.listen == "0.0.0.0:9000"
    assert config.admin.tokens == [AdminToken(name="ops", token="0123456789abcdef")]
    # The token is a secret: a repr of the config (a debug log) must not show it.
    assert "0123456789abcdef" not in repr(config)


def test_admin_listen_can_come_from_the_environment() -> None:
    config = parse_config({}, environ={"SMSROUTER_ADMIN_LISTEN": "127.0.0.1:18082"})
    assert config.admin.listen == "127.0.0.1:18082"


def test_admin_errors_name_their_keys() -> None:
    raw = {
        "admin": {
            "listen": "nowhere",
            "tokens": [
                {"name": "ops", "token": "0123456789abcdef"},
                {"name": "ops", "token": "fedcba9876543210"},
                {"name": "", "token": "0123456789abcdeX"},
                {"name": "short", "token": "0123456789abcde"},
            ],
        }
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ={})
    assert sorted(path for path, _ in info.value.errors) == [
        "admin.listen",
        "admin.tokens[1].name",
        "admin.tokens[2].name",
        "admin.tokens[3].token",
    ]
    # An error message never repeats a token.
    assert "0123456789abcde" not in str(info.value)


def test_an_admin_token_without_its_token_names_the_entry() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"admin": {"tokens": [{"name": "ops"}]}}, environ={})
    assert [path for path, _ in info.value.errors] == ["admin.tokens[0]"]


def test_compliance_keys_name_their_errors() -> None:
    """CONTRACT §6's keys: a country that is no ISO 3166 code ("UK" is GB),
    a country with two sender rules, a pattern the linear-time engine
    cannot run (a backreference), rates out of range: each names its key."""
    raw = {
        "compliance": {
            "opt_out_flag_rate": 0.2,
            "opt_out_suspend_rate": 0.1,
            "opt_out_min_recipients": 0,
            "max_per_recipient_per_hour": -1,
            "protected_sender_ids": ["APPLE", " "],
        },
        "sender_rules": [
            {"country": "US", "alphanumeric": "refused"},
            {"country": "UK"},
            {"country": "US"},
            {"country": "AE", "numeric": "refused"},
        ],
        "content_rules": [
            {"name": "ok", "pattern": "(?i)bit\\.ly/"},
            {"name": "backref", "pattern": "(a)\\1", "action": "flag"},
            {"name": "ok", "pattern": "x", "countries": ["XX"]},
            {"name": "lookahead", "pattern": "a(?=b)", "kinds": ["marketing"]},
        ],
        "accounts": [
            {
                "id": "a",
                "allowed_countries": ["US", "UK"],
                "sender_ids": [
                    {"id": "ACME", "countries": []},
                    {"id": "ACME", "countries": ["AE"]},
                ],
            }
        ],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ={})
    assert sorted(path for path, _ in info.value.errors) == [
        "accounts[0].allowed_countries[1]",
        "accounts[0].sender_ids[0].countries",
        "accounts[0].sender_ids[1].id",
        "compliance.max_per_recipient_per_hour",
        "compliance.opt_out_flag_rate",
        "compliance.opt_out_min_recipients",
        "compliance.protected_sender_ids[1]",
        "content_rules[1].pattern",
        "content_rules[2].countries[0]",
        "content_rules[2].name",
        "content_rules[3].kinds[0]",
        "sender_rules[1].country",
        "sender_rules[2].country",
        "sender_rules[3].numeric",
    ]
    messages = dict(info.value.errors)
    assert "RE2" in messages["content_rules[1].pattern"]


def test_a_lookahead_pattern_is_refused_naming_its_key(tmp_path: Path) -> None:
    """check-config refuses a pattern RE2 cannot compile, naming the key."""
    config = tmp_path / "c.toml"
    config.write_text('[[content_rules]]\nname = "la"\npattern = "a(?=b)"\n')
    with pytest.raises(ConfigError) as info:
        load_config(config, environ={})
    assert [path for path, _ in info.value.errors] == ["content_rules[0].pattern"]


def test_compliance_keys_are_taken_as_written() -> None:
    config = parse_config(
        {
            "compliance": {"max_per_recipient_per_hour": 5, "protected_sender_ids": ["PAYPAL"]},
            "sender_rules": [{"country": "AE", "alphanumeric": "registered"}],
            "content_rules": [{"name": "s", "pattern": "bit\\.ly", "action": "flag"}],
            "accounts": [
                {
                    "id": "a",
                    "allowed_countries": ["AE"],
                    "sender_ids": [{"id": "ACME", "countries": ["AE", "SA"]}],
                    "stop_reply": "Bye",
                    "templates_required": True,
                }
            ],
        },
        environ={},
    )
    assert config.compliance.max_per_recipient_per_hour == 5
    assert config.sender_rules[0].alphanumeric == "registered"
    assert config.sender_rules[0].numeric == "allowed"
    assert config.content_rules[0].action == "flag"
    account = config.accounts[0]
    assert account.sender_ids[0].countries == ["AE", "SA"]
    assert (account.stop_reply, account.templates_required) == ("Bye", True)
