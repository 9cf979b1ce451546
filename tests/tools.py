"""Outside tools some tests use: present in CI (.ci/run installs them),
optional on a developer's machine."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, package: str) -> str:
    """Path of `name`; skip the test without it, except in CI where it must be."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian package {package})"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run should have installed it")
        pytest.skip(message)
    return path
