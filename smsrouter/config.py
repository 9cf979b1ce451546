"""The config as the daemon and `smsrouter check-config` load it.

router/config.py reads and checks every key; a ``[[simulators]]`` entry is
also checked by the simulator it starts (sims/carrier.py), which the router
itself does not import. Its errors come with the others, under the entry's
key path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smsrouter.router import config as _config
from smsrouter.router.config import Config


def _check_simulator(entry: Any) -> None:
    # Imported when a config has simulators: the other commands need none.
    from smsrouter.sims.carrier import check_config

    check_config(entry)


CHECKS: Mapping[str, _config.EntryCheck] = {"simulators": _check_simulator}


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """router/config.py's `load_config`, with the simulators' checks."""
    return _config.load_config(path, environ, CHECKS)


def parse_config(raw: dict[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """router/config.py's `parse_config`, with the simulators' checks."""
    return _config.parse_config(raw, environ, CHECKS)
