"""An operator's bulk opt-out import at 1,000,000 numbers (CONTRACT §6
"Opt-out"; issue 18: `smsrouter admin opt-outs import` must take 1,000,000
numbers in under a minute), and the daemon-side loads of that list.

    python -m bench.opt_out_import [--numbers 1000000] [--mix world|nanp]

The daemon runs in this process on an embedded PostgreSQL (a fresh data dir
under /tmp), with its operator API; the import is the real command line,
`python -m smsrouter admin opt-outs import ACCOUNT FILE`, in a process of
its own, sending the file in chunks of 50,000 lines. Prints one JSON line:

* ``import_seconds``: wall time of the command, file read to totals printed;
* ``load_seconds``: the whole list read into a new OptOutList, as the daemon
  does at start (before its listeners open) and after a lost LISTEN;
* ``account_reload_seconds``: the one account's list read again, as every
  process does on the import's "*" notice.

``--mix world`` (default) draws numbers as bench/compliance_memory.py does:
a fifth NANP, the rest UK, German, Indian and Brazilian mobiles, which the
API checks with libphonenumber; ``--mix nanp`` draws NANP only (the fast
path of the check).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.compliance_memory import _number
from smsrouter.config import load_config
from smsrouter.daemon import Router
from smsrouter.router.opt_outs import OptOutList
from smsrouter.router.store.opt_outs import load_account, load_opt_outs

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-ops-token-0123456789abcdef"
ACCOUNT = "bench"


def numbers(n: int, mix: str, seed: int = 18) -> list[str]:
    """`n` distinct E.164 numbers."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        number = (
            f"+1{rng.randint(2, 9)}{rng.randint(0, 99):02d}{rng.randint(2, 9)}"
            f"{rng.randint(0, 99):02d}{rng.randint(0, 9999):04d}"
            if mix == "nanp"
            else _number(rng)
        )
        if number not in seen:
            seen.add(number)
            out.append(number)
    return out


def _config(root: Path) -> str:
    return f"""
[database]
data_dir = "{root / "pg"}"
[http]
listen = "127.0.0.1:0"
[smpp]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
tokens = [{{ name = "bench", token = "{TOKEN}" }}]
[[accounts]]
id = "{ACCOUNT}"
api_keys = ["bench-key"]
credit = "0"
"""


def _import(admin_port: int, listing: Path) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable, "-m", "smsrouter", "admin", "--url", f"http://127.0.0.1:{admin_port}",
            "opt-outs", "import", ACCOUNT, str(listing),
        ],
        capture_output=True, text=True, check=False, cwd=ROOT,
        env={**os.environ, "SMSROUTER_ADMIN_TOKEN": TOKEN,
             "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)},
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"import failed ({done.returncode}): {done.stderr.strip()}")
    totals: dict[str, object] = json.loads(done.stdout)
    return seconds, totals


async def run(n: int, mix: str, root: Path) -> dict[str, object]:
    listing = root / "opt-outs.txt"
    listing.write_text("\n".join(numbers(n, mix)) + "\n")
    config_path = root / "router.toml"
    config_path.write_text(_config(root))
    router = Router(load_config(config_path), config_path=config_path)
    await router.start()
    try:
        seconds, totals = await asyncio.to_thread(_import, router.admin_port, listing)
        # The importing process applied its own import as each request committed.
        assert router.opt_outs.numbers(ACCOUNT) == n, router.opt_outs.numbers(ACCOUNT)
        started = time.perf_counter()
        loaded = await load_opt_outs(router.pool, OptOutList())
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        async with router.pool.acquire() as conn:
            keys = await load_account(conn, ACCOUNT)
        OptOutList().replace_keys(ACCOUNT, keys)
        account_seconds = time.perf_counter() - started
    finally:
        await router.stop()
    return {
        "bench": "opt_out_import",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "numbers": n,
        "mix": mix,
        "received": totals["received"],
        "added": totals["added"],
        "requests": totals["requests"],
        "import_seconds": round(seconds, 2),
        "load_seconds": round(load_seconds, 3),
        "loaded": loaded,
        "account_reload_seconds": round(account_seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=1_000_000)
    parser.add_argument("--mix", choices=("world", "nanp"), default="world")
    args = parser.parse_args()
    # As root the embedded PostgreSQL runs as its own user: its parent
    # directory must be readable by it (bench/router.py does the same).
    root = Path(tempfile.mkdtemp(prefix="smsrouter-optout-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        print(json.dumps(asyncio.run(run(args.numbers, args.mix, root))))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
