"""Every third-party module the installed package imports is declared in
[project].dependencies, so that a plain `pip install smsrouter` runs
(CONTRACT §1): a module that only arrives as another dependency's
dependency can disappear with that dependency's next release."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def imported_modules(package: Path) -> dict[str, set[str]]:
    """Top-level module name → files of `package` (links followed) importing it."""
    found: dict[str, set[str]] = {}
    for folder, _, files in os.walk(package, followlinks=True):
        for name in (f for f in files if f.endswith(".py")):
            path = Path(folder, name)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    found.setdefault(module.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_canonical(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in project["dependencies"]}


def test_every_third_party_import_is_declared() -> None:
    providers = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    undeclared = {}
    for module, files in imported_modules(ROOT / "smsrouter").items():
        if module in sys.stdlib_module_names or module == "smsrouter":
            continue
        distributions = {_canonical(d) for d in providers.get(module, [])}
        assert distributions, f"{module} (imported by {sorted(files)}) is not installed"
        if not distributions & declared:
            undeclared[module] = sorted(files)
    assert undeclared == {}


def test_the_scan_sees_the_linked_folders() -> None:
    # router/, connectors/, sms/ and sims/ are links under smsrouter/: a walk
    # that did not follow them would find almost nothing to check.
    modules = imported_modules(ROOT / "smsrouter")
    assert {"yarl", "phonenumbers", "re2", "aiohttp", "httptools"} <= set(modules)
