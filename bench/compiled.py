"""The compiled build of this checkout, made once and kept: the bench
measures it and the suite runs end-to-end tests on it.

`SMSROUTER_COMPILE=1 pip wheel .` builds it as a user would; the wheel is
unpacked with `pip install --target` into a directory that goes first on
the router subprocess's PYTHONPATH, so that it imports the extensions and
not this checkout. The build takes minutes: it is kept under
~/.cache/smsrouter/compiled (or $SMSROUTER_BUILD_CACHE), keyed by a hash of
everything it is made from; the three used last are kept.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What the wheel is made of: its packages and its build files.
PACKAGES = ("router", "connectors", "sms", "sims", "smsrouter")
BUILD_FILES = ("setup.py", "pyproject.toml", "build_backend/smsrouter_build.py")
BUILD_TIMEOUT = 1800.0
COMPLETE = "COMPLETE"
PARTIAL = ".partial"
KEEP = 3
STALE_PARTIAL_S = 3600.0


def source_key() -> str:
    """Hash of the build's inputs and of the interpreter it is built for."""
    digest = hashlib.sha256(f"{sys.version}|{platform.machine()}".encode())
    files = [ROOT / f for f in BUILD_FILES]
    files += sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*") if p.is_file())
    for path in files:
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    configured = os.environ.get("SMSROUTER_BUILD_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "smsrouter" / "compiled"


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"pip {args[0]} failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}")


def compiled_site() -> Path:
    """The directory holding the compiled build's packages, built if need be."""
    root = cache_root()
    site = root / source_key()
    if (site / COMPLETE).exists():
        (site / COMPLETE).touch()  # in use: pruned last
        return site
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="smsrouter-wheel-") as wheels:
        _pip(
            "wheel", str(ROOT), "--no-deps", "--wheel-dir", wheels,
            env={**os.environ, "SMSROUTER_COMPILE": "1"},
        )  # fmt: skip
        (wheel,) = Path(wheels).glob("smsrouter-*.whl")
        # Unpacked aside, then renamed into place: a build is whole or absent,
        # even if another process builds the same sources meanwhile.
        partial = Path(tempfile.mkdtemp(prefix=f"{site.name}.", suffix=PARTIAL, dir=root))
        _pip("install", "--no-deps", "--target", str(partial), str(wheel))
    (partial / COMPLETE).touch()
    try:
        partial.rename(site)
    except OSError:  # the other process was first
        shutil.rmtree(partial, ignore_errors=True)
    _prune(root)
    return site


def _prune(root: Path) -> None:
    """Keep the KEEP builds used last (another checkout may be running one),
    and no unpacking left by a build that was killed."""
    now = time.time()
    builds = []
    for path in root.iterdir():
        if path.name.endswith(PARTIAL):
            if now - path.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(path, ignore_errors=True)
        elif (path / COMPLETE).exists():
            builds.append(((path / COMPLETE).stat().st_mtime, path))
        else:
            shutil.rmtree(path, ignore_errors=True)
    for _, old in sorted(builds, reverse=True)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
