"""What the compiled build (setup.py, build_backend/) compiles, how the
build is cached (bench/compiled.py), and the rules the compiled modules
keep so that they run as their sources do.

The build itself, and the router running from it, are proved end to end in
tests/e2e/test_compiled_build.py.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "build_backend"))

import smsrouter_build  # noqa: E402

import setup  # noqa: E402  (the project's setup.py: the root is on sys.path)
from bench import compiled  # noqa: E402


def _compiled() -> list[str]:
    return setup.compiled_modules(ROOT)


def _trees() -> list[tuple[str, ast.Module]]:
    return [(path, ast.parse((ROOT / path).read_text(), path)) for path in _compiled()]


def test_every_module_of_the_packages_is_compiled_or_named_as_kept() -> None:
    compiled = set(_compiled())
    everything = {
        p.relative_to(ROOT).as_posix() for pkg in setup.PACKAGES for p in (ROOT / pkg).rglob("*.py")
    }
    # Each module kept interpreted exists, too: a renamed one would be
    # compiled silently under its new name.
    assert compiled | setup.INTERPRETED == everything
    assert not compiled & setup.INTERPRETED
    assert {
        "smsrouter/router/store/group_commit.py",
        "smsrouter/router/store/operations.py",
        "smsrouter/router/store/writes.py",
        "smsrouter/connectors/smpp/codec.py",
        "smsrouter/router/engine.py",
    } <= compiled
    assert _compiled() == sorted(compiled)


def test_msgspec_structs_live_only_in_interpreted_modules() -> None:
    # msgspec reads a Struct's fields from its class annotations, which a
    # compiled class does not keep.
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                assert not bases & {"msgspec.Struct", "Struct"}, f"{path}: {node.name}"


# Methods run for every message whose callbacks must not be closures:
# compiled, a function nested in another keeps the frame it closes over in
# an object that keeps the function, a reference cycle per call that only
# the cycle collector frees (bench/PROFILING.md, round 14).
PER_MESSAGE = (
    "smsrouter/connectors/http_api.py:HttpApi.send",
    "smsrouter/connectors/smpp_server.py:PartnerSmsc._submit_sm",
    "smsrouter/connectors/carriers.py:CarrierBinds.on_request",
    "smsrouter/router/intake.py:Intake.accept_one",
    "smsrouter/router/engine.py:DeliveryEngine.receipt",
    "smsrouter/router/notifications.py:Dispatcher._record",
)


@pytest.mark.parametrize("entry", PER_MESSAGE)
def test_per_message_methods_define_no_closures(entry: str) -> None:
    path, qualname = entry.split(":")
    class_name, method = qualname.split(".")
    tree = ast.parse((ROOT / path).read_text(), path)
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    assert classes, entry
    methods = [
        n
        for n in classes[0].body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == method
    ]
    assert methods, entry
    nested = [
        n.name if not isinstance(n, ast.Lambda) else "lambda"
        for n in ast.walk(methods[0])
        if n is not methods[0]
        and isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
    ]
    assert nested == [], f"{entry} defines {nested}"


def _written_out_inits() -> list[type]:
    classes = []
    for entry in setup.COMPILED_INITS:
        path, name = entry.split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        classes.append(getattr(module, name))
    return classes


@pytest.mark.parametrize("cls", _written_out_inits(), ids=lambda c: c.__name__)
def test_a_written_out_init_takes_the_fields_in_order_with_their_defaults(cls: type) -> None:
    # The dataclass decorator leaves an __init__ of the class's own alone: a
    # field added without it would never be set.
    assert dataclasses.is_dataclass(cls) and "__init__" in vars(cls)
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in fields]
    for f, p in zip(fields, params, strict=True):
        if f.default is not dataclasses.MISSING:
            assert p.default == f.default, f.name
        elif f.default_factory is not dataclasses.MISSING:
            assert p.default is None, f.name
        else:
            assert p.default is inspect.Parameter.empty, f.name
    # Each argument lands in its own field ...
    given = {f.name: object() for f in fields}
    made = cls(**given)
    assert {f.name: getattr(made, f.name) for f in fields} == given
    # ... and the defaults are the fields' own, a fresh one from a factory.
    required = {
        f.name: given[f.name] for f, p in zip(fields, params, strict=True) if p.default is p.empty
    }
    one, two = cls(**required), cls(**required)
    for f in fields:
        if f.default is not dataclasses.MISSING:
            assert getattr(one, f.name) == f.default, f.name
        elif f.default_factory is not dataclasses.MISSING:
            assert getattr(one, f.name) == f.default_factory(), f.name
            assert getattr(one, f.name) is not getattr(two, f.name), f.name


def test_the_written_out_inits_cover_the_pdus_of_every_message() -> None:
    from smsrouter.connectors.smpp import pdu

    for cls in (pdu.SubmitSm, pdu.DeliverSm, pdu.SubmitSmResp, pdu.DeliverSmResp):
        assert "__init__" not in vars(cls) and cls.__init__ in {
            c.__init__ for c in _written_out_inits()
        }
        # A layout's subclass stays a dataclass of the same fields, and its
        # command_id stays a class constant.
        assert [f.name for f in dataclasses.fields(cls)][-1] == "tlvs"
        assert "command_id" not in {f.name for f in dataclasses.fields(cls)}
    assert pdu.SubmitSm(sequence_number=2) != pdu.DeliverSm(sequence_number=2)
    assert repr(pdu.DeliverSmResp(0, 7)).startswith("DeliverSmResp(command_status=0")


def awaits_in_except_clauses(path: str, tree: ast.Module) -> list[str]:
    awaits = (ast.Await, ast.AsyncFor, ast.AsyncWith)
    found = []
    for handler in (n for n in ast.walk(tree) if isinstance(n, ast.ExceptHandler)):
        for stmt in handler.body:
            found += [f"{path}:{n.lineno}" for n in ast.walk(stmt) if isinstance(n, awaits)]
    return found


def except_names_of_two_types(path: str, tree: ast.Module) -> list[str]:
    clashes = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        types: dict[str, set[str]] = {}
        for h in ast.walk(fn):
            if isinstance(h, ast.ExceptHandler) and h.name is not None:
                caught = ast.unparse(h.type) if h.type is not None else "BaseException"
                types.setdefault(h.name, set()).add(caught)
        clashes += [f"{path}:{fn.name} {n}" for n, t in types.items() if len(t) > 1]
    return clashes


def test_compiled_code_never_awaits_in_an_except_clause() -> None:
    # A compiled coroutine suspended in an except clause leaves its exception
    # as the one being handled for everything else the loop runs meanwhile:
    # every exception raised then gets it as __context__.
    assert [hit for path, tree in _trees() for hit in awaits_in_except_clauses(path, tree)] == []


def test_an_except_name_is_bound_to_one_type_per_function() -> None:
    # A compiled function gives a local one type: `except A as exc` then
    # `except B as exc` checks a B against A, and raises TypeError.
    assert [hit for path, tree in _trees() for hit in except_names_of_two_types(path, tree)] == []


def test_the_guards_see_what_they_look_for() -> None:
    bad = ast.parse(
        "async def f():\n"
        "    try:\n        pass\n"
        "    except KeyError as exc:\n        await g()\n"
        "    except ValueError as exc:\n        pass\n"
        "async def fine():\n"
        "    try:\n        await g()\n"
        "    except KeyError as missing:\n        pass\n"
    )
    assert awaits_in_except_clauses("m.py", bad) == ["m.py:5"]
    assert except_names_of_two_types("m.py", bad) == ["m.py:f exc"]


@pytest.mark.parametrize(
    ("value", "requested"), [(None, False), ("", False), ("0", False), ("1", True), ("yes", True)]
)
def test_compile_is_requested_by_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, requested: bool
) -> None:
    if value is None:
        monkeypatch.delenv("SMSROUTER_COMPILE", raising=False)
    else:
        monkeypatch.setenv("SMSROUTER_COMPILE", value)
    assert smsrouter_build.compile_requested() is requested


@pytest.mark.filterwarnings("ignore:Support for `\\[tool.setuptools\\]`")
def test_the_compiled_wheel_needs_mypyc_and_the_plain_one_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)  # setuptools runs setup.py from the current directory
    monkeypatch.setenv("SMSROUTER_COMPILE", "1")
    needs = smsrouter_build.get_requires_for_build_wheel()
    assert smsrouter_build.MYPYC in needs
    # Asked while compiling, setuptools saw the flag off; it is back on.
    assert smsrouter_build.compile_requested()
    monkeypatch.setenv("SMSROUTER_COMPILE", "0")
    assert smsrouter_build.MYPYC not in smsrouter_build.get_requires_for_build_wheel()


def test_an_editable_install_refuses_to_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSROUTER_COMPILE", "1")
    with pytest.raises(SystemExit, match="editable"):
        smsrouter_build.build_editable(str(ROOT / "build"))


def _build_dir(root: Path, name: str, age_s: float, *, complete: bool = True) -> Path:
    path = root / name
    path.mkdir()
    if complete:
        (path / compiled.COMPLETE).touch()
    stamp = time.time() - age_s
    os.utime(path / compiled.COMPLETE if complete else path, (stamp, stamp))
    return path


def test_the_build_cache_keeps_the_builds_used_last(tmp_path: Path) -> None:
    builds = [_build_dir(tmp_path, f"b{i}", age_s=100.0 * i) for i in range(5)]
    fresh_partial = _build_dir(tmp_path, "b9.x.partial", 10.0, complete=False)
    stale_partial = _build_dir(tmp_path, "b8.y.partial", 2 * 3600.0, complete=False)
    unfinished = _build_dir(tmp_path, "b7", 10.0, complete=False)
    compiled._prune(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b0", "b1", "b2", "b9.x.partial"]
    assert not any(p.exists() for p in (*builds[3:], stale_partial, unfinished))
    assert fresh_partial.exists()


def test_a_complete_build_of_these_sources_is_used_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSROUTER_BUILD_CACHE", str(tmp_path))
    site = _build_dir(tmp_path, compiled.source_key(), age_s=1000.0)
    before = (site / compiled.COMPLETE).stat().st_mtime
    assert compiled.compiled_site() == site  # no pip: this would take minutes
    assert (site / compiled.COMPLETE).stat().st_mtime > before  # marked as used
