"""`smsrouter` command line (CONTRACT §1)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from smsrouter.admin_cli import add_admin_parser
from smsrouter.config import load_config
from smsrouter.router.config import Config, ConfigError

#: The demo config of a checkout, then the copy shipped in the package (a
#: link to the same file in the repository), so that an installed wheel runs
#: from any directory (CONTRACT §1).
DEFAULT_CONFIG = Path("config/demo.toml")
PACKAGED_CONFIG = Path(__file__).resolve().parent / "demo.toml"


def default_config() -> Path:
    """The config `run`, `check-config` and `db migrate` use without one named."""
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else PACKAGED_CONFIG


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid config", file=sys.stderr)
        for key, problem in exc.errors:
            print(f"  {key}: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def _event_loop() -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_run(args: argparse.Namespace) -> int:
    from smsrouter.logs import configure_logging
    from smsrouter.workers import Supervisor, worker_role

    path = Path(args.config) if args.config else default_config()
    if not path.exists():
        print(f"config file not found: {path} (pass --config PATH)", file=sys.stderr)
        return 2
    config = _load(path)
    configure_logging(config.log.level, args.log_format or config.log.format)
    _event_loop()
    if args.workers > 1:
        # CONTRACT §9: a parent that runs N daemons (smsrouter/workers.py).
        supervisor = Supervisor(config, path.absolute(), args.workers, log_format=args.log_format)
        return asyncio.run(supervisor.run())
    from smsrouter.daemon import run

    worker = worker_role(os.environ)
    if worker is not None:
        # Every line of a worker says which one wrote it.
        structlog.contextvars.bind_contextvars(worker=worker.index)
    return asyncio.run(run(config, path, worker))


def _worker_count(text: str) -> int:
    """`--workers N`: a whole number, at least 1."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {count}")
    return count


def cmd_check_config(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else default_config()
    config = _load(path)
    print(
        f"{path}: ok ({len(config.carriers)} carriers, {len(config.routes)} routes, "
        f"{len(config.accounts)} accounts, {len(config.numbers)} numbers)"
    )
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from smsrouter.embedded_pg import EmbeddedPostgres
    from smsrouter.logs import configure_logging

    config = _load(Path(args.config) if args.config else default_config())
    configure_logging(config.log.level, config.log.format)

    async def migrate() -> list[str]:
        import asyncpg

        from smsrouter.router.migrations import apply_migrations

        embedded = None
        dsn = config.database.url
        if not dsn:
            embedded = EmbeddedPostgres(Path(config.database.data_dir))
            dsn = await embedded.start()
        try:
            conn = await asyncpg.connect(dsn)
            try:
                return await apply_migrations(conn)
            finally:
                await conn.close()
        finally:
            if embedded is not None:
                await embedded.stop()

    applied = asyncio.run(migrate())
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def _rfc3339(text: str) -> datetime:
    """--now: an RFC 3339 time with its offset (or Z)."""
    try:
        at = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"an RFC 3339 time needs its offset (or Z): {text!r}")
    return at.astimezone(UTC)


def cmd_db_retention(args: argparse.Namespace) -> int:
    """CONTRACT §10: the daemon's retention run, now and as if the time were
    --now; the partitions dropped, one a line."""
    from smsrouter.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError
    from smsrouter.logs import configure_logging

    config = _load(Path(args.config) if args.config else default_config())
    configure_logging(config.log.level, config.log.format)
    # Standard output is the partitions dropped, one a line; logs go aside.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    now = args.now or datetime.now(UTC)

    async def retain() -> Any:
        import asyncpg

        from smsrouter.router.store.partitions import run_retention

        embedded = None
        dsn = config.database.url
        if not dsn:
            embedded = EmbeddedPostgres(Path(config.database.data_dir))
            dsn = await embedded.start()
        try:
            conn = await asyncpg.connect(dsn)
            try:
                return await run_retention(
                    conn,
                    now,
                    days=config.retention.days,
                    ledger_days=config.retention.ledger_days,
                    # Partitions are made for the days the daemon lives in,
                    # not for a --now it is told.
                    create=args.now is None,
                )
            finally:
                await conn.close()
        finally:
            if embedded is not None:
                await embedded.stop()

    try:
        run = asyncio.run(retain())
    except EmbeddedPostgresError as exc:
        print(f"smsrouter db retention: {exc}", file=sys.stderr)
        return 1
    if not run.ran:
        print("another process is running retention; nothing done", file=sys.stderr)
        return 1
    for name in run.dropped:
        print(name)
    for name, why in run.kept.items():
        print(f"kept {name}: {why}", file=sys.stderr)
    for name, rows in run.default_rows.items():
        print(f"warning: {name} holds {rows} rows", file=sys.stderr)
    if run.ledger_rows_folded:
        print(f"ledger: {run.ledger_rows_folded} rows folded", file=sys.stderr)
    if run.locks_held:
        longest = max(run.locks_held) * 1000
        print(f"longest detach, its lock wait included: {longest:.1f} ms", file=sys.stderr)
    if not run.dropped:
        print("nothing to drop", file=sys.stderr)
    return 0


