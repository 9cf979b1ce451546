"""The compiled build (`SMSROUTER_COMPILE=1 pip install .`): what it holds,
and the router running from it where the compiled code once differed from
its sources. test_walking_skeleton.py and test_queues.py run on it too."""

from __future__ import annotations

import asyncio
import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import setup
from bench.compiled import ROOT
from smsrouter.connectors.openapi_public import public_document
from tests.e2e.conftest import StartRouter

EXTENSION = importlib.machinery.EXTENSION_SUFFIXES[0]

CONFIG = """
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "c"
credit = "1000000"
api_keys = ["c-key"]
[[numbers]]
number = "+14155550101"
account = "c"
type = "short_code"
"""


@pytest.fixture
def router_site(compiled_site: Path) -> Path:
    return compiled_site


def test_every_compiled_module_is_an_extension_in_the_build(compiled_site: Path) -> None:
    for module in setup.compiled_modules(ROOT):
        built = compiled_site / (module.removesuffix(".py") + EXTENSION)
        assert built.is_file(), built  # imported before the .py shipped beside it
    for module in setup.INTERPRETED:
        assert (compiled_site / module).is_file(), module


def test_the_router_imports_the_build_not_the_checkout(compiled_site: Path, tmp_path: Path) -> None:
    probe = (
        "import json, smsrouter.connectors.smpp.codec as codec, smsrouter.router.config as config\n"
        "import smsrouter.router.store.group_commit as store, smsrouter.daemon as daemon\n"
        "print(json.dumps({'codec': codec.__file__, 'store': store.__file__,"
        " 'config': config.__file__, 'build': daemon.build_kind()}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(compiled_site)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["build"] == "compiled"
    for name in ("codec", "store"):
        assert found[name].startswith(str(compiled_site)) and found[name].endswith(EXTENSION)
    assert found["config"] == str(compiled_site / "smsrouter" / "router" / "config.py")


async def _exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """(head, body) of the answer to one raw request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(15):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            return head, await reader.readexactly(length)
    finally:
        writer.close()


async def test_requests_refused_while_parsing_get_their_own_status(
    start_router: StartRouter,
) -> None:
    # The parser reports these through its own error; the compiled build once
    # answered all of them 400.
    router = await start_router(CONFIG)
    assert router.ready["build"] == "compiled"
    cases = {
        # Over http.max_body_bytes (1 MiB by default), refused from its head.
        b"POST /v1/messages HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n": 413,
        b"GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n": 505,
        b"GET /healthz HTTP/1.1\r\n\r\n": 400,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 70_000 + b"\r\n\r\n": 431,
        # A NUL in the target, which PostgreSQL text cannot hold.
        b"GET /v1/templates/a%00 HTTP/1.1\r\nHost: t\r\n\r\n": 400,
    }
    for request, status in cases.items():
        head, body = await _exchange(router.http_port, request)
        assert head.split(b" ", 2)[1] == str(status).encode(), (request[:40], head, body)
        assert b"application/problem+json" in head
        assert json.loads(body)["status"] == status


async def test_the_compiled_build_serves_the_documents_its_sources_write(
    start_router: StartRouter,
) -> None:
    # Built by compiled modules from plain dicts (connectors/openapi_*.py).
    router = await start_router(CONFIG)
    head, body = await _exchange(
        router.http_port, b"GET /v1/openapi.json HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body) == public_document()
