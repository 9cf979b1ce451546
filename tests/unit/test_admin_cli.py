"""`smsrouter admin ...` (CONTRACT §8): the command line as requests of the
operator API, its output, and its exit codes against a real HTTP server
that answers canned operator-API answers (a stand-in for the network)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from smsrouter import admin_cli
from smsrouter.admin_cli import (
    AdminRequest,
    Answer,
    Transport,
    Unreachable,
    UsageError,
    build_request,
    cell,
    format_table,
    parse_value,
    problem_lines,
    url_of,
)
from smsrouter.cli import main, parser

TOKEN = "ops-token-0123456789abcdef012345"
A = "/admin/v1"


@pytest.fixture(autouse=True)
def _no_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own settings must not leak into what is tested.
    monkeypatch.delenv("SMSROUTER_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("SMSROUTER_ADMIN_URL", raising=False)


def args_of(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["admin", *argv])


def request_of(*argv: str, password: str | None = None) -> AdminRequest:
    return build_request(args_of(*argv), password=password)


# ---------------------------------------------------------------------------
# argv → (method, path, body), every command


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["accounts", "create", "acme"], ("POST", f"{A}/accounts", {"id": "acme"})),
        (
            ["accounts", "create", "acme", "--currency", "USD", "--credit", "10.50",
             "--set", "verified=false", "--set", "max_tps=5",
             "--set", 'allowed_ips=["10.0.0.0/8"]', "--set", "credit_limit=2.50"],
            ("POST", f"{A}/accounts",
             {"id": "acme", "currency": "USD", "credit": "10.50", "verified": False,
              "max_tps": 5, "allowed_ips": ["10.0.0.0/8"], "credit_limit": "2.50"}),
        ),
        (["accounts", "show", "acme"], ("GET", f"{A}/accounts/acme", None)),
        (["accounts", "list"], ("GET", f"{A}/accounts", None)),
        (["accounts", "list", "--limit", "20"], ("GET", f"{A}/accounts?limit=20", None)),
        (["accounts", "list", "--all"], ("GET", f"{A}/accounts?limit=500", None)),
        (["accounts", "list", "--all", "--limit", "2"], ("GET", f"{A}/accounts?limit=2", None)),
        (
            ["accounts", "list", "--after", "a/b+c="],
            ("GET", f"{A}/accounts?after=a%2Fb%2Bc%3D", None),
        ),
        (
            ["accounts", "patch", "acme", "--set", "daily_limit=1000", "--set", "timezone=Europe/Paris",
             "--set", "callback_url=", "--set", "templates_required=true", "--set", "credit_limit=5"],
            ("PATCH", f"{A}/accounts/acme",
             {"daily_limit": 1000, "timezone": "Europe/Paris", "callback_url": "",
              "templates_required": True, "credit_limit": "5"}),
        ),
        (
            ["accounts", "lock", "acme", "--reason", "unpaid invoice"],
            ("PATCH", f"{A}/accounts/acme", {"locked": True, "lock_reason": "unpaid invoice"}),
        ),
        (["accounts", "unlock", "acme"], ("PATCH", f"{A}/accounts/acme", {"locked": False})),
        (
            ["keys", "create", "acme", "--name", "web shop"],
            ("POST", f"{A}/accounts/acme/api-keys", {"name": "web shop"}),
        ),
        (
            ["keys", "create", "acme", "--name", "ci", "--expires-at", "2030-01-01T00:00:00Z"],
            ("POST", f"{A}/accounts/acme/api-keys",
             {"name": "ci", "expires_at": "2030-01-01T00:00:00Z"}),
        ),
        (["keys", "list", "acme"], ("GET", f"{A}/accounts/acme/api-keys", None)),
        (
            ["keys", "revoke", "acme", "key_0123abcd"],
            ("DELETE", f"{A}/accounts/acme/api-keys/key_0123abcd", None),
        ),
        (
            ["credit", "add", "acme", "25.000001", "--reference", "invoice 7"],
            ("POST", f"{A}/accounts/acme/credit", {"amount": "25.000001", "reference": "invoice 7"}),
        ),
        (
            ["credit", "add", "acme", "-1.50", "--reference", "goodwill"],
            ("POST", f"{A}/accounts/acme/credit", {"amount": "-1.50", "reference": "goodwill"}),
        ),
        (["ledger", "acme"], ("GET", f"{A}/accounts/acme/ledger", None)),
        (["ledger", "acme", "--limit", "5"], ("GET", f"{A}/accounts/acme/ledger?limit=5", None)),
        (
            ["numbers", "put", "+14155550100", "--account", "acme", "--type", "long_code"],
            ("PUT", f"{A}/numbers/%2B14155550100", {"account": "acme", "type": "long_code"}),
        ),
        (
            ["numbers", "put", "12345", "--account", "acme", "--type", "short_code", "--rate", "2.5"],
            ("PUT", f"{A}/numbers/12345", {"account": "acme", "type": "short_code", "rate": 2.5}),
        ),
        (["numbers", "delete", "+14155550100"], ("DELETE", f"{A}/numbers/%2B14155550100", None)),
        (["numbers", "list"], ("GET", f"{A}/numbers", None)),
        (["numbers", "list", "--all"], ("GET", f"{A}/numbers?limit=500", None)),
        (
            ["sender-ids", "put", "acme", "ACME", "--country", "AE", "SA", "--country", "QA"],
            ("PUT", f"{A}/accounts/acme/sender-ids/ACME", {"countries": ["AE", "SA", "QA"]}),
        ),
        (
            ["sender-ids", "delete", "acme", "ACME"],
            ("DELETE", f"{A}/accounts/acme/sender-ids/ACME", None),
        ),
        (["sender-ids", "list", "acme"], ("GET", f"{A}/accounts/acme/sender-ids", None)),
        (["audit"], ("GET", f"{A}/audit", None)),
        (["audit", "--limit", "10"], ("GET", f"{A}/audit?limit=10", None)),
        (["audit", "--all"], ("GET", f"{A}/audit?limit=500", None)),
    ],
)  # fmt: skip
def test_each_command_is_one_request(argv: list[str], expected: tuple[Any, ...]) -> None:
    assert request_of(*argv) == expected


def test_smpp_set_sends_the_password_it_is_given_never_one_from_argv() -> None:
    argv = ["smpp", "set", "acme", "--system-id", "acme1", "--max-binds", "4",
            "--allowed-ip", "10.0.0.0/8", "--allowed-ip", "192.0.2.7"]  # fmt: skip
    assert request_of(*argv, password="s3cr3t") == (
        "PUT",
        f"{A}/accounts/acme/smpp",
        {"system_id": "acme1", "password": "s3cr3t", "max_binds": 4,
         "allowed_ips": ["10.0.0.0/8", "192.0.2.7"]},
    )  # fmt: skip
    assert request_of(*argv[:7], password="pw").body == {
        "system_id": "acme1",
        "password": "pw",
        "max_binds": 4,
    }
    with pytest.raises(UsageError):
        request_of(*argv)  # no password read
    for refused in (["--password", "s3cr3t"], ["--password=s3cr3t"]):
        code, out, err = run(["--token", TOKEN, *argv, *refused])
        assert code == 2 and "never taken from the command line" in err
        assert "s3cr3t" not in out + err


def test_the_password_file_keeps_all_but_the_line_end(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(" pa ss\r\n")
    args = args_of("smpp", "set", "a", "--system-id", "s", "--max-binds", "1",
                   "--password-file", str(path))  # fmt: skip
    assert admin_cli.read_password(args) == " pa ss"


@pytest.mark.parametrize(
    ("segment", "quoted"),
    [
        ("+14155550100", "%2B14155550100"),
        ("ACME Bank", "ACME%20Bank"),
        ("a/b", "a%2Fb"),
        ("a?b#c", "a%3Fb%23c"),
        ("Zürich", "Z%C3%BCrich"),
        ("acme_1.x-y", "acme_1.x-y"),
    ],
)
def test_path_segments_are_url_quoted(segment: str, quoted: str) -> None:
    assert request_of("accounts", "show", segment).path == f"{A}/accounts/{quoted}"
    assert request_of("numbers", "delete", segment).path == f"{A}/numbers/{quoted}"
    assert request_of("sender-ids", "delete", segment, segment).path == (
        f"{A}/accounts/{quoted}/sender-ids/{quoted}"
    )


@pytest.mark.parametrize(
    ("field_name", "text", "value"),
    [
        ("verified", "true", True),
        ("max_tps", "5", 5),
        ("max_tps", "2.5", 2.5),
        ("allowed_ips", '["10.0.0.0/8"]', ["10.0.0.0/8"]),
        ("allowed_countries", "[]", []),
        ("timezone", "Europe/Paris", "Europe/Paris"),
        ("stop_reply", '"quoted"', "quoted"),
        ("stop_reply", "", ""),
        ("lock_reason", "null", None),
        ("credit_limit", "5", "5"),
        ("credit_limit", "2.50", "2.50"),
        ("credit_limit", "1e3", "1e3"),
        ("credit_limit", '"7.25"', "7.25"),
    ],
)
def test_set_values_are_json_when_they_parse_money_stays_a_string(
    field_name: str, text: str, value: Any
) -> None:
    parsed = parse_value(field_name, text)
    assert parsed == value and type(parsed) is type(value)


def test_set_keeps_equals_signs_of_the_value() -> None:
    body = request_of("accounts", "patch", "a", "--set", "callback_url=https://x/?a=1&b=2").body
    assert body == {"callback_url": "https://x/?a=1&b=2"}


@pytest.mark.parametrize(
    "argv",
    [
        ["accounts", "patch", "a", "--set", "verified"],
        ["accounts", "patch", "a", "--set", "=true"],
        ["accounts", "patch", "a", "--set", "verified=true", "--set", "verified=false"],
        ["accounts", "create", "a", "--set", "credit=5"],
        ["accounts", "create", "a", "--set", "id=b"],
    ],
)
def test_a_bad_set_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        request_of(*argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["accounts", "patch", "a"],  # --set required
        ["accounts", "lock", "a"],  # --reason required
        ["keys", "create", "a"],  # --name required
        ["numbers", "put", "1", "--account", "a", "--type", "landline"],
        ["numbers", "put", "1", "--account", "a", "--type", "short_code", "--rate", "fast"],
        ["accounts", "list", "--limit", "many"],
        ["smpp", "set", "a", "--system-id", "s"],  # --max-binds required
        ["credit", "add", "a", "5"],  # --reference required
        ["sender-ids", "put", "a", "ACME"],  # --country required
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    code, _, err = run(["--token", TOKEN, *argv])
    assert code == 2
    assert "usage:" in err


# ---------------------------------------------------------------------------
# Connection settings


def test_the_url_comes_from_url_then_config_then_env_then_default(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('[admin]\nlisten = "127.0.0.2:9092"\n')
    env = {"SMSROUTER_ADMIN_URL": "http://10.0.0.1:8000/"}
    assert url_of(args_of("--url", "http://h:1/", "audit"), env) == "http://h:1"
    assert url_of(args_of("--config", str(config), "audit"), env) == "http://127.0.0.2:9092"
    assert url_of(args_of("audit"), env) == "http://10.0.0.1:8000"
    assert url_of(args_of("audit"), {}) == "http://127.0.0.1:8082"


@pytest.mark.parametrize(
    ("toml", "url"),
    [
        ("", "http://127.0.0.1:8082"),
        ('[http]\nlisten = "0.0.0.0:8080"\n', "http://127.0.0.1:8082"),
        ('[admin]\nlisten = "0.0.0.0:9000"\n', "http://127.0.0.1:9000"),
        ('[admin]\nlisten = "[::]:9000"\n', "http://[::1]:9000"),
        ('[admin]\nlisten = "[::1]:9001"\n', "http://[::1]:9001"),
        ('[admin]\nlisten = "ops.internal:9002"\n', "http://ops.internal:9002"),
    ],
)
def test_the_url_of_a_config_file_is_its_admin_listen(tmp_path: Path, toml: str, url: str) -> None:
    config = tmp_path / "router.toml"
    config.write_text(toml)
    assert admin_cli.url_of_config(str(config)) == url


@pytest.mark.parametrize(
    "toml",
    ['[admin]\nlisten = "127.0.0.1:0"\n', '[admin]\nlisten = "nope"\n', "[admin\n", "admin = 5\n"],
)
def test_a_config_without_a_usable_listen_is_a_usage_error(tmp_path: Path, toml: str) -> None:
    config = tmp_path / "router.toml"
    config.write_text(toml)
    if toml == "admin = 5\n":  # not a table: the default listen
        assert admin_cli.url_of_config(str(config)) == "http://127.0.0.1:8082"
        return
    with pytest.raises(UsageError):
        admin_cli.url_of_config(str(config))


def test_options_may_follow_the_command_words(tmp_path: Path) -> None:
    args = args_of("--url", "http://before:1", "--output", "table", "accounts", "list",
                   "--url", "http://after:2")  # fmt: skip
    assert (args.url, args.output) == ("http://after:2", "table")
    args = args_of("--url", "http://before:1", "accounts", "show", "a")
    assert (args.url, args.output) == ("http://before:1", "json")


def test_the_token_comes_from_the_file_the_flag_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    env = {"SMSROUTER_ADMIN_TOKEN": "from-env"}
    assert admin_cli.token_of(args_of("--token-file", str(path), "audit"), env) == TOKEN
    assert admin_cli.token_of(args_of("--token", "flag", "audit"), env) == "flag"
    assert admin_cli.token_of(args_of("audit"), env) == "from-env"
    for argv in (["audit"], ["--token", "a", "--token-file", str(path), "audit"]):
        with pytest.raises(UsageError):
            admin_cli.token_of(args_of(*argv), {})
    path.write_text("\n")
    with pytest.raises(UsageError):
        admin_cli.token_of(args_of("--token-file", str(path), "audit"), {})


def test_no_token_exits_2_with_a_clear_message() -> None:
    code, out, err = run(["--url", "http://127.0.0.1:1", "accounts", "list"])
    assert code == 2 and out == ""
    assert "no operator token" in err and "SMSROUTER_ADMIN_TOKEN" in err


def test_an_unreadable_token_file_exits_2(tmp_path: Path) -> None:
    code, _, err = run(["--token-file", str(tmp_path / "missing"), "audit"])
    assert code == 2 and "token file" in err


# ---------------------------------------------------------------------------
# Output


ACCOUNTS = {
    "accounts": [
        {"id": "acme", "currency": "EUR", "credit": "10.50", "credit_limit": "0",
         "verified": True, "locked": False, "lock_reason": "", "allowed_ips": [],
         "smpp": None, "callback_url": "https://acme.example/dlr"},
        {"id": "globex", "currency": "USD", "credit": "0", "credit_limit": "5",
         "verified": False, "locked": True, "lock_reason": "unpaid", "allowed_ips": ["10.0.0.0/8"],
         "smpp": {"system_id": "globex", "max_binds": 2, "allowed_ips": []}},
    ],
    "next": None,
}  # fmt: skip


def test_a_list_is_a_compact_table_of_its_naming_columns() -> None:
    assert format_table(ACCOUNTS).splitlines() == [
        "id      currency  credit  credit_limit  verified  locked  lock_reason",
        "acme    EUR       10.50   0             true      false",
        "globex  USD       0       5             false     true    unpaid",
    ]


def test_ledger_and_audit_tables_show_the_columns_they_have() -> None:
    ledger = {
        "entries": [
            {"id": 2, "account": "acme", "at": "2025-01-01T00:00:01Z", "kind": "reserve",
             "amount": "-0.01", "balance": "9.99", "message_id": "m1", "messages": 1,
             "reference": None, "actor": None},
        ],
        "next": "c2",
    }  # fmt: skip
    assert format_table(ledger).splitlines() == [
        "id  at                    kind     amount  balance  message_id  messages  reference  actor",
        "2   2025-01-01T00:00:01Z  reserve  -0.01   9.99     m1          1         -          -",
    ]
    audit = {
        "entries": [
            {"id": 9, "at": "T", "actor": "ops", "action": "account.patch", "target": "acme",
             "before": {"locked": False}, "after": {"locked": True}},
        ],
        "next": None,
    }  # fmt: skip
    assert format_table(audit).splitlines()[0].split() == ["id", "at", "actor", "action", "target"]


def test_an_unknown_list_shows_every_key_and_an_object_its_fields() -> None:
    assert format_table({"things": [{"a": 1, "b": [1, 2]}, {"c": None}]}).splitlines() == [
        "a  b    c",
        "1  1,2  -",
        "-  -    -",
    ]
    assert format_table(
        {"system_id": "s", "allowed_ips": ["10.0.0.0/8", "::1/128"]}
    ).splitlines() == [
        "field        value",
        "system_id    s",
        "allowed_ips  10.0.0.0/8,::1/128",
    ]


def test_cells_are_one_line_and_compact() -> None:
    assert cell({"a": [1, "x"]}) == '{"a":[1,"x"]}'
    assert cell("two\nlines") == "two lines"
    assert cell("x" * 100) == "x" * 59 + "…"
    assert cell("x" * 100, None) == "x" * 100
    assert cell(False) == "false" and cell(None) == "-" and cell(0) == "0"


def test_problem_lines_name_status_code_detail_and_each_field() -> None:
    problem = {
        "type": "about:blank", "title": "Unprocessable", "status": 422, "code": "invalid",
        "detail": "2 fields are invalid",
        "errors": [
            {"field": "credit_limit", "code": "invalid", "detail": "a decimal string, not a JSON number"},
            {"field": "nickname", "code": "unknown_field", "detail": "unknown field"},
        ],
    }  # fmt: skip
    assert problem_lines(Answer(422, problem)) == [
        "error 422 invalid: 2 fields are invalid",
        "  credit_limit invalid: a decimal string, not a JSON number",
        "  nickname unknown_field: unknown field",
    ]
    assert problem_lines(Answer(502, "<html>Bad Gateway</html>")) == [
        "error 502 http_error: <html>Bad Gateway</html>"
    ]
    assert problem_lines(Answer(500, None)) == ["error 500 http_error: (no body)"]


# ---------------------------------------------------------------------------
# Against a real HTTP server with canned answers


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class CannedApi:
    """An HTTP server on 127.0.0.1 answering (method, path) with canned
    (status, JSON body); it records every request it reads."""

    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    delay: float = 0.0
    url: str = ""


def _handler(api: CannedApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            api.seen.append(Seen(self.command, self.path, dict(self.headers), body))
            time.sleep(api.delay)
            status, answer = api.answers.get(
                (self.command, self.path),
                (404, {"status": 404, "code": "not_found", "detail": f"no {self.path}"}),
            )
            if status == 302:
                self.send_response(302)
                self.send_header("Location", answer)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            kind = "application/json" if status < 400 else "application/problem+json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(ConnectionError):  # a client that timed out is gone
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    return Handler


@pytest.fixture
def api() -> Iterator[CannedApi]:
    canned = CannedApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(canned))
    canned.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield canned
    server.shutdown()
    server.server_close()


def run(argv: list[str]) -> tuple[int, str, str]:
    """`smsrouter admin ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["admin", *argv])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def admin(api: CannedApi, *argv: str) -> tuple[int, str, str]:
    return run(["--url", api.url, "--token", TOKEN, *argv])


def test_an_answer_is_printed_as_pretty_json(api: CannedApi) -> None:
    account = ACCOUNTS["accounts"][0]
    api.answers[("GET", f"{A}/accounts/acme")] = (200, account)
    code, out, err = admin(api, "accounts", "show", "acme")
    assert (code, err) == (0, "")
    assert json.loads(out) == account
    assert out == json.dumps(account, indent=2) + "\n"
    [seen] = api.seen
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.body is None


def test_a_body_is_sent_as_json(api: CannedApi) -> None:
    entry = {"id": 1, "kind": "top_up", "amount": "25.00", "balance": "25.00"}
    api.answers[("POST", f"{A}/accounts/acme/credit")] = (201, entry)
    code, out, _ = admin(api, "credit", "add", "acme", "25.00", "--reference", "inv 1")
    assert code == 0 and json.loads(out) == entry
    [seen] = api.seen
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.body == {"amount": "25.00", "reference": "inv 1"}


def test_a_no_content_answer_prints_nothing(api: CannedApi) -> None:
    api.answers[("DELETE", f"{A}/numbers/%2B14155550100")] = (204, None)
    assert admin(api, "numbers", "delete", "+14155550100") == (0, "", "")
    assert api.seen[0].path == f"{A}/numbers/%2B14155550100"


def test_a_problem_is_printed_on_stderr_and_exits_1(api: CannedApi) -> None:
    problem = {
        "type": "about:blank", "title": "Unprocessable Content", "status": 422,
        "code": "invalid", "detail": "1 field is invalid",
        "errors": [{"field": "timezone", "code": "invalid", "detail": "not an IANA zone"}],
    }  # fmt: skip
    api.answers[("PATCH", f"{A}/accounts/acme")] = (422, problem)
    code, out, err = admin(api, "accounts", "patch", "acme", "--set", "timezone=Mars/Base")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "error 422 invalid: 1 field is invalid",
        "  timezone invalid: not an IANA zone",
    ]


@pytest.mark.parametrize(
    ("status", "code_word"),
    [(401, "unauthorized"), (404, "not_found"), (409, "account_unverified"), (503, "store_down")],
)
def test_every_problem_status_exits_1(api: CannedApi, status: int, code_word: str) -> None:
    problem = {"status": status, "code": code_word, "detail": "said the server"}
    api.answers[("GET", f"{A}/audit")] = (status, problem)
    code, out, err = admin(api, "audit")
    assert (code, out, err) == (1, "", f"error {status} {code_word}: said the server\n")
    assert TOKEN not in err


def test_a_table_of_a_list_and_its_next_cursor(api: CannedApi) -> None:
    api.answers[("GET", f"{A}/accounts?limit=2")] = (200, {**ACCOUNTS, "next": "Y3Vy"})
    code, out, err = admin(api, "accounts", "list", "--limit", "2", "--output", "table")
    assert code == 0
    assert out.splitlines()[1].split() == ["acme", "EUR", "10.50", "0", "true", "false"]
    assert "next: Y3Vy" in err


def test_all_follows_next_cursors_and_prints_one_list(api: CannedApi) -> None:
    rows = [{"number": f"+1415555010{i}", "account": "acme", "type": "long_code", "rate": None}
            for i in range(5)]  # fmt: skip
    api.answers[("GET", f"{A}/numbers?limit=2")] = (200, {"numbers": rows[:2], "next": "c/1+"})
    api.answers[("GET", f"{A}/numbers?limit=2&after=c%2F1%2B")] = (
        200,
        {"numbers": rows[2:4], "next": "c2"},
    )
    api.answers[("GET", f"{A}/numbers?limit=2&after=c2")] = (
        200,
        {"numbers": rows[4:], "next": None},
    )
    code, out, _ = admin(api, "numbers", "list", "--all", "--limit", "2")
    assert code == 0
    assert json.loads(out) == {"numbers": rows, "next": None}
    assert len(api.seen) == 3


def test_all_starting_after_a_cursor_replaces_it_with_each_next(api: CannedApi) -> None:
    api.answers[("GET", f"{A}/audit?limit=500&after=c0")] = (
        200,
        {"entries": [{"id": 3}], "next": "c1"},
    )
    api.answers[("GET", f"{A}/audit?limit=500&after=c1")] = (
        200,
        {"entries": [{"id": 1}], "next": None},
    )
    code, out, _ = admin(api, "audit", "--all", "--after", "c0")
    assert code == 0 and json.loads(out) == {"entries": [{"id": 3}, {"id": 1}], "next": None}


def test_all_stops_at_a_failing_page_with_its_problem(api: CannedApi) -> None:
    api.answers[("GET", f"{A}/accounts/acme/ledger?limit=500")] = (
        200,
        {"entries": [{"id": 9}], "next": "gone"},
    )
    code, out, err = admin(api, "ledger", "acme", "--all")
    assert (code, out) == (1, "")
    assert err.startswith("error 404 not_found:")


def test_all_stops_when_a_cursor_comes_back(api: CannedApi) -> None:
    api.answers[("GET", f"{A}/audit?limit=500")] = (200, {"entries": [{"id": 2}], "next": "c"})
    api.answers[("GET", f"{A}/audit?limit=500&after=c")] = (
        200,
        {"entries": [{"id": 1}], "next": "c"},
    )
    code, out, _ = admin(api, "audit", "--all")
    assert code == 0 and json.loads(out)["entries"] == [{"id": 2}, {"id": 1}]


def test_keys_create_prints_the_key_once_and_never_the_token(api: CannedApi) -> None:
    created = {"key_id": "key_1", "key": "sk_shown_once", "name": "shop",
               "created_at": "2025-01-01T00:00:00Z", "expires_at": None}  # fmt: skip
    api.answers[("POST", f"{A}/accounts/acme/api-keys")] = (201, created)
    code, out, err = admin(api, "keys", "create", "acme", "--name", "shop")
    assert code == 0 and out.count("sk_shown_once") == 1
    assert TOKEN not in out + err


def test_smpp_set_sends_the_password_of_the_file_and_prints_none(
    api: CannedApi, tmp_path: Path
) -> None:
    path = tmp_path / "password"
    path.write_text("pw-8char\n")
    api.answers[("PUT", f"{A}/accounts/acme/smpp")] = (
        200,
        {"system_id": "acme", "max_binds": 2, "allowed_ips": []},
    )
    code, out, err = admin(api, "smpp", "set", "acme", "--system-id", "acme", "--max-binds", "2",
                           "--password-file", str(path))  # fmt: skip
    assert code == 0
    assert api.seen[0].body == {"system_id": "acme", "password": "pw-8char", "max_binds": 2}
    assert "pw-8char" not in out + err


def test_smpp_set_prompts_for_the_password(api: CannedApi, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts: list[str] = []

    def typed(prompt: str = "") -> str:
        prompts.append(prompt)
        return "typed-pw"

    monkeypatch.setattr(admin_cli.getpass, "getpass", typed)
    api.answers[("PUT", f"{A}/accounts/acme/smpp")] = (200, {"system_id": "s"})
    code, _, _ = admin(api, "smpp", "set", "acme", "--system-id", "s", "--max-binds", "1")
    assert code == 0 and prompts == ["SMPP password: "]
    assert api.seen[0].body["password"] == "typed-pw"


def test_a_redirect_is_not_followed_with_the_token(api: CannedApi) -> None:
    api.answers[("GET", f"{A}/audit")] = (302, api.url + "/elsewhere")
    code, out, err = admin(api, "audit")
    assert (code, out) == (1, "")
    assert err.startswith("error 302")
    assert [s.path for s in api.seen] == [f"{A}/audit"]


def test_the_url_and_token_come_from_the_environment(
    api: CannedApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSROUTER_ADMIN_URL", api.url)
    monkeypatch.setenv("SMSROUTER_ADMIN_TOKEN", TOKEN)
    api.answers[("GET", f"{A}/audit")] = (200, {"entries": [], "next": None})
    assert run(["audit"])[0] == 0
    assert api.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_connection_refused_is_one_line_and_exits_3() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    code, out, err = run(["--url", url, "--token", TOKEN, "accounts", "list"])
    assert (code, out) == (3, "")
    assert err == f"smsrouter admin: cannot reach the operator API at {url}: connection refused\n"


def test_a_timeout_is_one_line_and_exits_3(api: CannedApi, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Transport(api.url, TOKEN).timeout == 10.0
    api.delay = 1.0
    monkeypatch.setattr(admin_cli, "TIMEOUT", 0.2)
    code, out, err = admin(api, "audit")
    assert (code, out) == (3, "")
    assert err.strip().endswith("no answer (timed out)")
    assert len(err.splitlines()) == 1


def test_the_transport_raises_unreachable_for_no_answer() -> None:
    with pytest.raises(Unreachable, match="connection refused"):
        Transport(f"http://127.0.0.1:{_closed_port()}", TOKEN).send("GET", f"{A}/audit")
