"""What the bench needs on the machine, installed on first use.

* Debian packages: ``kannel`` (bearerbox, smsbox), ``rabbitmq-server`` and
  ``redis-server`` (Jasmin's broker and store), through apt-get; the
  services are not started by the packages here, the bench runs its own
  instances on private ports and data dirs.
* Jasmin: PyPI's ``jasmin`` in a venv of this Python (3.11) under
  `CACHE_DIR`, plus the AMQP 0-9-1 spec file its wheel lacks, taken from
  the same version's sdist.

Everything is idempotent: a second run finds it all in place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

CACHE_DIR = Path(os.environ.get("SMSROUTER_BENCH_CACHE", "/var/cache/smsrouter-bench"))
JASMIN_VERSION = "0.11.1"
JASMIN_VENV = CACHE_DIR / f"jasmin-{JASMIN_VERSION}"
AMQP_SPEC = CACHE_DIR / "resource" / "amqp0-9-1.xml"

PACKAGES: dict[str, list[str]] = {
    "kannel": ["kannel"],
    "jasmin": ["rabbitmq-server", "redis-server"],
}


class InstallError(RuntimeError):
    pass


def _run(argv: Sequence[str], timeout: float = 900.0, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise InstallError(
            f"{' '.join(argv)} exited with {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result.stdout


def deb_version(package: str) -> str | None:
    """The installed version of a Debian package, None if not installed."""
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}\t${Version}", package],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except OSError:
        return None
    status, _, version = result.stdout.partition("\t")
    return version if result.returncode == 0 and status.endswith(" installed") else None


def ensure_debs(packages: Sequence[str], log: list[str]) -> None:
    missing = [p for p in packages if deb_version(p) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise InstallError(f"needs Debian packages {missing}: run as root or apt-get install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log.append(f"apt-get install {' '.join(missing)}")
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def jasmin_python() -> Path:
    return JASMIN_VENV / "bin" / "python"


def ensure_jasmin(log: list[str]) -> None:
    """Jasmin in its venv and the AMQP spec file next to it."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    if not (JASMIN_VENV / "bin" / "jasmind.py").exists():
        log.append(f"venv {JASMIN_VENV} with jasmin=={JASMIN_VERSION}")
        shutil.rmtree(JASMIN_VENV, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(JASMIN_VENV)])
        _run([str(jasmin_python()), "-m", "pip", "install", "-q", f"jasmin=={JASMIN_VERSION}"])
    if not AMQP_SPEC.exists():
        log.append(f"AMQP spec from the jasmin {JASMIN_VERSION} sdist")
        with tempfile.TemporaryDirectory() as tmp:
            _run(
                [
                    str(jasmin_python()),
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    "-d",
                    tmp,
                    f"jasmin=={JASMIN_VERSION}",
                ]
            )
            sdists = list(Path(tmp).glob("jasmin-*.tar.gz"))
            if not sdists:
                raise InstallError("pip download gave no jasmin sdist")
            member = f"jasmin-{JASMIN_VERSION}/misc/config/resource/amqp0-9-1.xml"
            with tarfile.open(sdists[0]) as tar:
                extracted = tar.extractfile(member)
                if extracted is None:
                    raise InstallError(f"{member} not in {sdists[0].name}")
                AMQP_SPEC.parent.mkdir(parents=True, exist_ok=True)
                AMQP_SPEC.write_bytes(extracted.read())


def ensure(systems: Sequence[str]) -> list[str]:
    """Install what the named systems need; what was done, one line each."""
    done: list[str] = []
    for system in systems:
        ensure_debs(PACKAGES.get(system, []), done)
        if system == "jasmin":
            ensure_jasmin(done)
    return done


def jasmin_version() -> str:
    try:
        out = _run([str(jasmin_python()), "-m", "pip", "show", "jasmin"], timeout=60)
    except (InstallError, OSError):
        return "?"
    for line in out.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "?"
