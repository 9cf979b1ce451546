"""Mobile-originated messages (MO): from a carrier's deliver_sm to the account
that owns the number it was sent to.

Concatenated MO parts are reassembled first (with a timeout and a bounded
buffer, see `smsrouter.sms.concat`); the whole text then becomes one
outbox row for the account — a signed POST to its `inbound_url`, or a
deliver_sm on its receiving bind — so a restart loses none that were
acknowledged to the carrier as a whole. Parts still waiting for their
siblings live in memory only: a crash loses those, as it does on handsets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec
import structlog

from smsrouter.router import metrics
from smsrouter.router.accounts import AccountDirectory
from smsrouter.router.admission import Admission
from smsrouter.router.messages import utcnow
from smsrouter.router.notifications import MO
from smsrouter.router.payloads import InboundMessage
from smsrouter.router.senders import canonical_sender
from smsrouter.router.store.group_commit import GroupCommit
from smsrouter.router.store.operations import NewNotification
from smsrouter.sms.concat import Reassembled, Reassembler

log = structlog.get_logger("inbound")


_encoder = msgspec.json.Encoder()


class Inbound:
    def __init__(
        self,
        *,
        writer: GroupCommit,
        admission: Admission,
        accounts: AccountDirectory,
        retry_hours: float,
        clock: Callable[[], float] = time.monotonic,
        reassembler: Reassembler | None = None,
    ) -> None:
        self.writer = writer
        # Whose number an MO was sent to ([[numbers]]), and that account.
        self._admission = admission
        self._accounts = accounts
        self._retry = timedelta(hours=retry_hours)
        self._clock = clock
        self.reassembler = reassembler or Reassembler()
        self._decode: dict[tuple[object, ...], Callable[[bytes], str]] = {}

    def receive(
        self,
        *,
        carrier: str,
        sender: str,
        to: str,
        payload: bytes,
        decode: Callable[[bytes], str],
        concat: tuple[int, int, int] | None = None,
    ) -> asyncio.Future[Any]:
        """Take one MO (or one part of it); the future resolves once it is
        safe to acknowledge the carrier."""
        metrics.MO_RECEIVED.labels(carrier).inc()
        now = self._clock()
        finished: list[Reassembled] = []
        if concat is None:
            finished.append(Reassembled((sender, to, carrier), 1, {1: payload}, True))
        else:
            ref, total, seq = concat
            key = (sender, to, carrier)
            self._decode[(*key, ref, total)] = decode
            finished = self.reassembler.add(key, ref, total, seq, payload, now)
        finished += self.reassembler.expire(now)
        futures = [self._forward(r, decode) for r in finished]
        if not futures:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        # A gathering future, not a task: it ends with the futures it waits for.
        return asyncio.gather(*futures)

    def sweep(self) -> None:
        """Forward what waited too long for its missing parts."""
        for r in self.reassembler.expire(self._clock()):
            self._forward(r, None)

    def _forward(
        self, r: Reassembled, decode: Callable[[bytes], str] | None
    ) -> asyncio.Future[object]:
        sender, to, carrier = r.key[0], r.key[1], r.key[2]
        decode = self._decode.pop(r.key, None) or decode
        text = decode(r.payload()) if decode else r.payload().decode("latin-1")
        account_id = self._admission.senders.get(canonical_sender(str(to)))
        account = self._accounts.get(account_id) if account_id else None
        if not r.complete:
            log.warning("MO incomplete, forwarding the parts that came", to=to, parts=len(r.parts))
        if account is None:
            log.warning("MO to a number of no account", to=to, carrier=carrier)
            metrics.MO_UNROUTED.inc()
            done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        body = InboundMessage(
            type="mo",
            carrier=str(carrier),
            sender=str(sender),
            to=str(to),
            text=text,
            parts=r.total,
            complete=r.complete,
            received_at=utcnow(),
        )
        return self.writer.submit(
            NewNotification(
                MO,
                account.id,
                account.inbound_url or None,
                _encoder.encode(body),
                utcnow() + self._retry,
            )
        )
