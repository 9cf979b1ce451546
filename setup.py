"""Compiled modules for the opt-in build (`SMSROUTER_COMPILE=1 pip install .`,
see build_backend/smsrouter_build.py); everything else is in pyproject.toml.

Every module of `router/`, `connectors/` and `sms/` is compiled by mypyc except
those named below. The interpreted build runs the same sources, and the
suite runs on both (tests/e2e/test_compiled_build.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from setuptools import setup

PACKAGES = ("smsrouter/router", "smsrouter/connectors", "smsrouter/sms")

# Kept interpreted, with the reason.
INTERPRETED = {
    # msgspec learns a Struct's fields from class annotations, which a
    # compiled class does not keep.
    "smsrouter/router/config.py",
    "smsrouter/router/payloads.py",
    "smsrouter/connectors/send_request.py",
    "smsrouter/connectors/admin_requests.py",
    # Compiled, its enums' members become constants to the modules that
    # read them, and a PDU class's `command_id: ClassVar[...] = CommandId.X`
    # then turns into a dataclass field (mypyc of mypy 2.4).
    "smsrouter/connectors/smpp/constants.py",
    # Cancelled while it waits in a try/finally, a compiled coroutine of
    # mypy 2.4 fails with "invalid exception object" and the task never
    # ends (the daemon then hangs at stop). Glue run on a notification,
    # not per message.
    "smsrouter/router/store/directory_watch.py",
    "smsrouter/router/store/sender_watch.py",  # a DirectoryWatch
    "smsrouter/router/store/shard_keeper.py",  # listens the same way
    # Package markers and re-exports: nothing runs there.
    "smsrouter/router/__init__.py",
    "smsrouter/router/store/__init__.py",
    "smsrouter/connectors/__init__.py",
    "smsrouter/connectors/smpp/__init__.py",
    "smsrouter/sms/__init__.py",
}

# Dataclasses made for every message, whose __init__ is written out in the
# class: mypyc compiles a dataclass's own methods but not the __init__ the
# dataclasses module generates at import, which stays interpreted Python,
# 5-10 times slower (bench/PROFILING.md, round 12). A unit test checks that
# each written-out __init__ takes the class's fields, in order, with their
# defaults.
COMPILED_INITS = (
    "smsrouter/connectors/smpp/pdu.py:MessageIdResp",
    "smsrouter/connectors/smpp/pdu.py:ShortMessagePdu",
    "smsrouter/connectors/smpp/receipt.py:Receipt",
    "smsrouter/router/admission.py:Draft",
    "smsrouter/router/admission.py:Recipient",
    "smsrouter/router/messages.py:Message",
    "smsrouter/router/store/operations.py:CarrierReceipt",
    "smsrouter/router/store/operations.py:Finished",
    "smsrouter/router/store/operations.py:IdempotentAnswer",
    "smsrouter/router/store/operations.py:InsertMessage",
    "smsrouter/router/store/operations.py:Notification",
    "smsrouter/router/store/operations.py:OutboxDone",
    "smsrouter/router/store/operations.py:PartSent",
    "smsrouter/sms/text.py:EncodedText",
)


def compiled_modules(root: Path) -> list[str]:
    """Paths (relative to `root`, sorted) of the modules mypyc compiles."""
    found = (p.relative_to(root).as_posix() for pkg in PACKAGES for p in (root / pkg).rglob("*.py"))
    return sorted(p for p in found if p not in INTERPRETED)


def _ext_modules() -> list:
    if os.environ.get("SMSROUTER_COMPILE", "") in ("", "0"):
        return []
    from mypyc.build import mypycify

    root = Path(__file__).resolve().parent
    os.chdir(root)  # mypycify takes paths relative to the project
    # One extension per module, so that build_ext compiles them in parallel.
    # Compiled separately, mypyc reads mypy's incremental cache, and one left
    # by an earlier run of mypy can yield C that does not build: start empty.
    os.environ["MYPY_CACHE_DIR"] = tempfile.mkdtemp(prefix="smsrouter-mypyc-")
    # The wheel is packed from build/lib.*: an extension left there by an
    # earlier build, of a module since kept interpreted or removed, would be
    # shipped and imported before the .py. Object files (build/temp.*) stay,
    # so that an unchanged module is not compiled again.
    for stale in root.glob("build/lib.*"):
        shutil.rmtree(stale)
    return mypycify(compiled_modules(root), opt_level="3", separate=True)


if __name__ == "__main__":  # as setuptools runs it; the suite imports it
    setup(ext_modules=_ext_modules(), options={"build_ext": {"parallel": os.cpu_count() or 1}})
