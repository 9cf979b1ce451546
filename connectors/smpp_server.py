"""Our SMSC for partner ESMEs (CONTRACT §4): binds, submit_sm, receipts.

The asyncio side only: protocol rules are in `connectors.smpp.Session`,
admission and intake in `router/`. A submit_sm is answered from a callback
on its commit future, not from a task per PDU.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import msgspec
import structlog

from smsrouter.connectors.acceptor import Acceptor, listening_sockets
from smsrouter.connectors.smpp import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CommandStatus,
    DeliverSm,
    Pdu,
    QuerySm,
    Role,
    SubmitSm,
    Tag,
    set_tlv,
)
from smsrouter.connectors.smpp.address import address_fields, parse_smpp_address
from smsrouter.connectors.smpp.receipt import (
    Receipt,
    format_receipt,
    query_state,
    receipt_date,
    receipt_of_final,
)
from smsrouter.connectors.smpp.times import SmppTimeError, format_smpp_time, parse_smpp_time
from smsrouter.connectors.smpp.user_data import smpp_text, user_data
from smsrouter.connectors.smpp_link import LinkClosed, ResponseTimeout, SmppLink
from smsrouter.router import metrics
from smsrouter.router.accounts import Account, AccountDirectory
from smsrouter.router.admission import Admission, Draft, Refusal
from smsrouter.router.auth_throttle import AuthThrottle
from smsrouter.router.intake import THROUGHPUT_EXCEEDED, Intake
from smsrouter.router.log_limits import LimitedLog
from smsrouter.router.messages import Message, utcnow
from smsrouter.router.notifications import MO, DeliveryFailed, NotAvailable
from smsrouter.router.payloads import InboundMessage, SmppReceipt
from smsrouter.router.scheduler import SenderQueueFull
from smsrouter.router.store.group_commit import StoreError
from smsrouter.router.store.operations import Finished, Notification
from smsrouter.router.store.queries import get_message
from smsrouter.sms.text import encode_text

log = structlog.get_logger("smpp.server")
# Lines a client can repeat once per PDU or per connection.
_limited = LimitedLog(log)

# Router reason words → command_status (CONTRACT §4).
# An admission refusal as a submit_sm_resp command_status (SMPP 3.4 §5.1.3),
# with the reason the rejected-messages counter names.
_STATUS_OF_REFUSAL = {
    "no_route": (CommandStatus.ESME_RINVDSTADR, "no_route"),
    "invalid_number": (CommandStatus.ESME_RINVDSTADR, "invalid_number"),
    "unknown_sender": (CommandStatus.ESME_RINVSRCADR, "sender_not_allowed"),
    # CONTRACT §6 "Throughput plan": a temporary refusal the ESME retries.
    "throughput_exceeded": (CommandStatus.ESME_RTHROTTLED, "throughput_exceeded"),
    # CONTRACT §6 "Sender-ID rules", "Geographic permissions and velocity".
    # Everything else the rules refuse (opted_out, content_blocked,
    # limit_reached, insufficient_credit, ...) is ESME_RX_P_APPN (§4).
    "sender_id_not_allowed": (CommandStatus.ESME_RINVSRCADR, "sender_id_not_allowed"),
    "sender_id_protected": (CommandStatus.ESME_RINVSRCADR, "sender_id_protected"),
    "country_not_allowed": (CommandStatus.ESME_RINVDSTADR, "country_not_allowed"),
    "recipient_velocity": (CommandStatus.ESME_RTHROTTLED, "recipient_velocity"),
}


# SO_SNDBUF of a partner's connection (the kernel doubles it for its own
# bookkeeping). 128 KiB a round trip carries over 20,000 answers a second
# at 100 ms; what a partner that never reads can make us take is bounded
# by it, the transport's high-water mark and max_outstanding.
PARTNER_SEND_BUFFER = 64 * 1024


@dataclass(slots=True)
class EsmeBind:
    account: Account
    can_receive: bool
    can_transmit: bool
    # Requests read from this bind and not yet answered (submit_sm, query_sm).
    outstanding: int = 0


class _Submit:
    """A submit_sm waiting for its commit. Called with the commit's outcome
    (Intake.accept_one's `answer`); answered once, by the commit or by the
    commit deadline, whichever comes first."""

    __slots__ = ("link", "message", "pdu", "smsc", "started")

    def __init__(
        self, smsc: PartnerSmsc, link: SmppLink, pdu: SubmitSm, message: Message, started: float
    ) -> None:
        self.smsc = smsc
        self.link = link
        self.pdu: SubmitSm | None = pdu  # None once answered
        self.message: Message | None = message
        self.started = started  # time.perf_counter() when it was read

    def __call__(self, error: StoreError | None, refused: str | None) -> None:
        self.smsc._committed(self, error, refused)


def receipt_error(error_code: str | None) -> str:
    """The 3-digit `err:` of a receipt: the carrier's own when it gave one."""
    if error_code and error_code.startswith("dlr:"):
        return error_code[4:][:3].rjust(3, "0")
    if error_code and error_code.startswith("smpp:0x"):
        return f"{int(error_code[7:], 16) & 0xFFF:03d}"[-3:]
    return "000"


def build_receipt(r: SmppReceipt) -> DeliverSm:
    """A deliver_sm receipt for an ESME (SMPP 3.4 §4.6.1.1, Appendix B)."""
    stat, state = receipt_of_final(r.status)
    text = format_receipt(
        Receipt(
            id=r.id,
            submit_date=receipt_date(r.submit_date),
            done_date=receipt_date(r.done_date),
            stat=stat,
            err=receipt_error(r.error_code),
            text=r.text,
        )
    )
    # The receipt travels from the handset back to the ESME's sender.
    pdu = DeliverSm(
        **address_fields(r.recipient, r.sender),
        esm_class=0x04,
        short_message=text.encode("ascii", "replace"),
    )
    set_tlv(pdu, Tag.RECEIPTED_MESSAGE_ID, r.id)
    set_tlv(pdu, Tag.MESSAGE_STATE, state)
    return pdu


def _refuse(link: SmppLink, pdu: SubmitSm, status: int, reason: str) -> None:
    """Answer a submit_sm refused, and count why."""
    metrics.rejected("smpp", reason).inc()
    link.send(pdu.response(command_status=status))


class PartnerSmsc:
    """The SMPP server partner ESMEs bind to."""

    def __init__(
        self,
        *,
        accounts: AccountDirectory,
        admission: Admission,
        intake: Intake,
        pool: asyncpg.Pool,
        window: int,
        bind_timeout: float,
        enquire_link_interval: float,
        inactivity_timeout: float,
        response_timeout: float,
        on_receiver_bound: Callable[[str], None] = lambda account_id: None,
        max_connections_per_ip: int = 256,
        max_outstanding: int = 200,
        auth_throttle: AuthThrottle | None = None,
        commit_deadline: float = 10.0,
        delivery_timeout: float | None = None,
    ) -> None:
        self._accounts = accounts
        self._admission = admission
        self._intake = intake
        self._pool = pool
        self._link_options = {
            "window": window,
            "bind_timeout": bind_timeout,
            "enquire_link_interval": enquire_link_interval,
            "inactivity_timeout": inactivity_timeout,
            "response_timeout": response_timeout,
        }
        self.on_receiver_bound = on_receiver_bound
        self._acceptors: list[Acceptor] = []
        # query_sm answers being read from the database; stop() ends them.
        self._queries: set[asyncio.Task[None]] = set()
        self._port = 0
        self._tls_port = 0
        self._links: set[SmppLink] = set()
        self._binds: dict[str, list[SmppLink]] = {}
        self._next_receiver: dict[str, int] = {}
        self._accepting = True
        # Links given submit_sm_resp by the group commit settling now: their
        # answers leave when it has told every waiter (`settled`, as the
        # intake writer's listener), not a loop turn later.
        self._answered: set[SmppLink] = set()
        # CONTRACT §11 "Abusive clients": open connections per source
        # address, requests read and not yet answered per bind, failed
        # binds per source address (shared with the HTTP API's keys).
        self._max_per_ip = max_connections_per_ip
        self._connections_of: dict[str, int] = {}
        self._ip_of: dict[SmppLink, str] = {}
        self._max_outstanding = max(1, max_outstanding)
        self._auth_throttle = auth_throttle or AuthThrottle()
        # CONTRACT §11 "A hung database": a submit_sm whose commit has not
        # settled within this many seconds is answered ESME_RSYSERR. The
        # submits wait in the order read, so one timer (at the oldest one's
        # deadline) serves them all.
        self._commit_deadline = commit_deadline
        self._waiting_commit: deque[_Submit] = deque()
        self._deadline_timer: asyncio.TimerHandle | None = None
        # One deliver_sm (receipt, MO part) waits at most this long for a
        # window slot on the bind, and as long again for its answer: a
        # receiving bind that stops reading fails its deliveries instead of
        # holding the dispatcher (CONTRACT §11 "Accounts are isolated").
        self._delivery_timeout = response_timeout if delivery_timeout is None else delivery_timeout
        # Kept: asyncio.get_running_loop() costs a getpid() call on 3.11.
        self._loop = asyncio.get_running_loop()

    # -- a listener of the intake writer (store.listeners.CommitListener)

    async def plan_notifications(
        self, conn: asyncpg.Connection, ended: list[Finished]
    ) -> list[Notification]:
        return []  # intake ends no message

    def notifications_created(self, created: list[Notification]) -> None:
        pass

    def commit_failed(self, created: list[Notification], in_doubt: bool) -> None:
        pass

    def settled(self) -> None:
        self._send_answers()

    async def start(self, host: str, port: int) -> None:
        acceptors = await self._listen(host, port, None)
        self._port = acceptors[0].port
        self._acceptors.extend(acceptors)

    async def start_tls(self, host: str, port: int, context: ssl.SSLContext) -> None:
        """The TLS listener (CONTRACT §4 "TLS"): the same binds, limits and
        throttles as the plain one, over a TLS session with `context`."""
        acceptors = await self._listen(host, port, context)
        self._tls_port = acceptors[0].port
        self._acceptors.extend(acceptors)

    def renew_tls(self, context: ssl.SSLContext) -> None:
        """A new certificate and key (SIGHUP): new connections are served
        with them; open ones keep their sessions."""
        for acceptor in self._acceptors:
            if acceptor.tls is not None:
                acceptor.tls = context

    async def _listen(self, host: str, port: int, tls: ssl.SSLContext | None) -> list[Acceptor]:
        loop = asyncio.get_running_loop()
        # Our own accept loop rather than loop.create_server: at the
        # file-descriptor limit it refuses and logs (connectors/acceptor.py,
        # CONTRACT §11).
        sockets = await listening_sockets(host, port, backlog=1024)
        acceptors = [
            Acceptor(
                sock,
                lambda: SmppLink(
                    Role.SMSC,
                    self,
                    # A partner that does not read its answers is not read
                    # from, after at most this much of them in the kernel
                    # (some thousand submit_sm_resp; receipts go a window at
                    # a time).
                    read_backpressure=True,
                    send_buffer=PARTNER_SEND_BUFFER,
                    on_connected=self._connected,
                    **self._link_options,  # type: ignore[arg-type]
                ),
                loop=loop,
                name="smpp" if tls is None else "smpp-tls",
                tls=tls,
                # A handshake gets the time a connection has to bind, and
                # one address as many at once as it may hold connections.
                handshake_timeout=self._link_options["bind_timeout"],
                max_handshakes_per_ip=self._max_per_ip,
            )
            for sock in sockets
        ]
        for acceptor in acceptors:
            acceptor.start()
        return acceptors

    @property
    def port(self) -> int:
        return self._port

    @property
    def tls_port(self) -> int:
        """The TLS listener's port; 0 without one."""
        return self._tls_port

    def stop_accepting(self) -> None:
        """Drain step one: no new binds, no new submit_sm."""
        self._accepting = False
        for acceptor in self._acceptors:
            acceptor.close()

    async def stop(self) -> None:
        self.stop_accepting()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        links = list(self._links)
        await asyncio.gather(*(link.unbind(timeout=2.0) for link in links), return_exceptions=True)
        for link in links:
            link.close()
        for acceptor in self._acceptors:
            await acceptor.wait_closed()
        queries = list(self._queries)
        for task in queries:
            task.cancel()
        await asyncio.gather(*queries, return_exceptions=True)

    def accounts_changed(self) -> None:
        """The account directory changed (an operator, a reload): every bind
        serves its account as it is now; a bind of an account now locked,
        gone, or whose SMPP credentials changed is unbound (CONTRACT §6
        "Account state": within 1 s of the lock)."""
        for links in list(self._binds.values()):
            for link in list(links):
                bind = link.owner
                assert isinstance(bind, EsmeBind)
                now = self._accounts.get(bind.account.id)
                if (
                    now is None
                    or now.locked
                    or now.smpp_system_id != bind.account.smpp_system_id
                    or now.smpp_password_hash != bind.account.smpp_password_hash
                ):
                    log.info(
                        "esme unbound by the router", account=bind.account.id, peer=link.peer,
                        reason="account locked" if now is not None and now.locked
                        else "credentials changed",
                    )  # fmt: skip
                    task = self._loop.create_task(self._unbind(link))
                    self._queries.add(task)
                    task.add_done_callback(self._queries.discard)
                else:
                    bind.account = now

    async def _unbind(self, link: SmppLink) -> None:
        try:
            await link.unbind(timeout=1.0)
        finally:
            link.close()

    def binds_of(self, account_id: str) -> int:
        return len(self._binds.get(account_id, ()))

    def connections_from(self, ip: str) -> int:
        return self._connections_of.get(ip, 0)

    # -------------------------------------------------------- LinkHandler

    def _connected(self, link: SmppLink) -> None:
        ip = link.peer.rsplit(":", 1)[0]
        count = self._connections_of.get(ip, 0)
        if count >= self._max_per_ip:
            # Accepted and closed at once (CONTRACT §11): one address cannot
            # take every descriptor the partners share.
            _limited.warning(
                "connection refused: too many from one address",
                key=ip,
                peer=link.peer,
                limit=self._max_per_ip,
            )
            link.close()
            return
        self._connections_of[ip] = count + 1
        self._ip_of[link] = ip
        self._links.add(link)

    def on_closed(self, link: SmppLink) -> None:
        self._links.discard(link)
        ip = self._ip_of.pop(link, None)
        if ip is not None:
            left = self._connections_of[ip] - 1
            if left:
                self._connections_of[ip] = left
            else:
                del self._connections_of[ip]
        bind = link.owner
        if isinstance(bind, EsmeBind):
            links = self._binds.get(bind.account.id, [])
            if link in links:
                links.remove(link)
            metrics.ESME_BINDS.labels(bind.account.id).set(len(links))
            log.info("esme unbound", account=bind.account.id, peer=link.peer)

    def on_request(self, link: SmppLink, pdu: Pdu) -> None:
        if isinstance(pdu, SubmitSm):
            self._submit_sm(link, pdu)
        elif isinstance(pdu, BindTransmitter | BindReceiver | BindTransceiver):
            self._bind(link, pdu)
        elif isinstance(pdu, QuerySm):
            self._took(link)
            task = self._loop.create_task(self._query_sm(link, pdu))
            self._queries.add(task)
            task.add_done_callback(self._queries.discard)
        elif hasattr(pdu, "response"):
            # A request this SMSC does not serve yet (SMPP 3.4 §5.1.3):
            # ESME_RINVCMDID in its own response keeps the session usable.
            link.send(pdu.response(command_status=CommandStatus.ESME_RINVCMDID))

    # -------------------------------------------------------- bind

    def _bind(self, link: SmppLink, pdu: BindTransmitter | BindReceiver | BindTransceiver) -> None:
        peer_ip = link.peer.rsplit(":", 1)[0]
        if not self._accepting:
            self._bind_checked(link, pdu, None, CommandStatus.ESME_RBINDFAIL, "draining")
            return
        if self._auth_throttle.retry_after(peer_ip) > 0:
            # A cool-down refuses right and wrong passwords alike: a right
            # guess must not be confirmed (CONTRACT §11).
            self._bind_checked(
                link, pdu, None, CommandStatus.ESME_RBINDFAIL, "authentication cool-down", True
            )
            return
        account = self._accounts.by_system_id(pdu.system_id)
        if account is None or account.smpp_password_hash is None:
            self._bind_checked(link, pdu, None, CommandStatus.ESME_RINVSYSID, "unknown system_id")
            return
        passwords = self._accounts.passwords
        if passwords.known(pdu.password, account.smpp_password_hash):
            self._bind_account(link, pdu, account, True)
            return
        # The first check of a password is a slow hash (scrypt), off the
        # loop; the bind is answered when it is done. The ESME waits for its
        # bind_resp before it sends anything else (SMPP 3.4 §2.2); the link
        # reads nothing more meanwhile.
        link.hold_requests()
        task = self._loop.create_task(self._bind_slowly(link, pdu, account))
        self._queries.add(task)
        task.add_done_callback(self._queries.discard)

    async def _bind_slowly(
        self,
        link: SmppLink,
        pdu: BindTransmitter | BindReceiver | BindTransceiver,
        account: Account,
    ) -> None:
        assert account.smpp_password_hash is not None
        try:
            ok = await self._accounts.passwords.check(pdu.password, account.smpp_password_hash)
        finally:
            link.release_requests()
        if link.owner is not None or not link.is_open:
            return  # gone (or bound by a bind sent in spite of the rules) meanwhile
        # The directory may have changed meanwhile: bind what it holds now.
        now = self._accounts.by_system_id(pdu.system_id)
        if now is None or now.smpp_password_hash != account.smpp_password_hash:
            ok = False
        self._bind_account(link, pdu, now or account, ok)

    def _bind_account(
        self,
        link: SmppLink,
        pdu: BindTransmitter | BindReceiver | BindTransceiver,
        account: Account,
        password_ok: bool,
    ) -> None:
        peer_ip = link.peer.rsplit(":", 1)[0]
        status, reason = CommandStatus.ESME_ROK, ""
        if not password_ok:
            status, reason = CommandStatus.ESME_RINVPASWD, "wrong password"
        elif not self._accepting:
            status, reason = CommandStatus.ESME_RBINDFAIL, "draining"
        elif account.locked:
            status, reason = CommandStatus.ESME_RBINDFAIL, "account locked"
        elif not account.bind_allowed(peer_ip):
            status, reason = CommandStatus.ESME_RBINDFAIL, "address not allowed"
        elif len(self._binds.get(account.id, ())) >= account.max_binds:
            status, reason = CommandStatus.ESME_RBINDFAIL, "too many binds"
        self._bind_checked(link, pdu, account, status, reason)

    def _bind_checked(
        self,
        link: SmppLink,
        pdu: BindTransmitter | BindReceiver | BindTransceiver,
        account: Account | None,
        status: int,
        reason: str,
        close: bool = False,
    ) -> None:
        peer_ip = link.peer.rsplit(":", 1)[0]
        throttle = self._auth_throttle
        failed = status in (CommandStatus.ESME_RINVSYSID, CommandStatus.ESME_RINVPASWD)
        if failed and throttle.failed(peer_ip):
            # Once per cool-down, never with the password tried.
            log.warning(
                "authentication cool-down started",
                peer=peer_ip,
                system_id=pdu.system_id,
                ingress="smpp",
                retry_after=round(throttle.retry_after(peer_ip)),
            )
            close = True
        if status != CommandStatus.ESME_ROK:
            _limited.info(
                "bind refused",
                key=(peer_ip, reason),
                system_id=pdu.system_id,
                peer=link.peer,
                status=f"0x{status:08X}",
                reason=reason,
            )
            link.send(pdu.response(command_status=status, system_id="smsrouter"))
            if close:
                link.close()  # what was sent still leaves first
            return
        assert account is not None
        link.owner = EsmeBind(
            account=account,
            can_receive=not isinstance(pdu, BindTransmitter),
            can_transmit=not isinstance(pdu, BindReceiver),
        )
        self._binds.setdefault(account.id, []).append(link)
        link.send(pdu.response(system_id="smsrouter"))
        metrics.ESME_BINDS.labels(account.id).set(len(self._binds[account.id]))
        log.info("esme bound", account=account.id, peer=link.peer, bind=type(pdu).__name__)
        if link.owner.can_receive:
            self.on_receiver_bound(account.id)

    # -------------------------------------------------------- submit_sm

    def _submit_sm(self, link: SmppLink, pdu: SubmitSm) -> None:
        started = time.perf_counter()
        bind = link.owner
        assert isinstance(bind, EsmeBind)
        account = bind.account

        if not self._accepting:
            # Draining for shutdown: a temporary refusal the ESME retries
            # (on another router instance, or on this one after restart).
            _refuse(link, pdu, CommandStatus.ESME_RTHROTTLED, "draining")
            return
        sender = parse_smpp_address(pdu.source_addr_ton, pdu.source_addr_npi, pdu.source_addr)
        to = parse_smpp_address(pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.destination_addr)
        try:
            # The UDH as sent (UDHI), or as the SAR TLVs stand for it.
            payload, udh, concat = user_data(pdu)
        except ValueError:
            _refuse(link, pdu, CommandStatus.ESME_RINVESMCLASS, "bad_udh")
            return
        now = utcnow()
        try:
            valid_until = parse_smpp_time(pdu.validity_period, now)
        except SmppTimeError:
            _refuse(link, pdu, CommandStatus.ESME_RINVEXPIRY, "bad_validity")
            return
        text, encoding = smpp_text(pdu.data_coding, payload)
        # The parts as encoded for counting are what a carrier gets (unless
        # it cuts for 16-bit references): kept, they are not encoded again.
        cut: list[bytes] = []
        if udh is not None or encoding == "binary":
            parts = 1
        else:
            cut = encode_text(text, encoding=encoding).parts
            parts = len(cut)
        draft = Draft(
            ingress="smpp", sender=sender, to=to, body=text, encoding=encoding,
            data_coding=pdu.data_coding, parts=parts, udh=udh,
            registered_delivery=pdu.registered_delivery, valid_until=valid_until,
        )  # fmt: skip
        message = self._admission.admit(account, draft, now)
        if isinstance(message, Refusal):
            status, reason = _STATUS_OF_REFUSAL.get(
                message.code, (CommandStatus.ESME_RX_P_APPN, message.code)
            )
            _refuse(link, pdu, status, reason)
            return
        message.payloads = cut
        if concat is not None:
            message.concat_group = (sender, message.recipient, concat.ref, concat.total)

        entry = _Submit(self, link, pdu, message, started)
        try:
            self._intake.accept_one(message, entry)
        except SenderQueueFull:
            _refuse(link, pdu, CommandStatus.ESME_RMSGQFUL, "sender_queue_full")
            return
        self._waiting_commit.append(entry)
        if self._deadline_timer is None:
            self._deadline_timer = self._loop.call_later(self._commit_deadline, self._expire)
        self._took(link)

    def _took(self, link: SmppLink) -> None:
        """A request of this bind is read and waits for its answer."""
        bind = link.owner
        assert isinstance(bind, EsmeBind)
        bind.outstanding += 1
        if bind.outstanding >= self._max_outstanding:
            # CONTRACT §11: at most max_outstanding read and not yet
            # answered; the rest waits in the partner's socket (TCP pushes
            # back) until answers bring the count down.
            link.hold_requests()

    def _committed(self, entry: _Submit, error: StoreError | None, refused: str | None) -> None:
        """The commit of a submit_sm settled (inside the writer)."""
        pdu = entry.pdu
        if pdu is None:
            return  # answered ESME_RSYSERR at its deadline already
        link = entry.link
        message = entry.message
        assert message is not None
        entry.pdu = entry.message = None
        if error is not None:
            # The commit failed: a genuine internal fault, the ESME retries.
            _limited.error("submit_sm not stored", message_id=str(message.id), error=str(error))
            link.send(pdu.response(command_status=CommandStatus.ESME_RSYSERR))
        elif refused is not None:
            # CONTRACT §4, §6 "Credit", "Daily thresholds": no credit, or the
            # day's limit reached (by any instance), is ESME_RX_P_APPN; over
            # max_tps (all instances) ESME_RTHROTTLED; nothing stored.
            metrics.rejected("smpp", refused).inc()
            status = (
                CommandStatus.ESME_RTHROTTLED
                if refused == THROUGHPUT_EXCEEDED
                else CommandStatus.ESME_RX_P_APPN
            )
            link.send(pdu.response(command_status=status))
        else:
            link.send(pdu.response(message_id=str(message.id)))
            metrics.ingress_latency("smpp").observe(time.perf_counter() - entry.started)
        self._answered.add(link)
        self._request_done(link)
        # Commits settle nearly in the order taken: the head goes at once.
        waiting = self._waiting_commit
        while waiting and waiting[0].pdu is None:
            waiting.popleft()

    def _expire(self) -> None:
        """The oldest submit_sm waiting for its commit reached its deadline:
        answer it (and every other past it) ESME_RSYSERR, the contract's
        answer while the database cannot commit (CONTRACT §11)."""
        self._deadline_timer = None
        now = time.perf_counter()
        waiting = self._waiting_commit
        expired = 0
        while waiting:
            entry = waiting[0]
            pdu = entry.pdu
            if pdu is not None:
                left = entry.started + self._commit_deadline - now
                if left > 0:
                    self._deadline_timer = self._loop.call_later(left, self._expire)
                    break
                entry.pdu = entry.message = None
                entry.link.send(pdu.response(command_status=CommandStatus.ESME_RSYSERR))
                self._request_done(entry.link)
                expired += 1
            waiting.popleft()
        if expired:
            metrics.rejected("smpp", "commit_timeout").inc(expired)
            _limited.warning(
                "submit_sm commit past its deadline, answered ESME_RSYSERR",
                count=expired,
                deadline=self._commit_deadline,
            )

    def _request_done(self, link: SmppLink) -> None:
        """A request of this bind was answered (see max_outstanding)."""
        bind = link.owner
        if isinstance(bind, EsmeBind):
            bind.outstanding -= 1
            if bind.outstanding == self._max_outstanding - 1:
                link.release_requests()

    def _send_answers(self) -> None:
        if self._answered:
            for link in self._answered:
                link.flush()
            self._answered.clear()

    # -------------------------------------------------------- query_sm

    async def _query_sm(self, link: SmppLink, pdu: QuerySm) -> None:
        try:
            await self._answer_query_sm(link, pdu)
        finally:
            self._request_done(link)

    async def _answer_query_sm(self, link: SmppLink, pdu: QuerySm) -> None:
        bind = link.owner
        assert isinstance(bind, EsmeBind)
        try:
            message_id = uuid.UUID(pdu.message_id)
            row = await get_message(self._pool, message_id, bind.account.id)
        except (ValueError, StoreError):
            row = None
        if row is None:
            link.send(pdu.response(command_status=CommandStatus.ESME_RQUERYFAIL))
            return
        link.send(
            pdu.response(
                message_id=pdu.message_id,
                final_date="" if row["done_at"] is None else format_smpp_time(row["done_at"]),
                message_state=query_state(row["status"]),
                error_code=0,
            )
        )

    # -------------------------------------------------------- receipts out

    async def deliver(self, n: Notification) -> None:
        """Channel for receipts and MO: send on a receiving bind of the account.

        Raises NotAvailable when the account has no receiving bind, and
        DeliveryFailed when the bind did not take and answer it within the
        delivery timeout, so that the dispatcher backs off this row and
        this account instead of waiting on a bind that stopped reading.
        """
        links = [
            link
            for link in self._binds.get(n.account_id, ())
            if isinstance(link.owner, EsmeBind) and link.owner.can_receive and link.is_open
        ]
        if not links:
            raise NotAvailable(n.account_id)
        link = self._receiver(n.account_id, links)
        if link is None:
            raise DeliveryFailed("no receiving bind of the account is answering")
        if n.kind == MO:
            pdus = build_mo(msgspec.json.decode(n.payload, type=InboundMessage), n.id)
        else:
            pdus = [build_receipt(msgspec.json.decode(n.payload, type=SmppReceipt))]
        timeout = self._delivery_timeout
        for pdu in pdus:
            try:
                resp = await link.request(pdu, timeout=timeout, wait=timeout)
            except (LinkClosed, ResponseTimeout) as exc:
                raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
            if resp.command_status != CommandStatus.ESME_ROK:
                raise DeliveryFailed(f"deliver_sm_resp 0x{resp.command_status:08X}")

    def receiving_accounts(self) -> list[str]:
        """Accounts with a receiving bind open on this instance (CONTRACT §9:
        their receipts and MO held by no instance come here)."""
        return [
            account_id
            for account_id, links in self._binds.items()
            if any(
                isinstance(link.owner, EsmeBind) and link.owner.can_receive and link.is_open
                for link in links
            )
        ]

    def _receiver(self, account_id: str, links: list[SmppLink]) -> SmppLink | None:
        """Round-robin over the account's receiving binds, taking the first
        that can send at once. When none can, the one still answering whose
        oldest unanswered request is the youngest (a bind that stopped
        reading has old ones): the deliver_sm waits there for a slot. None
        when every one stopped answering."""
        count = len(links)
        start = self._next_receiver.get(account_id, 0)
        self._next_receiver[account_id] = start + 1
        fallback: SmppLink | None = None
        fallback_at = -math.inf
        for k in range(count):
            i = (start + k) % count
            link = links[i]
            if link.can_request_now:
                self._next_receiver[account_id] = i + 1
                return link
            if link.answering:
                oldest = link.oldest_request_at
                at = math.inf if oldest is None else oldest
                if fallback is None or at > fallback_at:
                    fallback, fallback_at = link, at
        return fallback


def build_mo(mo: InboundMessage, ref: int) -> list[DeliverSm]:
    """An MO for an ESME, from its outbox row."""
    return mo_deliver_sms(mo.sender, mo.to, mo.text, ref)


def mo_deliver_sms(sender: str, to: str, text: str, ref: int) -> list[DeliverSm]:
    """A mobile-originated message as deliver_sm (esm_class 0, SMPP 3.4
    §4.6.1), one per part with a concat UDH when the text needs several
    (TS 23.040 §9.2.3.24.1)."""
    encoded = encode_text(text)
    return [
        DeliverSm(
            **address_fields(sender, to),
            esm_class=0x40 if encoded.part_count > 1 else 0,
            data_coding=encoded.data_coding,
            short_message=short_message,
        )
        for short_message in encoded.short_messages(ref & 0xFF)
    ]
