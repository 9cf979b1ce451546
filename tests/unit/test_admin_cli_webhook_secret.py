"""`smsrouter admin accounts webhook-secret ...` (CONTRACT §3 rotation, §8):
each command as its request of the operator API, and the secret never taken
from argv nor printed, except one this client generated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smsrouter import admin_cli
from tests.unit.test_admin_cli import TOKEN, CannedApi, admin, api, request_of, run

__all__ = ["api"]  # a fixture, used by name

A = "/admin/v1/accounts"
STATE = {"current": "sha256:00aa11bb22cc33dd", "next": "sha256:44ee55ff66007788",
         "managed_by_config": False}  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["show", "acme"], ("GET", f"{A}/acme/webhook-secret", None)),
        (["promote", "acme"], ("POST", f"{A}/acme/webhook-secret/promote", None)),
        (["clear-next", "acme"], ("DELETE", f"{A}/acme/webhook-secret/next", None)),
        (["show", "a/b"], ("GET", f"{A}/a%2Fb/webhook-secret", None)),
    ],
)
def test_each_command_is_one_request(argv: list[str], expected: tuple[object, ...]) -> None:
    assert request_of("accounts", "webhook-secret", *argv) == expected


def test_set_next_sends_the_secret_of_the_file_and_prints_none(
    api: CannedApi, tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    path.write_text("whsec-next-0123456789\n")
    api.answers[("PUT", f"{A}/acme/webhook-secret")] = (200, STATE)
    code, out, err = admin(
        api, "accounts", "webhook-secret", "set-next", "acme", "--secret-file", str(path)
    )
    assert code == 0, err
    assert api.seen[0].body == {"next": "whsec-next-0123456789"}
    assert json.loads(out) == STATE
    assert "whsec-next-0123456789" not in out + err


def test_set_next_generate_prints_the_generated_secret_once(api: CannedApi) -> None:
    api.answers[("PUT", f"{A}/acme/webhook-secret")] = (200, STATE)
    code, out, err = admin(api, "accounts", "webhook-secret", "set-next", "acme", "--generate")
    assert code == 0, err
    sent = api.seen[0].body["next"]
    assert len(sent) >= 43  # 32 random bytes
    assert json.loads(out) == {**STATE, "next_secret": sent}
    assert out.count(sent) == 1 and TOKEN not in out + err


def test_a_refused_set_next_prints_no_generated_secret(api: CannedApi) -> None:
    problem = {"status": 409, "code": "managed_by_config", "detail": "set by the config file"}
    api.answers[("PUT", f"{A}/acme/webhook-secret")] = (409, problem)
    code, out, err = admin(api, "accounts", "webhook-secret", "set-next", "acme", "--generate")
    assert code == 1 and out == ""
    assert api.seen[0].body["next"] not in err


def test_set_next_prompts_twice_and_refuses_a_mismatch(
    api: CannedApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["typed-secret-0123456", "typed-secret-0123456", "one-0123456789abc", "two"])
    monkeypatch.setattr(admin_cli.getpass, "getpass", lambda prompt="": next(answers))
    api.answers[("PUT", f"{A}/acme/webhook-secret")] = (200, STATE)
    code, _, _ = admin(api, "accounts", "webhook-secret", "set-next", "acme")
    assert code == 0 and api.seen[0].body == {"next": "typed-secret-0123456"}
    code, out, err = admin(api, "accounts", "webhook-secret", "set-next", "acme")
    assert code == 2 and "differ" in err and len(api.seen) == 1
    assert "one-0123456789abc" not in out + err


@pytest.mark.parametrize("refused", [["--secret", "s3cr3t-value"], ["--secret=s3cr3t-value"]])
def test_a_secret_on_the_command_line_is_refused_unechoed(refused: list[str]) -> None:
    code, out, err = run(
        ["--token", TOKEN, "accounts", "webhook-secret", "set-next", "acme", *refused]
    )
    assert code == 2 and "never taken from the command line" in err
    assert "s3cr3t-value" not in out + err


def test_generate_and_a_secret_file_together_are_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("whsec-next-0123456789")
    code, _, err = run(["--url", "http://127.0.0.1:9", "--token", TOKEN, "accounts",
                        "webhook-secret", "set-next", "acme", "--generate",
                        "--secret-file", str(path)])  # fmt: skip
    assert code == 2 and "not both" in err
