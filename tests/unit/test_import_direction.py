"""Imports run one way (DESIGN.md "The house"): the decisions in router/ know
no protocol edge and no simulator, sms/ (3GPP TS 23.038/23.040 text) knows
nothing else of the router, and only the daemon's wiring starts simulators.

Read from the sources (ast), folder by folder as they stand at the root, so
an import inside a function or under TYPE_CHECKING counts as well.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The folders at the root and their names once installed: smsrouter/ links
# the other four into itself, and is walked without following the links.
FOLDERS = ("router", "connectors", "sms", "sims", "smsrouter")
# What the router runs; sims/ are the simulators and load clients.
PRODUCTION = ("router", "connectors", "sms", "smsrouter")
# The modules that start simulators beside the daemon or check their config.
SIM_WIRING = frozenset(
    {"smsrouter/cli.py", "smsrouter/config.py", "smsrouter/daemon.py", "smsrouter/workers.py"}
)
# Top-level names that exist only as smsrouter.<name> once installed.
BARE = frozenset({"router", "connectors", "sms", "sims"})


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def module_name(path: str) -> str:
    """`connectors/smpp/pdu.py` → `smsrouter.connectors.smpp.pdu`."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] != "smsrouter":
        parts.insert(0, "smsrouter")
    return ".".join(parts)


def imported_names(tree: ast.Module, path: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in a module: `import x`,
    `from x import y` (as x and as x.y, y being perhaps a module), relative
    imports resolved, and importlib.import_module / __import__ of a literal."""
    package = module_name(path)
    if not path.endswith("__init__.py"):
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            func = ast.unparse(node.func)
            first = node.args[0]
            if func in ("importlib.import_module", "import_module", "__import__") and (
                isinstance(first, ast.Constant) and isinstance(first.value, str)
            ):
                yield node.lineno, first.value


def violations(path: str, tree: ast.Module) -> list[str]:
    """Each import of `path` (relative to the root) that runs the wrong way."""
    area = path.split("/")[0]
    found = []
    for line, name in imported_names(tree, path):
        where = f"{path}:{line} imports {name}"
        if name.split(".")[0] in BARE:
            found.append(f"{where}: a bare top-level name, import smsrouter.{name}")
        elif area == "router" and (
            _under(name, "smsrouter.connectors") or _under(name, "smsrouter.sims")
        ):
            found.append(f"{where}: router/ decides, it imports no edge and no simulator")
        elif area == "sms" and _under(name, "smsrouter") and not _under(name, "smsrouter.sms"):
            found.append(f"{where}: sms/ imports nothing else of smsrouter")
        elif area in PRODUCTION and path not in SIM_WIRING and _under(name, "smsrouter.sims"):
            found.append(f"{where}: only the daemon's wiring imports the simulators")
    return found


def sources() -> list[str]:
    """Every module of the folders, as paths relative to the root."""
    paths = []
    for folder in FOLDERS:
        # followlinks=False (the default): smsrouter/router and the other
        # links are walked as their own folders.
        for dirpath, dirnames, filenames in os.walk(ROOT / folder):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            base = Path(dirpath).relative_to(ROOT).as_posix()
            paths += [f"{base}/{f}" for f in sorted(filenames) if f.endswith(".py")]
    return paths


def test_the_sources_are_found() -> None:
    found = sources()
    assert {
        "router/engine.py",
        "connectors/smpp/pdu.py",
        "sms/text.py",
        "sms/concat.py",
        "sims/carrier.py",
        "smsrouter/daemon.py",
    } <= set(found)
    # Once each: not again through smsrouter/'s links.
    assert len(found) == len(set(found))
    assert not [p for p in found if p.startswith(("smsrouter/router/", "smsrouter/sims/"))]
    assert set(found) >= SIM_WIRING


@pytest.mark.parametrize("path", sources())
def test_imports_run_one_way(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), path)
    assert violations(path, tree) == []


@pytest.mark.parametrize(
    ("path", "source", "bad"),
    [
        ("router/x.py", "from smsrouter.connectors.smpp import Tag", True),
        ("router/x.py", "import smsrouter.sims.carrier", True),
        ("router/x.py", "from smsrouter import connectors", True),
        ("router/x.py", "def f():\n    from smsrouter.sims import distributions", True),
        ("router/x.py", "from ..connectors import carriers", True),
        ("router/x.py", "importlib.import_module('smsrouter.sims.distributions')", True),
        ("router/x.py", "from smsrouter.sms.text import part_count", False),
        ("router/x.py", "from .messages import Status", False),
        ("sms/x.py", "from smsrouter.router.messages import Status", True),
        ("sms/x.py", "from smsrouter.connectors.smpp import constants", True),
        ("sms/x.py", "from ..sims import carrier", True),
        ("sms/x.py", "from .text import Concat", False),
        ("connectors/x.py", "from smsrouter.sims.distributions import Mix", True),
        ("connectors/smpp/x.py", "from ...sims import carrier", True),
        ("connectors/smpp/x.py", "from .constants import Tag", False),
        ("connectors/x.py", "from smsrouter.router.messages import Status", False),
        ("smsrouter/logs.py", "from smsrouter.sims.stats import emit", True),
        ("smsrouter/daemon.py", "from smsrouter.sims.carrier import CarrierSimulator", False),
        ("sims/x.py", "from smsrouter.connectors.smpp import Tag", False),
        ("sims/x.py", "from connectors.smpp import Tag", True),
        ("sims/x.py", "import router.config", True),
        ("smsrouter/daemon.py", "from sims.carrier import CarrierSimulator", True),
        ("connectors/x.py", "from sms.text import encode_text", True),
    ],
)
def test_the_check_sees_what_it_looks_for(path: str, source: str, bad: bool) -> None:
    assert bool(violations(path, ast.parse(source))) is bad


def test_relative_imports_resolve_from_their_package() -> None:
    tree = ast.parse("from . import pdu\nfrom ..router import config\nfrom .tlv import x\n")
    assert sorted({name for _, name in imported_names(tree, "connectors/smpp/codec.py")}) == [
        "smsrouter.connectors.router",
        "smsrouter.connectors.router.config",
        "smsrouter.connectors.smpp",
        "smsrouter.connectors.smpp.pdu",
        "smsrouter.connectors.smpp.tlv",
        "smsrouter.connectors.smpp.tlv.x",
    ]
    init = ast.parse("from .codec import decode\n")
    assert "smsrouter.connectors.smpp.codec" in {
        name for _, name in imported_names(init, "connectors/smpp/__init__.py")
    }
