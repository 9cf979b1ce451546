"""The port a listening server is bound to."""

from __future__ import annotations

import asyncio
from typing import Any


def bound_port(server: asyncio.Server | None) -> int:
    """The bound port (the one the system picked when asked for 0), or 0
    when the server is not listening."""
    if server is None:
        return 0
    # uvloop's servers give a list where asyncio's stubs say a tuple: read
    # through an untyped name, or the compiled build checks for the tuple.
    listening: Any = server
    sockets = listening.sockets
    if not sockets:
        return 0
    return int(sockets[0].getsockname()[1])
