"""What `pip install .` puts into site-packages: one package, `smsrouter`.

The repository keeps `router/`, `connectors/`, `sms/` and `sims/` at its
root (the layout is the architecture, ARCHITECTURE.md); installed they
are `smsrouter.router`, `smsrouter.connectors`, ... so that they take no
top-level names that other distributions use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = [
    p.name
    for p in ROOT.iterdir()
    if p.is_dir() and (p / "__init__.py").is_file() and p.name != "tests"
]


def test_an_installed_wheel_has_one_top_level_package_and_runs_from_it(tmp_path: Path) -> None:
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    # The interpreted build, as `pip install .` makes it.
    env = {k: v for k, v in os.environ.items() if k != "SMSROUTER_COMPILE"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", str(ROOT), "--no-deps", "-w", str(wheels)],
        check=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = wheels.glob("smsrouter-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    top = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")} - {"bin"}
    assert top == {"smsrouter"}
    # Every folder of the repository's packages is in the namespace, files and all.
    assert {"router", "connectors", "sims"} <= set(FOLDERS)
    for folder in FOLDERS:
        if folder in ("smsrouter", "bench", "build_backend"):
            continue
        here = {p.relative_to(ROOT / folder) for p in (ROOT / folder).rglob("*.py")}
        installed = {
            p.relative_to(site / "smsrouter" / folder)
            for p in (site / "smsrouter" / folder).rglob("*.py")
        }
        assert here == installed, folder
    # Package data: the status page's files (CONTRACT §8) beside its module.
    static = ROOT / "connectors" / "static"
    assert {p.name for p in (site / "smsrouter" / "connectors" / "static").iterdir()} == {
        p.name for p in static.iterdir()
    }
    # The installed package runs on its own: no import reaches the checkout.
    probe = (
        "import smsrouter.daemon, smsrouter.router.engine, smsrouter.connectors.smpp_server\n"
        "import smsrouter.sims.carrier, sys\n"
        "assert 'router' not in sys.modules and 'connectors' not in sys.modules\n"
        "print(smsrouter.router.engine.__file__)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(site / "smsrouter" / "router" / "engine.py")
