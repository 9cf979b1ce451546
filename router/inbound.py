"""Mobile-originated messages (MO): from a carrier's deliver_sm to the account
that owns the number it was sent to.

Concatenated MO parts are reassembled first (with a timeout and a bounded
buffer, see `smsrouter.sms.concat`); the whole text then becomes one
outbox row for the account — a signed POST to its `inbound_url`, or a
deliver_sm on its receiving bind — so a restart loses none that were
acknowledged to the carrier as a whole. Parts still waiting for their
siblings live in memory only: a crash loses those, as it does on handsets.

An MO whose whole text is a keyword (CONTRACT §6 "Opt-out",
`router/keywords.py`) also changes the account's opt-out list: the change
is written by the same writer as the MO's outbox row, and the MO is
acknowledged to the carrier only once both are committed, so a crash
cannot lose a STOP the carrier was told was received. Once the change is
committed it is applied to this process's list and the keyword's reply
goes out through the normal path (committed and charged, queued behind its
sender's bucket, routed, its receipt handled), skipping only the rules
that would refuse it to the subscriber who just opted out.
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
from smsrouter.router.accounts import Account, AccountDirectory
from smsrouter.router.admission import Admission, Draft, Recipient, parse_recipient
from smsrouter.router.intake import Intake
from smsrouter.router.keywords import HELP, OPT_IN, OPT_OUT, default_reply, keyword_of
from smsrouter.router.messages import KEYWORD_INGRESS, utcnow
from smsrouter.router.notifications import MO
from smsrouter.router.opt_outs import OptOutList
from smsrouter.router.payloads import InboundMessage
from smsrouter.router.scheduler import SenderQueueFull
from smsrouter.router.senders import canonical_sender
from smsrouter.router.store.group_commit import GroupCommit, StoreError
from smsrouter.router.store.operations import NewNotification, OptOutChange
from smsrouter.sms.concat import Reassembled, Reassembler
from smsrouter.sms.text import Encoding, part_count

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
        opt_outs: OptOutList | None = None,
        on_opt_out: Callable[[str, str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        reassembler: Reassembler | None = None,
    ) -> None:
        self.writer = writer
        # The list admission reads: a subscriber's STOP or START joins it
        # the moment it is committed.
        self._opt_outs = opt_outs if opt_outs is not None else admission.opt_outs
        # Told of each subscriber's STOP once committed, (account id, number,
        # subscriber): CONTRACT §6 "Opt-out rate" (SenderGuard.opted_out).
        self._on_opt_out = on_opt_out
        # Where keyword replies are committed and queued (`use_intake`).
        self._intake: Intake | None = None
        # Whose number an MO was sent to ([[numbers]]), and that account.
        self._admission = admission
        self._accounts = accounts
        self._retry = timedelta(hours=retry_hours)
        self._clock = clock
        self.reassembler = reassembler or Reassembler()
        self._decode: dict[tuple[object, ...], Callable[[bytes], str]] = {}

    def use_intake(self, intake: Intake) -> None:
        """The path keyword replies take. Given after construction: the
        intake needs the engine, which needs the carriers, which hand their
        MOs here."""
        self._intake = intake

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
    ) -> asyncio.Future[Any]:
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
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        keyword = keyword_of(text)
        body = InboundMessage(
            type="mo",
            carrier=str(carrier),
            sender=str(sender),
            to=str(to),
            text=text,
            parts=r.total,
            complete=r.complete,
            received_at=utcnow(),
            keyword=keyword,
        )
        changed: asyncio.Future[None] | None = None
        if keyword is not None:
            changed = self._keyword(account, keyword, str(sender), canonical_sender(str(to)))
        forwarded = self.writer.submit(
            NewNotification(
                MO,
                account.id,
                account.inbound_url or None,
                _encoder.encode(body),
                utcnow() + self._retry,
            )
        )
        if changed is None:
            return forwarded
        # CONTRACT §6: the carrier's deliver_sm_resp waits for the change and
        # the forward both.
        return asyncio.gather(changed, forwarded)

    def _keyword(
        self, account: Account, keyword: str, sender: str, number: str
    ) -> asyncio.Future[None] | None:
        """The opt-out change of a STOP or START (a future resolved once it is
        committed), and each keyword's reply; None when there is no change
        to wait for."""
        subscriber = parse_recipient(sender)
        if subscriber is None:
            # A short code or an alphanumeric sender cannot be sent to: no
            # list entry, no reply. The account still gets the MO.
            log.warning("keyword from a sender that is no E.164 number", account=account.id)
            return None
        if keyword == HELP:
            self._reply(account, keyword, number, subscriber)
            return None
        opted_out = keyword == OPT_OUT
        done: asyncio.Future[None] = self.writer.loop.create_future()

        def committed(result: object, error: StoreError | None) -> None:
            if error is not None:
                # The carrier hears a temporary error and delivers it again.
                if not done.done():
                    done.set_exception(error)
                return
            # The rows are the truth: whether or not this commit changed them
            # (a second STOP), the subscriber now is (or is not) in them.
            if opted_out:
                self._opt_outs.add(account.id, subscriber.e164)
                # Before the reply: a STOP that suspends its sender still
                # gets its reply (a keyword reply is never refused for it).
                if self._on_opt_out is not None:
                    self._on_opt_out(account.id, number, subscriber.e164)
            else:
                self._opt_outs.remove(account.id, subscriber.e164)
            log.info(
                "subscriber opted out" if opted_out else "subscriber opted back in",
                account=account.id, number=number, changed=bool(result),
            )  # fmt: skip
            # CONTRACT §6: the reply leaves after the change is committed.
            self._reply(account, keyword, number, subscriber)
            if not done.done():
                done.set_result(None)

        self.writer.submit_then(
            OptOutChange(account.id, subscriber.e164, opted_out, "subscriber"), committed
        )
        return done

    def _reply(self, account: Account, keyword: str, number: str, subscriber: Recipient) -> None:
        """One message from `number` to the subscriber answering the keyword:
        the account's own text or the default. Admitted without `admit`, whose
        opt-out rule would refuse the answer to a STOP (CONTRACT §6: the reply
        is allowed to the opted-out subscriber); committed and charged by the
        intake like any message, or, if the balance cannot pay, not sent."""
        intake = self._intake
        if intake is None:
            log.warning("keyword reply not sent: no intake", account=account.id)
            return
        text = _configured_reply(account, keyword) or default_reply(keyword, account.id)
        refusal = self._admission.refuse(subscriber.e164, subscriber, account)
        if refusal is not None:
            log.warning(
                "keyword reply not sent", account=account.id, reason=refusal.code,
                detail=refusal.detail,
            )  # fmt: skip
            return
        encoding, parts = part_count(text)
        draft = Draft(
            ingress=KEYWORD_INGRESS, sender=number, to=subscriber.e164, body=text,
            encoding=encoding, data_coding=0 if encoding == Encoding.GSM7 else 8, parts=parts,
            kind="transactional",
        )  # fmt: skip
        message = self._admission.new_message(account, draft, subscriber, utcnow())

        def answered(error: StoreError | None, refused: str | None) -> None:
            if error is not None:
                log.error(
                    "keyword reply not stored", account=account.id, message_id=str(message.id),
                    error=str(error),
                )  # fmt: skip
            elif refused is not None:
                # Only credit refuses it: a keyword reply is not counted
                # against the daily limit (migration 0014).
                log.warning(
                    "keyword reply not sent: the balance cannot pay for it",
                    account=account.id, message_id=str(message.id), price=str(message.price),
                )  # fmt: skip
            else:
                log.info(
                    "keyword reply accepted", account=account.id, message_id=str(message.id),
                    keyword=keyword,
                )  # fmt: skip

        try:
            intake.accept_one(message, answered)
        except SenderQueueFull:
            log.warning(
                "keyword reply not sent: its sender queue is full",
                account=account.id, message_id=str(message.id), number=number,
            )  # fmt: skip


def _configured_reply(account: Account, keyword: str) -> str:
    if keyword == OPT_OUT:
        return account.stop_reply
    if keyword == OPT_IN:
        return account.start_reply
    return account.help_reply