def _weights(text: str) -> dict[str, float]:
    """'DELIVRD=95,UNDELIV=5' → {'DELIVRD': 95.0, 'UNDELIV': 5.0}."""
    out: dict[str, float] = {}
    for item in text.split(","):
        word, _, weight = item.partition("=")
        out[word.strip().upper()] = float(weight or 1)
    return out


def cmd_sim_carrier(args: argparse.Namespace) -> int:
    from smsrouter.logs import configure_logging
    from smsrouter.router.tls import TlsConfigError
    from smsrouter.sims.carrier import CarrierSimulator, parse_receipt_forms
    from smsrouter.sims.distributions import parse_mix, parse_status_mix

    configure_logging("info", args.log_format or "json")
    try:
        sim = CarrierSimulator(
            system_id=args.system_id,
            password=args.password,
            receipt_delay=args.receipt_delay,
            receipts=parse_mix(args.receipts, str.upper),
            seed=args.seed,
            tps=args.tps,
            tps_burst=args.tps_burst,
            resp_latency=args.resp_latency,
            errors=parse_status_mix(args.errors),
            id_format=args.id_format,
            receipt_id_format=args.receipt_id_format,
            receipt_first=args.receipt_first,
            receipt_forms=parse_receipt_forms(args.receipt_form),
            record=args.record,
            window=args.window,
            control_port=args.control_port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except (ValueError, TlsConfigError) as exc:
        print(f"smsrouter sim carrier: {exc}", file=sys.stderr)
        return 2
    _event_loop()

    async def serve() -> None:
        await sim.start(args.host, args.port)
        structlog.get_logger("sim").info(
            "carrier simulator listening",
            port=sim.port,
            control_port=sim.control.port if sim.control is not None else None,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await sim.stop()

    asyncio.run(serve())
    return 0


def _run_load(make: Callable[[], Any], ran: Callable[[dict[str, Any]], bool]) -> int:
    """Run a load client until it ends (or SIGINT/SIGTERM), print its JSON line.

    Exit 0 when the run reached its peer (`ran`), whatever the peer answered:
    errors are results; 1 when it never got through (no bind, no answer).
    """
    from smsrouter.sims.stats import emit

    _event_loop()

    async def go() -> dict[str, Any]:
        load = make()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, load.stop)
        return await load.run()

    summary = asyncio.run(go())
    emit(summary)
    return 0 if ran(summary) else 1


def cmd_sim_esme(args: argparse.Namespace) -> int:
    from smsrouter.sims.esme_load import EsmeLoad, EsmeOptions

    try:
        options = EsmeOptions.from_specs(
            args.senders,
            args.destinations,
            host=args.host,
            port=args.port,
            system_id=args.system_id,
            password=args.password,
            system_type=args.system_type,
            binds=args.binds,
            window=args.window,
            count=args.count,
            duration=args.duration,
            rate=args.rate,
            text=args.text,
            encoding=args.encoding,
            registered_delivery=0 if args.no_receipts else 1,
            receipt_timeout=args.receipt_timeout,
            response_timeout=args.response_timeout,
            id_format=args.id_format,
            receipt_id_format=args.receipt_id_format,
        )
        return _run_load(lambda: EsmeLoad(options), lambda s: s["binds"] > 0)
    except (ValueError, OSError) as exc:
        print(f"smsrouter sim esme: {exc}", file=sys.stderr)
        return 2


def cmd_sim_http(args: argparse.Namespace) -> int:
    from smsrouter.sims.http_load import HttpLoad, HttpOptions

    try:
        options = HttpOptions.from_specs(
            args.senders,
            args.destinations,
            url=args.url,
            api=args.api,
            key=args.key,
            idempotency_keys=args.idempotency_keys,
            username=args.username,
            password=args.password,
            concurrency=args.concurrency,
            count=args.count,
            duration=args.duration,
            rate=args.rate,
            batch=args.batch,
            text=args.text,
            timeout=args.timeout,
            callback_url=args.callback_url,
            webhook_port=args.webhook_port,
            webhook_host=args.webhook_host,
            webhook_secret=args.webhook_secret,
            receipt_timeout=args.receipt_timeout,
            dlr_mask=args.dlr_mask,
            dlr_level=args.dlr_level,
        )
        return _run_load(
            lambda: HttpLoad(options), lambda s: bool(s["statuses"]) or not s["requests"]
        )
    except (ValueError, OSError) as exc:
        print(f"smsrouter sim http: {exc}", file=sys.stderr)
        return 2


def cmd_sim_webhook(args: argparse.Namespace) -> int:
    from smsrouter.sims.stats import emit
    from smsrouter.sims.webhook import serve

    _event_loop()
    summary = asyncio.run(
        serve(args.host, args.port, args.secret, status=args.status, keep_bodies=False)
    )
    emit(summary)
    return 0


def _add_load_parsers(sim_sub: Any) -> None:
    """`sim esme`, `sim http`, `sim webhook`: load clients and a callback sink."""
    numbers = (
        "one number, a range like '+1415555{0000..0999}', a comma list, or @FILE (one per line)"
    )

    esme = sim_sub.add_parser(
        "esme", help="SMPP ESME load client: binds, submits, matches receipts; one JSON line"
    )
    esme.add_argument("--host", default="127.0.0.1")
    esme.add_argument("--port", type=int, default=2775)
    esme.add_argument("--system-id", default="demo")
    esme.add_argument("--password", default="demo-pw")
    esme.add_argument("--system-type", default="")
    esme.add_argument("--binds", type=int, default=1, help="transceiver binds (default 1)")
    esme.add_argument("--window", type=int, default=100, help="outstanding submits per bind")
    esme.add_argument("--count", type=int, default=1000, help="messages to send at most")
    esme.add_argument("--duration", type=float, default=60.0, help="seconds of sending at most")
    esme.add_argument("--rate", type=float, default=0.0, help="submits/s cap, 0 = none")
    esme.add_argument("--senders", default="12345", help=f"source numbers: {numbers}")
    esme.add_argument("--destinations", default="+14155550123", help=f"recipients: {numbers}")
    esme.add_argument("--text", default="smsrouter load test", help="'{n}' = message number")
    esme.add_argument("--encoding", choices=["auto", "gsm7", "ucs2"], default="auto")
    esme.add_argument("--no-receipts", action="store_true", help="registered_delivery 0")
    esme.add_argument("--receipt-timeout", type=float, default=30.0, help="seconds")
    esme.add_argument("--response-timeout", type=float, default=30.0, help="seconds")
    esme.add_argument(
        "--id-format",
        choices=["auto", "hex", "decimal"],
        default="auto",
        help="how submit_sm_resp writes message ids; with both formats given, receipts "
        "match by value (auto: as written, else the other base)",
    )
    esme.add_argument(
        "--receipt-id-format",
        choices=["auto", "hex", "decimal"],
        default="auto",
        help="how receipts write them (default: as --id-format)",
    )
    esme.set_defaults(func=cmd_sim_esme)

    http = sim_sub.add_parser(
        "http", help="HTTP load client for smsrouter, Kannel or Jasmin; one JSON line"
    )
    http.add_argument("--url", default="http://127.0.0.1:8080", help="base URL of the API")
    http.add_argument("--api", choices=["smsrouter", "kannel", "jasmin"], default="smsrouter")
    http.add_argument("--key", default="demo-key", help="smsrouter API key")
    http.add_argument(
        "--idempotency-keys", action="store_true", help="smsrouter: an Idempotency-Key per request"
    )
    http.add_argument("--username", default="", help="kannel / jasmin user")
    http.add_argument("--password", default="", help="kannel / jasmin password")
    http.add_argument("--concurrency", type=int, default=50, help="keep-alive connections")
    http.add_argument("--count", type=int, default=1000, help="messages to send at most")
    http.add_argument("--duration", type=float, default=60.0, help="seconds of sending at most")
    http.add_argument("--rate", type=float, default=0.0, help="requests/s cap, 0 = none")
    http.add_argument("--batch", type=int, default=1, help="recipients per request")
    http.add_argument("--senders", default="12345", help=f"source numbers: {numbers}")
    http.add_argument("--destinations", default="+14155550123", help=f"recipients: {numbers}")
    http.add_argument("--text", default="smsrouter load test")
    http.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    http.add_argument(
        "--webhook-port",
        type=int,
        help="also receive the callbacks / dlr-url on this port (0 = any) and match them",
    )
    http.add_argument("--webhook-host", default="127.0.0.1")
    http.add_argument("--webhook-secret", default="", help="check X-Smsrouter-Signature")
    http.add_argument("--callback-url", default="", help="callback / dlr-url to request")
    http.add_argument("--receipt-timeout", type=float, default=30.0, help="seconds")
    http.add_argument("--dlr-mask", type=int, default=31, help="kannel dlr-mask")
    http.add_argument("--dlr-level", type=int, default=2, help="jasmin dlr-level")
    http.set_defaults(func=cmd_sim_http)

    webhook = sim_sub.add_parser(
        "webhook", help="DLR callback receiver; JSON summary on SIGTERM/SIGINT"
    )
    webhook.add_argument("--host", default="127.0.0.1")
    webhook.add_argument("--port", type=int, default=8090)
    webhook.add_argument("--secret", default="", help="HMAC key of X-Smsrouter-Signature")
    webhook.add_argument("--status", type=int, default=200, help="HTTP status to answer")
    webhook.set_defaults(func=cmd_sim_webhook)


def _version() -> str:
    try:
        return importlib.metadata.version("smsrouter")
    except importlib.metadata.PackageNotFoundError:  # sources run without an install
        return "unknown"


DEFAULT_HELP = f"config file (default {DEFAULT_CONFIG} if it exists, else the packaged demo)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smsrouter", description="SMS message router")
    p.add_argument("--version", action="version", version=f"smsrouter {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the router daemon")
    run.add_argument("--config", help=DEFAULT_HELP)
    run.add_argument("--log-format", choices=["json", "console"])
    run.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="router processes sharing the ports and the database (default 1: this one alone)",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("path", nargs="?", help=DEFAULT_HELP)
    check.set_defaults(func=cmd_check_config)

    db = sub.add_parser("db", help="database tasks")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="apply schema migrations")
    migrate.add_argument("--config", help=DEFAULT_HELP)
    migrate.set_defaults(func=cmd_db_migrate)
    retain = db_sub.add_parser(
        "retention", help="drop expired partitions now ([retention] days), print them"
    )
    retain.add_argument("--config", help=DEFAULT_HELP)
    retain.add_argument(
        "--now", type=_rfc3339, metavar="RFC3339", help="as if the time were this (default: now)"
    )
    retain.set_defaults(func=cmd_db_retention)

    sim = sub.add_parser("sim", help="simulators of the outside world")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    carrier = sim_sub.add_parser(
        "carrier",
        help="a carrier SMSC simulator",
        epilog="DELAY: seconds (0.5), a uniform range (0.1-0.5) or exp:MEAN (exp:0.2).",
    )
    carrier.add_argument("--host", default="127.0.0.1")
    carrier.add_argument("--port", type=int, default=2776)
    carrier.add_argument("--system-id", default="", help="accept only this system_id")
    carrier.add_argument("--password", default="", help="accept only this password")
    carrier.add_argument("--tps", type=float, default=0.0, help="submit_sm/s per bind, 0 = none")
    carrier.add_argument("--tps-burst", type=float, help="token bucket size (default 1 s of tps)")
    carrier.add_argument(
        "--resp-latency", default="0", metavar="DELAY", help="before each submit_sm_resp"
    )
    carrier.add_argument(
        "--errors",
        default="0=1",
        help="submit_sm_resp command_status weights, e.g. 0x58=1,0x0B=1,0=98",
    )
    carrier.add_argument("--receipt-delay", default="0.5", metavar="DELAY")
    carrier.add_argument(
        "--receipts",
        default="DELIVRD=1",
        help="receipt stat[:err] weights, e.g. DELIVRD=95,UNDELIV:034=4,EXPIRD=1",
    )
    carrier.add_argument("--id-format", choices=["hex", "decimal"], default="hex")
    carrier.add_argument(
        "--receipt-id-format", choices=["hex", "decimal"], help="default: as --id-format"
    )
    carrier.add_argument(
        "--receipt-first", type=float, default=0.0, help="probability of receipt before resp"
    )
    carrier.add_argument(
        "--receipt-form",
        default="both",
        help="text, tlv, both, mixed (a third each) or weights like text=1,both=3",
    )
    carrier.add_argument("--record", choices=["full", "count"], default="full")
    carrier.add_argument("--window", type=int, default=1024, help="receipts in flight per bind")
    carrier.add_argument("--control-port", type=int, help="HTTP control API on 127.0.0.1")
    carrier.add_argument("--seed", type=int)
    carrier.add_argument("--tls-cert", default="", metavar="PEM", help="serve SMPP over TLS")
    carrier.add_argument("--tls-key", default="", metavar="PEM", help="the --tls-cert's key")
    carrier.add_argument("--log-format", choices=["json", "console"])
    carrier.set_defaults(func=cmd_sim_carrier)
    _add_load_parsers(sim_sub)
    add_admin_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
