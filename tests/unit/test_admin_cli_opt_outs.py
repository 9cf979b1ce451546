"""`smsrouter admin opt-outs ...` (CONTRACT §6, §8): the command lines, the
import's chunks of a file and the totals added up over its requests."""

from __future__ import annotations

import argparse

import pytest

from smsrouter.admin_cli import (
    ImportTotals,
    UsageError,
    build_request,
    import_chunks,
    opt_outs_import_path,
)
from smsrouter.cli import parser

A = "/admin/v1"


def args_of(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["admin", *argv])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["opt-outs", "list", "acme"], ("GET", f"{A}/opt-outs?account=acme", None)),
        (
            ["opt-outs", "list", "a/b", "--limit", "20", "--after", "k+/="],
            ("GET", f"{A}/opt-outs?account=a%2Fb&limit=20&after=k%2B%2F%3D", None),
        ),
        (["opt-outs", "list", "acme", "--all"], ("GET", f"{A}/opt-outs?account=acme&limit=500", None)),
    ],
)  # fmt: skip
def test_list_is_one_request_of_the_operators_list(
    argv: list[str], expected: tuple[object, ...]
) -> None:
    assert build_request(args_of(*argv)) == expected


def test_import_takes_an_account_and_a_file() -> None:
    args = args_of("opt-outs", "import", "acme", "list.txt", "--output", "table")
    assert (args.admin_action, args.account, args.file, args.output) == (
        "opt-outs import",
        "acme",
        "list.txt",
        "table",
    )
    assert opt_outs_import_path("a/b") == f"{A}/accounts/a%2Fb/opt-outs/import"


@pytest.mark.parametrize(
    "argv",
    [["opt-outs", "import", "acme"], ["opt-outs", "list"], ["opt-outs", "remove", "acme"]],
)
def test_an_incomplete_command_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        args_of(*argv)
    assert exited.value.code == 2


def test_a_file_goes_in_chunks_that_keep_their_place_in_it() -> None:
    lines = [f"+1415555{i:04d}\r\n" for i in range(7)]
    chunks = list(import_chunks(lines, size=3))
    assert [before for before, _ in chunks] == [0, 3, 6]
    assert chunks[0][1] == "+14155550000\n+14155550001\n+14155550002\n"
    assert chunks[2][1] == "+14155550006\n"
    assert list(import_chunks([], size=3)) == []
    assert [b for b, _ in import_chunks(lines[:6], size=3)] == [0, 3]  # no empty last chunk


def test_totals_add_up_and_invalid_lines_are_numbered_in_the_file() -> None:
    totals = ImportTotals()
    totals.add(0, {"received": 3, "added": 2, "invalid": [{"line": 2, "value": "x"}]})
    totals.add(
        50_000,
        {"received": 4, "added": 1, "invalid": [{"line": 1, "value": "y"}], "invalid_count": 3},
    )
    assert totals.as_json() == {
        "received": 7,
        "added": 3,
        "invalid": [{"line": 2, "value": "x"}, {"line": 50_001, "value": "y"}],
        "invalid_count": 4,
        "requests": 2,
    }


def test_the_invalid_lines_shown_are_the_first_hundred() -> None:
    totals = ImportTotals()
    for chunk in range(3):
        shown = [{"line": n, "value": "bad"} for n in range(1, 61)]
        totals.add(chunk * 100, {"received": 60, "added": 0, "invalid": shown})
    assert len(totals.invalid) == 100
    assert totals.invalid[-1]["line"] == 100 + 40
    assert totals.invalid_count == 180


def test_usage_error_is_the_import_files_error() -> None:
    from smsrouter.admin_cli import _open_list

    with pytest.raises(UsageError, match="cannot read"):
        _open_list("/nonexistent/list.txt")
