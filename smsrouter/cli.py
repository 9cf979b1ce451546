"""`smsrouter` command line (CONTRACT §1)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import structlog

from router.config import Config, ConfigError, load_config

DEFAULT_CONFIG = Path("config/demo.toml")


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
    from smsrouter.daemon import run
    from smsrouter.logs import configure_logging

    path = Path(args.config) if args.config else DEFAULT_CONFIG
    if not path.exists():
        print(f"config file not found: {path} (pass --config PATH)", file=sys.stderr)
        return 2
    config = _load(path)
    configure_logging(config.log.level, args.log_format or config.log.format)
    _event_loop()
    return asyncio.run(run(config, path))


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(Path(args.path))
    print(
        f"{args.path}: ok ({len(config.carriers)} carriers, {len(config.routes)} routes, "
        f"{len(config.accounts)} accounts, {len(config.numbers)} numbers)"
    )
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from smsrouter.embedded_pg import EmbeddedPostgres
    from smsrouter.logs import configure_logging

    config = _load(Path(args.config) if args.config else DEFAULT_CONFIG)
    configure_logging(config.log.level, config.log.format)

    async def migrate() -> list[str]:
        import asyncpg

        from router.migrations import apply_migrations

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


def _weights(text: str) -> dict[str, float]:
    """'DELIVRD=95,UNDELIV=5' → {'DELIVRD': 95.0, 'UNDELIV': 5.0}."""
    out: dict[str, float] = {}
    for item in text.split(","):
        word, _, weight = item.partition("=")
        out[word.strip().upper()] = float(weight or 1)
    return out


def cmd_sim_carrier(args: argparse.Namespace) -> int:
    from sims.carrier import CarrierSimulator
    from smsrouter.logs import configure_logging

    configure_logging("info", args.log_format or "json")
    _event_loop()

    async def serve() -> None:
        sim = CarrierSimulator(
            system_id=args.system_id,
            password=args.password,
            receipt_delay=args.receipt_delay,
            receipts=_weights(args.receipts),
            seed=args.seed,
        )
        await sim.start(args.host, args.port)
        structlog.get_logger("sim").info("carrier simulator listening", port=sim.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await sim.stop()

    asyncio.run(serve())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smsrouter", description="SMS message router")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the router daemon")
    run.add_argument("--config", help=f"config file (default {DEFAULT_CONFIG})")
    run.add_argument("--log-format", choices=["json", "console"])
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("path")
    check.set_defaults(func=cmd_check_config)

    db = sub.add_parser("db", help="database tasks")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="apply schema migrations")
    migrate.add_argument("--config", help=f"config file (default {DEFAULT_CONFIG})")
    migrate.set_defaults(func=cmd_db_migrate)

    sim = sub.add_parser("sim", help="simulators of the outside world")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    carrier = sim_sub.add_parser("carrier", help="a carrier SMSC simulator")
    carrier.add_argument("--host", default="127.0.0.1")
    carrier.add_argument("--port", type=int, default=2776)
    carrier.add_argument("--system-id", default="")
    carrier.add_argument("--password", default="")
    carrier.add_argument("--receipt-delay", type=float, default=0.5, help="seconds")
    carrier.add_argument(
        "--receipts", default="DELIVRD=1", help="stat word weights, e.g. DELIVRD=95,UNDELIV=5"
    )
    carrier.add_argument("--seed", type=int)
    carrier.add_argument("--log-format", choices=["json", "console"])
    carrier.set_defaults(func=cmd_sim_carrier)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
