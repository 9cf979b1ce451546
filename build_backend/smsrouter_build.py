"""The build backend: setuptools' own, plus the opt-in compiled build.

`SMSROUTER_COMPILE=1 pip install .` builds the wheel with the modules of
`router/`, `connectors/` and `sms/` compiled to C extensions by mypyc (setup.py
says which); mypy, which carries mypyc, is then added to what the build
needs. An editable install stays interpreted: compiled modules beside
the sources would be imported instead of them, and edits would not count.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the hooks pip calls)
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

# The mypy that the suite's type check uses compiles the same code.
MYPYC = "mypy>=1.10"


def compile_requested() -> bool:
    return os.environ.get("SMSROUTER_COMPILE", "") not in ("", "0")


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    if not compile_requested():
        return list(_setuptools.get_requires_for_build_wheel(config_settings))
    # setuptools runs setup.py to ask; mypyc is not there yet, and not needed
    # to answer.
    requested = os.environ["SMSROUTER_COMPILE"]
    os.environ["SMSROUTER_COMPILE"] = "0"
    try:
        needs = list(_setuptools.get_requires_for_build_wheel(config_settings))
    finally:
        os.environ["SMSROUTER_COMPILE"] = requested
    return [*needs, MYPYC]


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    if compile_requested():
        raise SystemExit(
            "SMSROUTER_COMPILE is set: the compiled build is a wheel "
            "(pip install . without -e); an editable install runs the sources"
        )
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
