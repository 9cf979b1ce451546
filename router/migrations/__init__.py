"""Schema migrations: numbered SQL files applied once each, in order.

The daemon applies them on start and `smsrouter db migrate` applies them on
demand; several router processes starting at once serialise on an advisory
lock so that each file runs exactly once.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

# Any constant works; it only has to be the same in every router process.
_LOCK_ID = 0x5353_5254  # "SSRT"


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every migration shipped with the package, in order."""
    files = sorted(
        (f for f in resources.files(__package__).iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations this database lacks; return the versions applied."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied
