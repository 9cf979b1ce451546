"""The running router: builds every part from the config, starts them in
order, reloads on SIGHUP and drains on SIGTERM (CONTRACT §1).

Each part has an explicit start and stop (aiohttp's runner is the model);
`Router.stop()` stops them in the reverse order of their dependencies so
that nothing in flight loses the part it needs to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib.machinery
import importlib.metadata
import os
import signal
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import structlog

from smsrouter.config import load_config
from smsrouter.connectors.admin_api import AdminApi
from smsrouter.connectors.carriers import CarrierPool, mo_receiver
from smsrouter.connectors.http_api import HttpApi
from smsrouter.connectors.smpp_server import PartnerSmsc
from smsrouter.connectors.webhooks import WebhookChannel
from smsrouter.db_probe import DatabaseProbe
from smsrouter.embedded_pg import EmbeddedPostgres
from smsrouter.logs import recent_errors
from smsrouter.pg_supervisor import PostgresSupervisor
from smsrouter.router import metrics
from smsrouter.router.accounts import Account, AccountDirectory
from smsrouter.router.admission import Admission, Compliance, parse_recipient
from smsrouter.router.auth_throttle import AuthThrottle
from smsrouter.router.config import Config, content_rule, parse_listen
from smsrouter.router.content import compile_content_rules
from smsrouter.router.engine import DeliveryEngine
from smsrouter.router.inbound import Inbound
from smsrouter.router.intake import Intake
from smsrouter.router.liveness import DatabaseLiveness
from smsrouter.router.messages import Message, Status, utcnow
from smsrouter.router.migrations import apply_migrations
from smsrouter.router.notifications import (
    MO,
    SMPP_RECEIPT,
    WEBHOOK,
    ByTarget,
    Dispatcher,
    OutboxPlanner,
)
from smsrouter.router.opt_outs import OptOutList
from smsrouter.router.routes import Candidate, PriceTable, RouteTable
from smsrouter.router.sender_guard import SenderGuard
from smsrouter.router.sender_ids import SenderIdRules, SenderRule
from smsrouter.router.sender_states import SenderStates
from smsrouter.router.senders import NumberType, RateDefaults, SenderRates, canonical_sender
from smsrouter.router.sent_callbacks import SentCallbacks
from smsrouter.router.sent_callbacks import wanted as sent_callbacks_wanted
from smsrouter.router.shards import Ownership
from smsrouter.router.status import BindCount, StatusBoard
from smsrouter.router.store import group_commit
from smsrouter.router.store.alarm_watch import AlarmedDay, AlarmWatch
from smsrouter.router.store.directory import Directory, NumberRow, sync_config, touch_api_keys
from smsrouter.router.store.directory_watch import DirectoryWatch
from smsrouter.router.store.group_commit import GroupCommit
from smsrouter.router.store.listeners import CommitListeners
from smsrouter.router.store.notices import expand_batches
from smsrouter.router.store.opt_out_watch import OptOutWatch
from smsrouter.router.store.partitions import log_run, prepare_partitions, run_retention
from smsrouter.router.store.queries import (
    pending_messages,
    pending_notifications,
    stored_message_ids,
    stored_since,
)
from smsrouter.router.store.schema import stored_text
from smsrouter.router.store.sender_watch import SenderWatch
from smsrouter.router.store.shard_keeper import ShardKeeper
from smsrouter.router.tls import TlsConfigError, server_context
from smsrouter.sims.carrier import CarrierSimulator
from smsrouter.workers import WorkerRole, report_ready, watch_parent

log = structlog.get_logger("daemon")

GC_YOUNG_THRESHOLD = 50_000
# Housekeeping: MO parts waiting for their siblings are looked at every
# SWEEP_SECONDS.
SWEEP_SECONDS = 5.0
# Retention (CONTRACT §10): partitions made ahead and expired ones dropped
# at start and then every RETENTION_SECONDS, so that a day's partitions go
# within the hour after they expire; a run that failed is tried again after
# RETENTION_RETRY_SECONDS.
RETENTION_SECONDS = 3600.0
RETENTION_RETRY_SECONDS = 60.0
# Intake operations waiting before a second flush starts beside one in
# flight (GroupCommit.parallel_batch): fewer, fuller flushes for a crowd
# of one-message requests; an ESME's window still overlaps its commits.
INGEST_PARALLEL_BATCH = 32


def build_routes(config: Config) -> RouteTable:
    return RouteTable(
        (r.prefix, [Candidate(c.name, c.cost, c.weight) for c in r.carriers]) for r in config.routes
    )


def build_rates(config: Config, numbers: Sequence[NumberRow] = ()) -> SenderRates:
    r = config.rates
    return SenderRates(
        RateDefaults(
            long_code=r.long_code,
            toll_free=r.toll_free,
            short_code=r.short_code,
            alphanumeric=r.alphanumeric,
        ),
        {cc: {NumberType(k): v for k, v in rates.items()} for cc, rates in r.country.items()},
        {n.number: (NumberType(n.type), n.rate) for n in numbers},
    )


def admission_rules(config: Config, numbers: Sequence[NumberRow] = ()) -> dict[str, Any]:
    """What `Admission` takes from the config and the directory's numbers
    (the file's [[numbers]] and the operator's, CONTRACT §8), at start and
    whenever either changes."""
    return {
        "routes": build_routes(config),
        "prices": PriceTable((p.prefix, p.price) for p in config.prices),
        "senders": {canonical_sender(n.number): n.account_id for n in numbers},
        "plans": {
            plan.name: PriceTable((p.prefix, p.price) for p in plan.prices)
            for plan in config.price_plans
        },
        "compliance": compliance_of(config, numbers),
    }


def compliance_of(config: Config, numbers: Sequence[NumberRow] = ()) -> Compliance:
    """CONTRACT §6's router-wide rules from `[compliance]`, `[[sender_rules]]`
    and `[[content_rules]]` (checked already by the config's loader), with
    the type of each sender number."""
    return Compliance(
        sender_types={canonical_sender(n.number): NumberType(n.type) for n in numbers},
        sender_ids=SenderIdRules(
            (SenderRule(r.country, r.alphanumeric, r.numeric) for r in config.sender_rules),
            config.compliance.protected_sender_ids,
        ),
        content=compile_content_rules(content_rule(c) for c in config.content_rules),
        max_per_recipient_per_hour=config.compliance.max_per_recipient_per_hour,
        opt_out_min_recipients=config.compliance.opt_out_min_recipients,
        opt_out_flag_rate=config.compliance.opt_out_flag_rate,
        opt_out_suspend_rate=config.compliance.opt_out_suspend_rate,
    )


def message_of(row: asyncpg.Record) -> Message:
    """A stored message back in memory after a restart."""
    recipient = parse_recipient(row["recipient"])
    return Message(
        id=row["id"],
        account_id=row["account_id"],
        ingress=row["ingress"],
        sender=row["sender"],
        recipient=row["recipient"],
        body=stored_text(row["body"]),
        encoding=row["encoding"],
        data_coding=row["data_coding"],
        parts=row["parts"],
        price=row["price"],
        created_at=row["created_at"],
        udh=row["udh"],
        client_ref=row["client_ref"],
        callback_url=row["callback_url"],
        registered_delivery=row["registered_delivery"],
        valid_until=row["valid_until"],
        send_at=row["send_at"],
        status=Status(row["status"]),
        parts_sent=row["parts_sent"],
        country=recipient.country if recipient else None,
        kind=row["kind"],
    )


class OutboxSide:
    """What the shard keeper asks of the outbox's side (CONTRACT §9): the
    dispatcher's rows, and the partner SMSC's receiving binds."""

    def __init__(self, dispatcher: Dispatcher, smsc: PartnerSmsc) -> None:
        self.add = dispatcher.add
        self.hand_off_waiting = dispatcher.hand_off_waiting
        self.receiving_accounts = smsc.receiving_accounts


def build_kind() -> str:
    """ "compiled" when the router's modules are C extensions (the
    SMSROUTER_COMPILE=1 build, setup.py), else "interpreted"."""
    suffix = Path(group_commit.__file__ or "").name.partition(".")[2]
    return "compiled" if f".{suffix}" in importlib.machinery.EXTENSION_SUFFIXES else "interpreted"


def package_version() -> str:
    """The installed distribution's version; "unknown" when run from a
    checkout that was never installed."""
    try:
        return importlib.metadata.version("smsrouter")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def publish_build_info() -> None:
    """smsrouter_build_info{version,build} 1 (CONTRACT §5): which release and
    which build a dashboard is looking at."""
    metrics.BUILD_INFO.labels(package_version(), build_kind()).set(1)


def publish_instance_info(instance_id: str) -> None:
    """smsrouter_instance_info{instance,pid} 1 (CONTRACT §9): which of the
    processes sharing a port (`--workers N`) answered a scrape."""
    metrics.INSTANCE_INFO.labels(instance_id, str(os.getpid())).set(1)


# Seconds a pool may take to close before its connections are cut: a
# connection still checked out by a stuck operation must not hang SIGTERM.
POOL_CLOSE_SECONDS = 5.0


async def close_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
    except TimeoutError:
        log.warning("database connections cut at shutdown", seconds=POOL_CLOSE_SECONDS)
        pool.terminate()


class Router:
    """Everything one router process runs.

    `start()` builds and starts the parts in the order they depend on each
    other, and each part registers its stop on an AsyncExitStack as it
    starts (aiohttp's cleanup contexts are the model). `stop()`, and a start
    that fails half-way, unwind that stack in reverse: the listeners stop
    taking work first, in-flight carrier work drains next, the database
    goes last. Every task a part starts is that part's to cancel and await.
    """

    # What start() logs once it is up; a worker of `--workers N` says
    # "worker ready", its parent "smsrouter ready" once all are.
    ready_event = "smsrouter ready"

    def __init__(self, config: Config, *, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        # CONTRACT §9: this process among those sharing the database.
        self.instance_id = config.instance.id or f"{socket.gethostname()}:{os.getpid()}"
        # One directory and one admission for the life of the process: a
        # reload replaces what they hold (apply_config), every part sees it.
        # Filled from the database once it is up (store.directory), kept
        # current by a DirectoryWatch.
        self.accounts = AccountDirectory()
        self._numbers: tuple[NumberRow, ...] = ()
        self.directory_watch: DirectoryWatch
        # CONTRACT §6 "Opt-out": every account's list, loaded at start and
        # kept current by an OptOutWatch.
        self.opt_outs = OptOutList()
        self.opt_out_watch: OptOutWatch
        # CONTRACT §6 "Opt-out rate": flagged and suspended sender numbers,
        # loaded at start, followed by a SenderWatch.
        self.sender_states = SenderStates()
        self.admission = Admission(
            **admission_rules(config), opt_outs=self.opt_outs, sender_states=self.sender_states,
        )  # fmt: skip
        self.sender_guard: SenderGuard
        self.sender_watch: SenderWatch
        self.alarm_watch: AlarmWatch
        self.keeper: ShardKeeper
        self.ownership: Ownership
        self.embedded_pg: EmbeddedPostgres | None = None
        # What /healthz and /readyz answer about the database (CONTRACT §11),
        # fed by a SELECT 1 every second, read without a query per request.
        self.db_liveness = DatabaseLiveness(config.database.liveness_seconds)
        self.pool: asyncpg.Pool
        self.writer: GroupCommit
        self.ingest_writer: GroupCommit
        # Who hears of each writer's flushes (store.listeners): the parts
        # built after the writers they need join as they are built.
        self._status_listeners: CommitListeners
        self.planner: OutboxPlanner
        self._ingest_listeners: CommitListeners
        self.engine: DeliveryEngine
        self.sent_callbacks: SentCallbacks
        self.intake: Intake
        self.inbound: Inbound
        self.carriers: CarrierPool
        self.dispatcher: Dispatcher
        self.webhooks: WebhookChannel
        self.smsc: PartnerSmsc
        self.api: HttpApi
        self.simulators: list[CarrierSimulator] = []
        self.http_port = 0
        self.smpp_port = 0
        self.smpp_tls_port = 0  # 0: no TLS listener
        self.admin_port = 0
        self._recovered = asyncio.Event()
        # Failed authentications per source address, counted across both
        # ingresses: a guess at an API key and one at an SMPP password come
        # from the same attacker (CONTRACT §11).
        self.auth_throttle = AuthThrottle()
        # The stops of everything started, unwound by stop().
        self._stack = contextlib.AsyncExitStack()
        self._reloading: asyncio.Task[None] | None = None
        # Accounts whose day's count was read from the database, and the
        # reads under way for accounts given thresholds at run time.
        self._days_counted: set[str] = set()
        self._day_tasks: set[asyncio.Task[None]] = set()
        # Seconds the unwinding gives in-flight work: none for a failed
        # start, [shutdown] drain_seconds for a stop.
        self._drain = 0.0
        # Whether start() got past loading: a sender state loaded before is
        # logged as found, one after as news.
        self._started = False

    # ------------------------------------------------------------- readiness

    def is_ready(self) -> tuple[bool, dict[str, Any]]:
        carriers = {name: c.is_up for name, c in self.carriers.carriers.items()}
        database = self.db_liveness.reachable
        return database and any(carriers.values()), {"database": database, "carriers": carriers}

    def _status_board(self) -> StatusBoard:
        """What the operator's status page shows (CONTRACT §8), read from
        this process's parts at each look: no query."""
        carriers, engine, liveness = self.carriers, self.engine, self.db_liveness
        return StatusBoard(
            binds=lambda: [BindCount(name, *c.binds) for name, c in carriers.carriers.items()],
            health=engine.health,
            queues=engine.scheduler,
            # The engine's rates are replaced on reload.
            rate_of=lambda key: engine.rates.rate_of(key),
            senders=self.sender_states,
            errors=recent_errors,
            database_reachable=lambda: liveness.reachable,
            about={
                "instance": self.instance_id,
                "version": package_version(),
                "build": build_kind(),
            },
        )

    # ------------------------------------------------------------- start

    async def start(self) -> None:
        """Start every part; if one fails, what started is stopped again."""
        publish_build_info()
        publish_instance_info(self.instance_id)
        async with contextlib.AsyncExitStack() as stack:
            await self._start_database(stack)
            await self._start_simulators(stack)
            self._start_writers(stack)
            await self._build_message_path()
            await self._start_delivery(stack)
            await self._start_listeners(stack)
            self._stack = stack.pop_all()
        where = {
            "http": f"http://{parse_listen(self.config.http.listen)[0]}:{self.http_port}",
            "smpp": f"{parse_listen(self.config.smpp.listen)[0]}:{self.smpp_port}",
        }
        if self.admin is not None:
            where["admin"] = f"http://{parse_listen(self.config.admin.listen)[0]}:{self.admin_port}"
        if self.smpp_tls_port:
            where["smpp_tls"] = (
                f"{parse_listen(self.config.smpp.tls_listen)[0]}:{self.smpp_tls_port}"
            )
        self.ready_info: dict[str, Any] = {
            **where, "build": build_kind(), "instance": self.instance_id, "pid": os.getpid()
        }  # fmt: skip
        log.info(self.ready_event, **self.ready_info)

    async def _start_database(self, stack: contextlib.AsyncExitStack) -> None:
        """The embedded server (or the configured one), the pool, the
        watchers of both, the schema."""
        cfg = self.config
        dsn = cfg.database.url
        if not dsn:
            embedded = EmbeddedPostgres(Path(cfg.database.data_dir))
            # Registered first: a start that fails half-way still stops it.
            stack.push_async_callback(embedded.stop)
            dsn = await embedded.start()
            self.embedded_pg = embedded
            log.info("embedded postgresql started", data_dir=cfg.database.data_dir)
        # Each connection names its instance: the outbox rows its writer
        # stores are that instance's to deliver (migration 0011). The
        # insert's trigger keeps a daily alarm's POST as long as a receipt's
        # (migration 0014).
        connect_kwargs: dict[str, Any] = {
            "command_timeout": 60,
            "server_settings": {
                "smsrouter.instance": self.instance_id,
                "smsrouter.webhook_retry_hours": repr(float(cfg.webhooks.retry_hours)),
            },
        }
        self.pool = await asyncpg.create_pool(
            dsn, min_size=2, max_size=cfg.database.pool_size, **connect_kwargs
        )
        stack.push_async_callback(close_pool, self.pool)
        if self.embedded_pg is not None:
            supervisor = PostgresSupervisor(
                self.embedded_pg, pool=self.pool, connect_kwargs=connect_kwargs
            )
            supervisor.start()
            # No restart racing the server's own stop.
            stack.push_async_callback(supervisor.stop)
        probe = DatabaseProbe(self.pool, self.db_liveness)
        probe.start()
        stack.push_async_callback(probe.stop)  # no probe on a closing pool
        async with self.pool.acquire() as conn:
            applied = await apply_migrations(conn)
        if applied:
            log.info("migrations applied", versions=applied)
        async with self.pool.acquire() as conn:
            made = await prepare_partitions(conn, utcnow().date())
        if made:
            log.info("partitions made", partitions=made)
        # The file's accounts and numbers into their rows, then the rows into
        # this process; a NOTIFY of any later change loads them again.
        async with self.pool.acquire() as conn:
            await sync_config(conn, cfg.accounts, cfg.numbers, cfg.account_fields)
        self.directory_watch = DirectoryWatch(self.pool, self._apply_directory)
        await self.directory_watch.reload()
        self.directory_watch.start()
        stack.push_async_callback(self.directory_watch.stop)
        # CONTRACT §6 "Opt-out": every account's list, loaded before any
        # listener opens and kept current by NOTIFY.
        self.opt_out_watch = OptOutWatch(self.pool, self.opt_outs)
        opted_out = await self.opt_out_watch.start()
        stack.push_async_callback(self.opt_out_watch.stop)
        log.info("opt-outs loaded", numbers=opted_out)

    async def _start_simulators(self, stack: contextlib.AsyncExitStack) -> None:
        for sim in self.config.simulators:
            simulator = CarrierSimulator.from_config(sim)
            await simulator.start("127.0.0.1", sim.port)
            stack.push_async_callback(simulator.stop)
            self.simulators.append(simulator)
            log.info("carrier simulator listening", name=sim.name, port=simulator.port)

    def _start_writers(self, stack: contextlib.AsyncExitStack) -> None:
        cfg = self.config
        # A final status's outbox rows are planned in the commit that ends
        # its message, from the first flush on; the dispatcher, which sends
        # them, joins in _start_delivery.
        self.planner = OutboxPlanner(cfg.webhooks.retry_hours)
        self._status_listeners = CommitListeners(self.planner)
        # What carriers took, their receipts and final statuses cannot be
        # refused back to anyone: this writer holds them until the database
        # takes them (CONTRACT §11), and the engine releases nothing meanwhile.
        self.writer = GroupCommit(
            self.pool,
            max_batch=cfg.database.max_batch,
            listener=self._status_listeners,
            min_interval=cfg.database.status_flush_interval,
            retry=True,
        )
        # Two writers, two connections, commits in parallel: new messages on
        # one, everything that happens to them after (sent, receipts, ends,
        # outbox) on the other. A part is sent only after its message's
        # insert committed, so the second never refers to uncommitted rows,
        # and a burst of intake does not delay recording what carriers took
        # (the window in which a crash makes a resend).
        # Intake commits overlap on up to three connections, leaving the
        # pool room for the status writer and for reads. The SMPP server
        # joins its listeners in _start_delivery: its answers leave as a
        # flush settles.
        self._ingest_listeners = CommitListeners()
        self.ingest_writer = GroupCommit(
            self.pool,
            max_batch=cfg.database.max_batch,
            listener=self._ingest_listeners,
            name="ingest",
            connections=max(1, min(3, cfg.database.pool_size - 3)),
            parallel_batch=INGEST_PARALLEL_BATCH,
        )
        for writer in (self.ingest_writer, self.writer):
            writer.on_health.append(self._database_health)
        self.writer.start()
        # A database still away at shutdown: what could not be recorded is
        # given up after the drain (the next start sends those parts again).
        stack.push_async_callback(lambda: self.writer.stop(give_up_after=self._drain))
        self.ingest_writer.start()
        stack.push_async_callback(self.ingest_writer.stop)

    async def _build_message_path(self) -> None:
        """The parts a message goes through, each built after what it needs:
        intake → engine → carriers, and back through inbound."""
        cfg = self.config
        self.sender_guard = SenderGuard(
            states=self.sender_states,
            thresholds=lambda: self.admission.compliance,
            pool=self.pool,
            decided_by=self.instance_id,
        )
        self.inbound = Inbound(
            writer=self.writer,
            admission=self.admission,
            accounts=self.accounts,
            retry_hours=cfg.webhooks.retry_hours,
            opt_outs=self.opt_outs,
            on_opt_out=self.sender_guard.opted_out,
        )
        self.carriers = CarrierPool(cfg.carriers, on_mo=mo_receiver(self.inbound))
        self.ownership = Ownership(time.monotonic)
        self.engine = DeliveryEngine(
            writer=self.writer,
            ownership=self.ownership,
            hand_off=lambda ids: self.keeper.hand_off(ids),
            carriers=self.carriers,
            routes=self.admission.routes,
            rates=build_rates(cfg, self._numbers),
            max_per_sender=cfg.queues.max_per_sender,
            held=self._account_locked,
            refused=self.sender_guard.refuses,
        )
        self.sender_guard.use_engine(self.engine)
        self.sent_callbacks = SentCallbacks(
            self.writer, self.accounts.get, cfg.webhooks.retry_hours
        )
        self._hook_sent_callbacks()
        self.intake = Intake(
            self.ingest_writer, self.engine, self.admission.not_stored, self.sender_guard.sent,
            limited=self.admission.reached, throttled=self.admission.throttled,
        )  # fmt: skip
        # CONTRACT §6 "Opt-out": the replies to STOP/START/HELP take the
        # normal path.
        self.inbound.use_intake(self.intake)
        await self._start_days()
        self.sender_watch = SenderWatch(
            self.pool, lambda rows: self.sender_guard.apply(rows, loaded=not self._started)
        )
        await self.sender_watch.reload()
        self.alarm_watch = AlarmWatch(self.pool, self._daily_alarms)
        await self.alarm_watch.reload()
        # CONTRACT §9: the queued work of the shards this instance claims
        # is loaded by the keeper, at its start and at every later claim.
        self.keeper = ShardKeeper(
            self.pool,
            instance_id=self.instance_id,
            lease_seconds=self.config.instance.lease_seconds,
            engine=self.engine,
            pending=self._pending_messages,
        )
        self.engine.on_fenced = self.keeper.renew_soon

    async def _pending_messages(self, ids: list[uuid.UUID] | None) -> list[Message]:
        return [message_of(row) for row in await pending_messages(self.pool, ids)]

    async def _start_delivery(self, stack: contextlib.AsyncExitStack) -> None:
        """Outbound: webhooks, the partner SMSC's binds, notifications,
        carriers, the engine; unwound engine first, so that in-flight
        carrier requests drain while carriers and channels are still up."""
        cfg = self.config
        self.webhooks = WebhookChannel(
            self.accounts.get,
            timeout=cfg.webhooks.timeout,
            deny_private_networks=cfg.webhooks.deny_private_networks,
        )
        await self.webhooks.start()
        stack.push_async_callback(self.webhooks.stop)
        self.api = HttpApi(
            self,
            max_body_bytes=cfg.http.max_body_bytes,
            deny_private_callbacks=cfg.webhooks.deny_private_networks,
            request_timeout=cfg.http.request_timeout,
            header_timeout=cfg.http.header_timeout,
            max_connections_per_ip=cfg.http.max_connections_per_ip,
            auth_throttle=self.auth_throttle,
        )
        # Requests still running finish within the drain, after the binds.
        stack.push_async_callback(lambda: self.api.server.stop(self._drain))
        self.admin: AdminApi | None = None
        if cfg.admin.tokens:
            # CONTRACT §8: the operator API, on a listener of its own; none
            # without a token that could use it.
            self.admin = AdminApi(
                self.pool,
                [(t.name, t.token) for t in cfg.admin.tokens],
                price_plans=lambda: {plan.name for plan in self.config.price_plans},
                request_timeout=cfg.http.request_timeout,
                header_timeout=cfg.http.header_timeout,
                auth_throttle=self.auth_throttle,
                opt_outs=self.opt_outs,
                status=self._status_board().document,
            )
            admin_server = self.admin.server
            stack.push_async_callback(lambda: admin_server.stop(self._drain))
        self.smsc = PartnerSmsc(
            accounts=self.accounts,
            admission=self.admission,
            intake=self.intake,
            pool=self.pool,
            window=cfg.smpp.window,
            bind_timeout=cfg.smpp.bind_timeout,
            enquire_link_interval=cfg.smpp.enquire_link_interval,
            inactivity_timeout=cfg.smpp.inactivity_timeout,
            response_timeout=cfg.smpp.response_timeout,
            max_connections_per_ip=cfg.smpp.max_connections_per_ip,
            max_outstanding=cfg.smpp.max_outstanding,
            auth_throttle=self.auth_throttle,
            # One commit deadline for both ingresses (CONTRACT §11 "A hung
            # database"): a submit_sm waits for its commit as long as an
            # HTTP request does, then gets ESME_RSYSERR.
            commit_deadline=cfg.http.request_timeout,
        )
        self._ingest_listeners.add(self.smsc)
        stack.push_async_callback(self.smsc.stop)
        self.dispatcher = Dispatcher(
            writer=self.writer,
            channels={
                WEBHOOK: self.webhooks,
                SMPP_RECEIPT: self.smsc,
                MO: ByTarget(http=self.webhooks, smpp=self.smsc),
            },
            concurrency=cfg.webhooks.concurrency,
        )
        self.smsc.on_receiver_bound = self.dispatcher.account_ready
        self._status_listeners.add(self.dispatcher)
        # What this instance's notification batches still hold (a crash)
        # becomes outbox rows, loaded with the rest.
        async with self.pool.acquire() as conn:
            await expand_batches(
                conn, self.instance_id, owners=[self.instance_id], but=self.dispatcher.batches()
            )
        self.dispatcher.add(await pending_notifications(self.pool, self.instance_id))
        self.keeper.outbox = OutboxSide(self.dispatcher, self.smsc)
        self._watch_backlog(self.dispatcher)

        self.carriers.start(self.engine)
        stack.push_async_callback(self.carriers.stop)
        # Once the dispatcher stopped, what it still held is set free.
        stack.push_async_callback(self.keeper.leave)
        self.dispatcher.start()
        stack.push_async_callback(lambda: self.dispatcher.stop(timeout=min(self._drain, 5.0)))
        # Started before the engine and stopped after it drained: its stop
        # hands the shards back once nothing of theirs is at a carrier.
        await self.keeper.start()
        stack.push_async_callback(self.keeper.stop)
        self.engine.start()
        stack.push_async_callback(lambda: self.engine.stop(self._drain))
        self.sender_watch.start()
        stack.push_async_callback(self.sender_watch.stop)
        self.alarm_watch.start()
        stack.push_async_callback(self.alarm_watch.stop)
        stack.push_async_callback(self.sender_guard.stop)
        self._started = True
        for name, chore in (
            ("housekeeping", self._sweep),
            ("database-recovery", self._recover),
            ("retention", self._retention),
        ):
            stack.push_async_callback(_cancel_and_wait, asyncio.create_task(chore(), name=name))

    async def _start_listeners(self, stack: contextlib.AsyncExitStack) -> None:
        """Ingress last, and the first to stop: nothing new is taken while
        what was taken drains."""
        cfg = self.config
        host, port = parse_listen(cfg.smpp.listen)
        await self.smsc.start(host, port)
        stack.callback(self.smsc.stop_accepting)
        self.smpp_port = self.smsc.port
        if cfg.smpp.tls_cert:
            # CONTRACT §4 "TLS": a second listener on the same SMSC.
            host, port = parse_listen(cfg.smpp.tls_listen)
            await self.smsc.start_tls(
                host, port, server_context(cfg.smpp.tls_cert, cfg.smpp.tls_key)
            )
            self.smpp_tls_port = self.smsc.tls_port
        host, port = parse_listen(cfg.http.listen)
        await self.api.server.start(host, port, backlog=1024)
        stack.callback(self.api.server.stop_listening)
        self.http_port = self.api.server.port
        if self.admin is not None:
            host, port = parse_listen(cfg.admin.listen)
            await self.admin.server.start(host, port)
            stack.callback(self.admin.server.stop_listening)
            self.admin_port = self.admin.server.port

    async def _start_days(self) -> None:
        """Each account's count of its current day, from what is stored: a
        restart does not reopen a day's limit nor raise its alarm again."""
        now = utcnow()
        for account in self.accounts:
            if not (account.daily_limit or account.daily_alarm):
                continue
            self._days_counted.add(account.id)
            local = now.astimezone(account.zone)
            day_start = datetime.combine(local.date(), dt_time(0), account.zone)
            stored = await stored_since(self.pool, account.id, day_start)
            self.admission.start_day(account, local.date(), stored)
            self._watch_alarm(account)

    @staticmethod
    def _watch_backlog(dispatcher: Dispatcher) -> None:
        """smsrouter_outbox_backlog{kind}: read from the dispatcher's own
        counts at scrape time, never a query (CONTRACT §5)."""
        for kind in (WEBHOOK, SMPP_RECEIPT, MO):
            metrics.OUTBOX_BACKLOG.labels(kind).set_function(
                functools.partial(_backlog, dispatcher, kind)
            )

    def _watch_alarm(self, account: Account) -> None:
        """smsrouter_account_alarm{account}: 1 while its day is past the alarm."""
        daily, account_id, zone = self.admission.daily, account.id, account.zone
        metrics.ACCOUNT_ALARM.labels(account_id).set_function(
            lambda: float(daily.alarmed(account_id, utcnow().astimezone(zone).date()))
        )

    def _daily_alarms(self, alarmed: list[AlarmedDay]) -> None:
        """Accounts whose day passed its daily_alarm (CONTRACT §6): raised by
        the insert that got there, once for all instances (migration 0014:
        its signed POST to the alert_url is an outbox row); here the gauge,
        and a warning from each instance that learns of it."""
        for a in alarmed:
            account = self.accounts.get(a.account_id)
            if account is None or not self.admission.daily.mark_alarmed(a.account_id, a.day):
                continue
            self._watch_alarm(account)
            log.warning("daily alarm", account=a.account_id, count=a.count, day=a.day.isoformat())

    def _database_health(self, healthy: bool) -> None:
        if healthy:
            self._recovered.set()

    async def _recover(self) -> None:
        """After a database outage: what a commit in doubt stored after all
        is queued, the notification batches of commits whose answer was lost
        become outbox rows, and outbox rows written by such commits are
        dispatched (the dispatcher adds only rows it does not hold)."""
        while True:
            await self._recovered.wait()
            self._recovered.clear()
            try:
                # A load: the keeper may have queued and sent a stored one.
                with self.engine.loading():
                    await self.intake.resolve_doubts(lambda ids: stored_message_ids(self.pool, ids))
                doubtful = self.planner.take_doubtful()
                try:
                    async with self.pool.acquire() as conn:
                        await expand_batches(conn, self.instance_id, ids=doubtful)
                except BaseException:
                    self.planner.give_back(doubtful)  # for the next try
                    raise
                self.dispatcher.add_missing(
                    await pending_notifications(self.pool, self.instance_id)
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("recovery after a database outage failed; retrying", error=repr(exc))
                await asyncio.sleep(1.0)
                self._recovered.set()

    async def _sweep(self) -> None:
        """Every few seconds: MO parts that waited too long for their
        siblings, and the API keys used since the last time."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.inbound.sweep()
            used = self.accounts.take_used()
            if used:
                # api_keys.last_used_at (CONTRACT §8), a few seconds late:
                # one statement per sweep, not a write per request.
                try:
                    async with self.pool.acquire() as conn:
                        await touch_api_keys(conn, used)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("API key use not recorded", error=repr(exc))

    async def _retention(self) -> None:
        """CONTRACT §10: today's partitions and the next days' made, expired
        ones dropped ([retention] days; Idempotency-Keys after their 24 h),
        the ledger folded ([retention] ledger_days), at start and hourly."""
        while True:
            retention = self.config.retention
            try:
                async with self.pool.acquire() as conn:
                    run = await run_retention(
                        conn, utcnow(), days=retention.days, ledger_days=retention.ledger_days
                    )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("retention run failed; retrying", error=repr(exc))
                await asyncio.sleep(RETENTION_RETRY_SECONDS)
                continue
            log_run(run)
            await asyncio.sleep(RETENTION_SECONDS)

    # ------------------------------------------------------------- reload

    def reload(self) -> None:
        """SIGHUP: routes, prices, accounts and numbers anew; binds stay."""
        if self.config_path is None:
            return
        try:
            config = load_config(self.config_path)
        except Exception as exc:
            log.error("config reload failed; keeping the running config", error=str(exc))
            return
        previous = self._reloading
        self._reloading = asyncio.get_running_loop().create_task(
            self._reload(config, previous), name="config-reload"
        )

    async def _reload(self, config: Config, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)  # one at a time, in order
        try:
            await self.apply_config(config)
        except Exception as exc:
            log.error("config reload failed; keeping the running config", error=repr(exc))
            return
        log.info("config reloaded", path=str(self.config_path))

    async def apply_config(self, config: Config) -> None:
        """Each part takes what it reads of a new config: the file's accounts
        and numbers are written to their rows first (every instance hears
        of it), then this process takes the rest in one turn."""
        async with self.pool.acquire() as conn:
            await sync_config(conn, config.accounts, config.numbers, config.account_fields)
        self.config = config
        self.admission.apply_config(**admission_rules(config, self._numbers))
        self.engine.apply_config(self.admission.routes, build_rates(config, self._numbers))
        self._renew_tls(config)
        await self.directory_watch.reload()

    def _renew_tls(self, config: Config) -> None:
        """SIGHUP re-reads the TLS files (CONTRACT §4 "TLS"): new partner
        connections get the new certificate, new carrier binds verify
        against the CA bundle as it is now; open sessions keep theirs. The
        listener's address stays until a restart."""
        if self.smpp_tls_port and config.smpp.tls_cert:
            try:
                context = server_context(config.smpp.tls_cert, config.smpp.tls_key)
            except TlsConfigError as exc:  # changed again since the check
                log.error("smpp TLS certificate not reloaded", error=str(exc))
            else:
                self.smsc.renew_tls(context)
        elif config.smpp.tls_cert:
            log.warning("smpp TLS listener needs a restart to start", key="smpp.tls_cert")
        self.carriers.renew_tls()

    def _account_locked(self, account_id: str) -> bool:
        account = self.accounts.get(account_id)
        return account is not None and account.locked

    def _apply_directory(self, directory: Directory) -> None:
        """A new snapshot of the accounts' rows: every part sees it at once."""
        self.accounts.apply(directory)
        if directory.numbers != self._numbers:
            self._numbers = directory.numbers
            self.admission.apply_config(**admission_rules(self.config, self._numbers))
            if hasattr(self, "engine"):
                rates = build_rates(self.config, self._numbers)
                self.engine.apply_config(self.admission.routes, rates)
        if hasattr(self, "sent_callbacks"):
            self._hook_sent_callbacks()
        if hasattr(self, "smsc"):
            self.smsc.accounts_changed()
            self._count_new_days()

    def _hook_sent_callbacks(self) -> None:
        """The engine tells of sent messages only while an account asks for
        their webhook (accounts' callback_sent)."""
        wants = sent_callbacks_wanted(self.accounts)
        self.engine.on_sent = self.sent_callbacks.message_sent if wants else None

    def _count_new_days(self) -> None:
        """An account given daily thresholds while the router runs (CONTRACT
        §8) counts its day from what it has stored, read in the background."""
        for account in self.accounts:
            if (
                account.daily_limit or account.daily_alarm
            ) and account.id not in self._days_counted:
                self._days_counted.add(account.id)
                task = asyncio.get_running_loop().create_task(self._count_day(account))
                self._day_tasks.add(task)
                task.add_done_callback(self._day_tasks.discard)

    async def _count_day(self, account: Account) -> None:
        local = utcnow().astimezone(account.zone)
        day_start = datetime.combine(local.date(), dt_time(0), account.zone)
        try:
            stored = await stored_since(self.pool, account.id, day_start)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("daily count not read", account=account.id, error=repr(exc))
            self._days_counted.discard(account.id)  # read at the next change
            return
        self.admission.catch_up_day(account, local.date(), stored)
        self._watch_alarm(account)

    # ------------------------------------------------------------- stop

    async def stop(self) -> None:
        """Drain: ingress first, then in-flight carrier work, then the rest."""
        self._drain = self.config.shutdown.drain_seconds
        log.info("draining", drain_seconds=self._drain)
        if self._reloading is not None:
            await asyncio.gather(self._reloading, return_exceptions=True)
        for task in list(self._day_tasks):
            task.cancel()
        await asyncio.gather(*self._day_tasks, return_exceptions=True)
        await self._stack.aclose()
        log.info("stopped")


def _backlog(dispatcher: Dispatcher, kind: str) -> float:
    return float(dispatcher.backlog(kind))


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run(config: Config, config_path: Path | None, worker: WorkerRole | None = None) -> int:
    """The daemon until SIGTERM/SIGINT; `worker`: as one of the processes of
    `smsrouter run --workers N` (smsrouter/workers.py)."""
    if worker is not None:
        # Its parent runs the [[simulators]], once for all the workers.
        config = msgspec.structs.replace(config, simulators=[])
    router = Router(config, config_path=config_path)
    if worker is not None:
        router.ready_event = "worker ready"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await router.start()  # a failed start has stopped what it started
    except BaseException:
        log.exception("start failed")
        return 1
    loop.add_signal_handler(signal.SIGHUP, router.reload)
    parent_watch = None
    if worker is not None:
        # Ready once SIGHUP is handled: the parent forwards it from now on.
        report_ready(worker, router.ready_info)
        parent_watch = asyncio.create_task(watch_parent(worker, stop.set), name="parent-watch")
    # Everything built at start-up lives as long as the process: move it out
    # of the collector's sight, and collect the young generation less often.
    # Per-message objects are freed by reference counting as they go; with
    # the default threshold (700) the cycle collector ran thousands of times
    # a second under load and took over a tenth of the CPU.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    await stop.wait()
    if parent_watch is not None:
        await _cancel_and_wait(parent_watch)
    await router.stop()
    return 0
