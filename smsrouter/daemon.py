"""The running router: builds every part from the config, starts them in
order, reloads on SIGHUP and drains on SIGTERM (CONTRACT §1).

Each part has an explicit start and stop (aiohttp's runner is the model);
`Router.stop()` stops them in the reverse order of their dependencies so
that nothing in flight loses the part it needs to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.machinery
import signal
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from smsrouter.connectors.carriers import CarrierPool, mo_receiver
from smsrouter.connectors.http_api import HttpApi
from smsrouter.connectors.http_server import HttpServer
from smsrouter.connectors.smpp_server import PartnerSmsc
from smsrouter.connectors.webhooks import WebhookChannel
from smsrouter.db_probe import DatabaseProbe
from smsrouter.embedded_pg import EmbeddedPostgres
from smsrouter.pg_supervisor import PostgresSupervisor
from smsrouter.router import store
from smsrouter.router.accounts import AccountDirectory
from smsrouter.router.admission import Admission, parse_recipient
from smsrouter.router.auth_throttle import AuthThrottle
from smsrouter.router.config import Config, load_config, parse_listen
from smsrouter.router.engine import DeliveryEngine
from smsrouter.router.inbound import Inbound
from smsrouter.router.intake import Intake
from smsrouter.router.liveness import DatabaseLiveness
from smsrouter.router.messages import Message, Status
from smsrouter.router.migrations import apply_migrations
from smsrouter.router.notifications import (
    MO,
    SMPP_RECEIPT,
    WEBHOOK,
    ByTarget,
    Dispatcher,
    plan_notifications,
)
from smsrouter.router.routes import Candidate, PriceTable, RouteTable
from smsrouter.router.senders import NumberType, RateDefaults, SenderRates, canonical_sender
from smsrouter.router.store import GroupCommit
from smsrouter.sims.carrier import CarrierSimulator

log = structlog.get_logger("daemon")

GC_YOUNG_THRESHOLD = 50_000


def build_routes(config: Config) -> RouteTable:
    return RouteTable(
        (r.prefix, [Candidate(c.name, c.cost, c.weight) for c in r.carriers]) for r in config.routes
    )


def build_rates(config: Config) -> SenderRates:
    r = config.rates
    return SenderRates(
        RateDefaults(
            long_code=r.long_code,
            toll_free=r.toll_free,
            short_code=r.short_code,
            alphanumeric=r.alphanumeric,
        ),
        {cc: {NumberType(k): v for k, v in rates.items()} for cc, rates in r.country.items()},
        {n.number: (NumberType(n.type), n.rate) for n in config.numbers},
    )


def build_admission(config: Config) -> Admission:
    return Admission(
        routes=build_routes(config),
        prices=PriceTable((p.prefix, p.price) for p in config.prices),
        senders={canonical_sender(n.number): n.account for n in config.numbers},
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
        body=row["body"],
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
    )


def build_kind() -> str:
    """ "compiled" when the router's modules are C extensions (the
    SMSROUTER_COMPILE=1 build, setup.py), else "interpreted"."""
    suffix = Path(store.__file__ or "").name.partition(".")[2]
    return "compiled" if f".{suffix}" in importlib.machinery.EXTENSION_SUFFIXES else "interpreted"


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
    """Everything one router process runs."""

    def __init__(self, config: Config, *, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.accounts = AccountDirectory(config.accounts)
        self.admission = build_admission(config)
        self.embedded_pg: EmbeddedPostgres | None = None
        self._pg_supervisor: PostgresSupervisor | None = None
        # What /healthz and /readyz answer about the database (CONTRACT §11),
        # fed by a SELECT 1 every second, read without a query per request.
        self.db_liveness = DatabaseLiveness(config.database.liveness_seconds)
        self._db_probe: DatabaseProbe | None = None
        self.pool: asyncpg.Pool
        self.writer: GroupCommit
        self.ingest_writer: GroupCommit
        self.engine: DeliveryEngine
        self.intake: Intake
        self.carriers: CarrierPool
        self.dispatcher: Dispatcher
        self.webhooks: WebhookChannel
        self.smsc: PartnerSmsc
        self.simulators: list[CarrierSimulator] = []
        self._http: HttpServer | None = None
        self.http_port = 0
        self.smpp_port = 0
        self._stopped = asyncio.Event()
        self._housekeeping: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._recovered = asyncio.Event()
        # Failed authentications per source address, counted across both
        # ingresses: a guess at an API key and one at an SMPP password come
        # from the same attacker (CONTRACT §11).
        self.auth_throttle = AuthThrottle()

    # ------------------------------------------------------------- readiness

    def is_ready(self) -> tuple[bool, dict[str, Any]]:
        carriers = {name: c.is_up for name, c in self.carriers.carriers.items()}
        database = self.db_liveness.reachable
        return database and any(carriers.values()), {"database": database, "carriers": carriers}

    # ------------------------------------------------------------- start

    async def start(self) -> None:
        cfg = self.config
        dsn = cfg.database.url
        if not dsn:
            self.embedded_pg = EmbeddedPostgres(Path(cfg.database.data_dir))
            dsn = await self.embedded_pg.start()
            log.info("embedded postgresql started", data_dir=cfg.database.data_dir)
        connect_kwargs: dict[str, Any] = {"command_timeout": 60}
        self.pool = await asyncpg.create_pool(
            dsn, min_size=2, max_size=cfg.database.pool_size, **connect_kwargs
        )
        if self.embedded_pg is not None:
            self._pg_supervisor = PostgresSupervisor(
                self.embedded_pg, pool=self.pool, connect_kwargs=connect_kwargs
            )
            self._pg_supervisor.start()
        self._db_probe = DatabaseProbe(self.pool, self.db_liveness)
        self._db_probe.start()
        async with self.pool.acquire() as conn:
            applied = await apply_migrations(conn)
        if applied:
            log.info("migrations applied", versions=applied)
        await store.ensure_accounts(self.pool, [(a.id, a.credit, a.currency) for a in cfg.accounts])

        # Two writers, two connections, commits in parallel: new messages on
        # one, everything that happens to them after (sent, receipts, ends,
        # outbox) on the other. A part is sent only after its message's
        # insert committed, so the second never refers to uncommitted rows,
        # and a burst of intake does not delay recording what carriers took
        # (the window in which a crash makes a resend).
        # Intake commits overlap on up to three connections, leaving the
        # pool room for the status writer and for reads.
        self.ingest_writer = GroupCommit(
            self.pool,
            max_batch=cfg.database.max_batch,
            name="ingest",
            connections=max(1, min(3, cfg.database.pool_size - 3)),
        )
        # What carriers took, their receipts and final statuses cannot be
        # refused back to anyone: this writer holds them until the database
        # takes them (CONTRACT §11), and the engine releases nothing meanwhile.
        self.writer = GroupCommit(
            self.pool,
            max_batch=cfg.database.max_batch,
            plan_notifications=plan_notifications(cfg.webhooks.retry_hours),
            min_interval=cfg.database.status_flush_interval,
            retry=True,
        )
        for writer in (self.ingest_writer, self.writer):
            writer.on_health.append(self._database_health)
        self.ingest_writer.start()
        self.writer.start()

        for sim in cfg.simulators:
            simulator = CarrierSimulator.from_config(sim)
            await simulator.start("127.0.0.1", sim.port)
            self.simulators.append(simulator)
            log.info("carrier simulator listening", name=sim.name, port=simulator.port)

        # The engine and the carrier pool refer to each other: the pool hands
        # receipts and "bound" events to the engine, the engine submits
        # through the pool.
        self.inbound = Inbound(
            writer=self.writer,
            owner_of=lambda number: self.admission.senders.get(canonical_sender(number)),
            accounts=lambda: self.accounts,
            retry_hours=cfg.webhooks.retry_hours,
        )
        self.carriers = CarrierPool(
            cfg.carriers,
            on_receipt=lambda op: self.engine.receipt(op),
            on_up=lambda name: self.engine.carrier_up(name),
            on_mo=mo_receiver(self.inbound),
        )
        self.engine = DeliveryEngine(
            writer=self.writer,
            carriers=self.carriers,
            routes=self.admission.routes,
            rates=build_rates(cfg),
            max_per_sender=cfg.queues.max_per_sender,
        )
        self.intake = Intake(self.ingest_writer, self.engine)

        resumed = await store.pending_messages(self.pool)
        for row in resumed:
            message = message_of(row)
            self.engine.enqueue(message, first_part=message.parts_sent)
        if resumed:
            log.info("resumed queued messages", count=len(resumed))

        self.smsc = PartnerSmsc(
            accounts=lambda: self.accounts,
            admission=lambda: self.admission,
            intake=self.intake,
            pool_of=lambda: self.pool,
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
        self.webhooks = WebhookChannel(
            lambda account_id: self.accounts.get(account_id),
            timeout=cfg.webhooks.timeout,
            deny_private_networks=cfg.webhooks.deny_private_networks,
        )
        await self.webhooks.start()
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
        self.writer.on_notifications = self.dispatcher.add
        self.dispatcher.add(await store.pending_notifications(self.pool))

        self.engine.start()
        self.dispatcher.start()
        self.carriers.start()
        self._housekeeping = asyncio.create_task(self._sweep(), name="housekeeping")
        self._recovery = asyncio.create_task(self._recover(), name="database-recovery")

        host, port = parse_listen(cfg.smpp.listen)
        await self.smsc.start(host, port)
        self.smpp_port = self.smsc.port
        api = HttpApi(
            self,
            max_body_bytes=cfg.http.max_body_bytes,
            deny_private_callbacks=cfg.webhooks.deny_private_networks,
            request_timeout=cfg.http.request_timeout,
            header_timeout=cfg.http.header_timeout,
            max_connections_per_ip=cfg.http.max_connections_per_ip,
            auth_throttle=self.auth_throttle,
        )
        host, port = parse_listen(cfg.http.listen)
        await api.server.start(host, port, backlog=1024)
        self._http = api.server
        self.http_port = api.server.port
        log.info(
            "smsrouter ready",
            http=f"http://{host}:{self.http_port}",
            smpp=f"{parse_listen(cfg.smpp.listen)[0]}:{self.smpp_port}",
            build=build_kind(),
        )

    def _database_health(self, healthy: bool) -> None:
        if healthy:
            self._recovered.set()

    async def _recover(self) -> None:
        """After a database outage: what a commit in doubt stored after all
        is queued, and outbox rows written by a commit whose answer was lost
        are dispatched (the dispatcher adds only rows it does not hold)."""
        while True:
            await self._recovered.wait()
            self._recovered.clear()
            try:
                await self.intake.resolve_doubts(
                    lambda ids: store.stored_message_ids(self.pool, ids)
                )
                self.dispatcher.add_missing(await store.pending_notifications(self.pool))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("recovery after a database outage failed; retrying", error=repr(exc))
                await asyncio.sleep(1.0)
                self._recovered.set()

    async def _sweep(self) -> None:
        """Every few seconds: MO parts that waited too long for their siblings."""
        while True:
            await asyncio.sleep(5)
            self.inbound.sweep()

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
        self.config = config
        self.accounts = AccountDirectory(config.accounts)
        self.admission = build_admission(config)
        self.engine.routes = self.admission.routes
        self.engine.rates = build_rates(config)
        self.engine.scheduler.set_rates(self.engine.rates.rate_of)
        log.info("config reloaded", path=str(self.config_path))

    # ------------------------------------------------------------- stop

    async def stop(self) -> None:
        """Drain: ingress first, then in-flight carrier work, then the rest."""
        drain = self.config.shutdown.drain_seconds
        log.info("draining", drain_seconds=drain)
        self.smsc.stop_accepting()
        for task in (self._housekeeping, self._recovery):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._http is not None:
            self._http.stop_listening()
        await self.engine.stop(drain)
        await self.dispatcher.stop(timeout=min(drain, 5.0))
        await self.carriers.stop()
        await self.smsc.stop()
        if self._http is not None:
            await self._http.stop(drain)
        await self.webhooks.stop()
        await self.ingest_writer.stop()
        # A database still away at shutdown: what could not be recorded is
        # given up after the drain (the next start sends those parts again).
        await self.writer.stop(give_up_after=drain)
        for sim in self.simulators:
            await sim.stop()
        await self.stop_database_watch()
        await close_pool(self.pool)
        if self.embedded_pg is not None:
            await self.embedded_pg.stop()
        log.info("stopped")

    async def stop_database_watch(self) -> None:
        """Before the pool closes and the embedded server stops: no probe
        on a closing pool, no restart racing the server's own stop."""
        for watcher in (self._db_probe, self._pg_supervisor):
            if watcher is not None:
                await watcher.stop()


