"""A carrier's SMSC, simulated: accepts binds, answers submit_sm, sends receipts.

Runs as `smsrouter sim carrier --port N` or inside a test or the demo
daemon. It records every submit_sm it accepted, so tests can check what the
carrier saw (loss, duplicates, addresses, text).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from connectors.smpp import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CommandStatus,
    DeliverSm,
    MessageState,
    Pdu,
    Role,
    SubmitSm,
    Tag,
    set_tlv,
)
from connectors.smpp.receipt import Receipt, format_receipt, receipt_date
from connectors.smpp.text import decode_short_message, split_udh
from connectors.smpp_link import LinkClosed, ResponseTimeout, SmppLink

log = structlog.get_logger("sim.carrier")

_STATE_OF_STAT = {
    "DELIVRD": MessageState.DELIVERED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "EXPIRED": MessageState.EXPIRED,
    "REJECTD": MessageState.REJECTED,
    "DELETED": MessageState.DELETED,
    "UNKNOWN": MessageState.UNKNOWN,
    "ACCEPTD": MessageState.ACCEPTED,
}


@dataclass(slots=True)
class AcceptedSubmit:
    """What the carrier saw of one submit_sm it accepted."""

    message_id: str
    system_id: str
    source_addr: str
    source_addr_ton: int
    destination_addr: str
    dest_addr_ton: int
    data_coding: int
    esm_class: int
    short_message: bytes
    registered_delivery: int
    at: datetime

    @property
    def text(self) -> str:
        payload = self.short_message
        if self.esm_class & 0x40:
            _, payload = split_udh(payload)
        return decode_short_message(self.data_coding, payload)


@dataclass
class CarrierSimulator:
    system_id: str = ""
    password: str = ""
    receipt_delay: float = 0.5
    # Receipt stat word → weight (e.g. {"DELIVRD": 95, "UNDELIV": 5}).
    receipts: dict[str, float] = field(default_factory=lambda: {"DELIVRD": 1.0})
    seed: int | None = None
    submits: list[AcceptedSubmit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._links: set[SmppLink] = set()
        self._receivers: dict[str, list[SmppLink]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.receipts_sent = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, host, port, reuse_address=True)

    def _accept(self) -> SmppLink:
        link = SmppLink(Role.SMSC, self, window=1024, enquire_link_interval=30.0)
        # Tracked from the connection on, not from its first PDU: drop_binds()
        # and stop() must also close connections that have not sent one yet.
        self._links.add(link)
        return link

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in list(self._links):
            link.close()
        if self._server is not None:
            await self._server.wait_closed()

    def drop_binds(self) -> None:
        """Fault injection: close every connection at once."""
        for link in list(self._links):
            link.close()

    # ---------------------------------------------------------- LinkHandler

    def on_closed(self, link: SmppLink) -> None:
        self._links.discard(link)
        for links in self._receivers.values():
            if link in links:
                links.remove(link)

    def on_request(self, link: SmppLink, pdu: Pdu) -> None:
        self._links.add(link)
        if isinstance(pdu, SubmitSm):
            self._submit(link, pdu)
        elif isinstance(pdu, BindTransmitter | BindReceiver | BindTransceiver):
            if self.system_id and pdu.system_id != self.system_id:
                link.send(pdu.response(command_status=CommandStatus.ESME_RINVSYSID))
                return
            if self.password and pdu.password != self.password:
                link.send(pdu.response(command_status=CommandStatus.ESME_RINVPASWD))
                return
            link.owner = pdu.system_id
            if not isinstance(pdu, BindTransmitter):
                self._receivers.setdefault(pdu.system_id, []).append(link)
            link.send(pdu.response(system_id="simsmsc"))
        elif hasattr(pdu, "response"):
            link.send(pdu.response())  # type: ignore[attr-defined]

    def _submit(self, link: SmppLink, pdu: SubmitSm) -> None:
        message_id = f"{next(self._ids):x}"
        submit = AcceptedSubmit(
            message_id=message_id,
            system_id=str(link.owner),
            source_addr=pdu.source_addr,
            source_addr_ton=pdu.source_addr_ton,
            destination_addr=pdu.destination_addr,
            dest_addr_ton=pdu.dest_addr_ton,
            data_coding=pdu.data_coding,
            esm_class=pdu.esm_class,
            short_message=pdu.short_message,
            registered_delivery=pdu.registered_delivery,
            at=datetime.now(UTC),
        )
        self.submits.append(submit)
        link.send(pdu.response(message_id=message_id))
        if pdu.registered_delivery & 0x03:
            task = asyncio.get_running_loop().create_task(self._send_receipt(submit))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _stat(self) -> str:
        words = list(self.receipts)
        return self._rng.choices(words, weights=[self.receipts[w] for w in words])[0]

    async def _send_receipt(self, submit: AcceptedSubmit) -> None:
        await asyncio.sleep(self.receipt_delay)
        stat = self._stat()
        now = datetime.now(UTC)
        text = format_receipt(
            Receipt(
                id=submit.message_id,
                submit_date=receipt_date(submit.at),
                done_date=receipt_date(now),
                stat=stat,
                err="000" if stat == "DELIVRD" else "001",
                text=submit.text[:20],
            )
        )
        pdu = DeliverSm(
            source_addr_ton=submit.dest_addr_ton,
            source_addr_npi=1,
            source_addr=submit.destination_addr,
            dest_addr_ton=submit.source_addr_ton,
            dest_addr_npi=1,
            destination_addr=submit.source_addr,
            esm_class=0x04,
            short_message=text.encode("ascii", "replace"),
        )
        set_tlv(pdu, Tag.RECEIPTED_MESSAGE_ID, submit.message_id)
        set_tlv(pdu, Tag.MESSAGE_STATE, int(_STATE_OF_STAT.get(stat, MessageState.UNKNOWN)))
        # Deliver on a receiving bind of the system that submitted; if it is
        # gone, wait for it to come back (real SMSCs retry receipts too).
        for _ in range(600):
            links = [lk for lk in self._receivers.get(submit.system_id, []) if lk.is_open]
            if links:
                try:
                    await self._rng.choice(links).request(pdu)
                    self.receipts_sent += 1
                    return
                except (LinkClosed, ResponseTimeout):
                    pass
            await asyncio.sleep(0.5)
        log.warning("receipt dropped: no receiver bind", message_id=submit.message_id)
