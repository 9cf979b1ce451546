"""Every process's copy of the flagged and suspended senders, kept current
by NOTIFY `smsrouter_senders` (CONTRACT §6 "Opt-out rate": a suspension
refuses new sends on every instance; §8: a resume takes effect within 1 s),
as DirectoryWatch keeps the accounts."""

from __future__ import annotations

from typing import Any

import asyncpg

from smsrouter.router.store.directory_watch import DirectoryWatch
from smsrouter.router.store.sender_states import NOTIFY_CHANNEL, load_states


class SenderWatch(DirectoryWatch):
    """`on_change` gets the list of SenderState rows."""

    channel = NOTIFY_CHANNEL

    async def _load(self, conn: asyncpg.Connection) -> Any:
        return await load_states(conn)