async def run(config: Config, config_path: Path | None) -> int:
    router = Router(config, config_path=config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await router.start()
    except BaseException:
        log.exception("start failed")
        await _stop_partial(router)
        return 1
    loop.add_signal_handler(signal.SIGHUP, router.reload)
    # Everything built at start-up lives as long as the process: move it out
    # of the collector's sight, and collect the young generation less often.
    # Per-message objects are freed by reference counting as they go; with
    # the default threshold (700) the cycle collector ran thousands of times
    # a second under load and took over a tenth of the CPU.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    await stop.wait()
    await router.stop()
    return 0


async def _stop_partial(router: Router) -> None:
    """Stop what a failed start had started (the embedded PostgreSQL above all)."""
    for task in (router._housekeeping, router._recovery):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    for attr in ("engine", "dispatcher", "carriers", "smsc", "ingest_writer", "writer"):
        part = getattr(router, attr, None)
        if part is None:
            continue
        try:
            if attr in ("engine",):
                await part.stop(0)
            elif attr == "dispatcher":
                await part.stop(timeout=0)
            else:
                await part.stop()
        except Exception:
            pass
    if router._http is not None:
        await router._http.stop(0)
    for sim in router.simulators:
        await sim.stop()
    await router.stop_database_watch()
    pool = getattr(router, "pool", None)
    if pool is not None:
        await close_pool(pool)
    if router.embedded_pg is not None:
        await router.embedded_pg.stop()
