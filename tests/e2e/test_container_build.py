"""The Dockerfile builds from the files it COPYs alone (CONTRACT §1).

This machine has no Docker daemon: the builder stage's COPY lines are
replayed into an empty directory, a wheel is built there as the builder
builds it (interpreted here: the compiled build is tests/e2e/compiled.py's),
and installed in a fresh virtualenv outside the checkout, where
`smsrouter` runs on the demo config shipped in the package.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIP = ["-m", "pip", "--disable-pip-version-check", "--quiet"]


def builder_copies(dockerfile: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY of the first stage (the builder)."""
    copies: list[tuple[list[str], str]] = []
    stages = 0
    for line in dockerfile.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        instruction = words[0].upper()
        if instruction == "FROM":
            stages += 1
        elif instruction == "COPY" and stages == 1:
            assert not any(w.startswith("--") for w in words), line
            copies.append((words[1:-1], words[-1]))
    return copies


def replay_copies(copies: list[tuple[list[str], str]], context: Path, into: Path) -> None:
    """What `COPY src... dest` does with WORKDIR `into` (links stay links)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info", "build")
    for sources, dest in copies:
        for source in sources:
            src = context / source
            target = into / dest / source if dest.endswith("/") else into / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir() and not src.is_symlink():
                shutil.copytree(src, target, symlinks=True, ignore=ignore)
            else:
                shutil.copy2(src, target, follow_symlinks=False)


def test_the_builder_stage_copies_what_the_build_needs() -> None:
    copied = {
        s for sources, _ in builder_copies((ROOT / "Dockerfile").read_text()) for s in sources
    }
    # pyproject.toml's backend-path, setup.py's compiled modules, the readme,
    # and the folder the packaged demo config links to.
    assert {
        "pyproject.toml",
        "setup.py",
        "README.md",
        "MANIFEST.in",
        "build_backend",
        "config",
    } <= copied
    assert {"router", "connectors", "sms", "sims", "smsrouter"} <= copied


def _clean_env() -> dict[str, str]:
    """The environment without our variables: the interpreted build, no config."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("SMSROUTER_") and k != "PYTHONPATH"
    }


def test_what_the_dockerfile_copies_builds_a_wheel_that_runs_anywhere(tmp_path: Path) -> None:
    src, wheels = tmp_path / "src", tmp_path / "wheels"
    replay_copies(builder_copies((ROOT / "Dockerfile").read_text()), ROOT, src)
    subprocess.run(
        [sys.executable, *PIP, "wheel", "--no-deps", "-w", str(wheels), str(src)],
        check=True, timeout=300, env=_clean_env(), cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = wheels.glob("smsrouter-*.whl")
    _check_installed_runs_anywhere(wheel, tmp_path)


def test_the_sdist_builds_installs_and_runs_anywhere(tmp_path: Path) -> None:
    # Built from a copy: the backend writes its egg-info into the source tree.
    src, dist, wheels = tmp_path / "src", tmp_path / "dist", tmp_path / "wheels"
    replay_copies(builder_copies((ROOT / "Dockerfile").read_text()), ROOT, src)
    build = "import sys, smsrouter_build; print(smsrouter_build.build_sdist(sys.argv[1]))"
    subprocess.run(
        [sys.executable, "-c", build, str(dist)],
        check=True, timeout=300, env={**_clean_env(), "PYTHONPATH": str(src / "build_backend")},
        cwd=src, capture_output=True,
    )  # fmt: skip
    (sdist,) = dist.glob("smsrouter-*.tar.gz")
    subprocess.run(
        [sys.executable, *PIP, "wheel", "--no-deps", "-w", str(wheels), str(sdist)],
        check=True, timeout=300, env=_clean_env(), cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = wheels.glob("smsrouter-*.whl")
    _check_installed_runs_anywhere(wheel, tmp_path)


def _check_installed_runs_anywhere(wheel: Path, tmp_path: Path) -> None:
    env = _clean_env()
    venv, elsewhere = tmp_path / "venv", tmp_path / "elsewhere"
    # The dependencies come from this interpreter's site-packages; smsrouter
    # itself only from the wheel (checked below: not the checkout's).
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, *PIP, "install", "--no-deps", str(wheel)], check=True, env=env)
    elsewhere.mkdir()

    def smsrouter(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [venv / "bin" / "smsrouter", *args],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    where = subprocess.run(
        [python, "-c", "import smsrouter.cli; print(smsrouter.cli.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(venv)
    version = smsrouter("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"smsrouter {_project_version()}"
    # No config named and none in the working directory: the packaged demo.
    check = smsrouter("check-config")
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(str(venv)), check.stdout
    assert "ok (2 carriers" in check.stdout
    packaged = Path(check.stdout.split(":", 1)[0])
    assert not packaged.is_symlink()
    assert packaged.read_text() == (ROOT / "config" / "demo.toml").read_text()


def _project_version() -> str:
    import tomllib

    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])
