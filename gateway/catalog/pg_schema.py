"""The PostgreSQL catalog's schema: versioned SQL files, applied once, under a lock.

`gateway/catalog/migrations/NNNN_name.sql` each move the schema one version up;
`gateway_schema` records which ones ran. Applying takes a session advisory lock, so
replicas that start together, or two `gateway db upgrade` runs, apply each file
once: the others wait, then find nothing left to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# pg_advisory_lock key of schema changes: any constant; this one spells "gateway".
_LOCK_KEY = int.from_bytes(b"gateway", "big")
_FILE_RE = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


Connection = asyncpg.Connection | PoolConnectionProxy
"""A connection of its own, or one lent by a pool."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@cache
def migrations() -> tuple[Migration, ...]:
    """The shipped migrations in order; their numbers run 1, 2, 3... without gaps."""
    found = []
    for entry in files("gateway.catalog").joinpath("migrations").iterdir():
        match = _FILE_RE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    assert [m.version for m in found] == list(range(1, len(found) + 1)), "migration gap"
    return tuple(found)


def latest_version() -> int:
    return len(migrations())


class SchemaMismatch(Exception):
    """The database's schema is not the one this gateway was built for."""


async def current_version(conn: Connection) -> int:
    """The version the database is at; 0 for a database never migrated."""
    if await conn.fetchval("SELECT to_regclass('gateway_schema')") is None:
        return 0
    version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM gateway_schema")
    return int(version)


async def upgrade(conn: Connection) -> tuple[int, int]:
    """Apply the missing migrations, each in its own transaction; (from, to) versions."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS gateway_schema ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        start = await current_version(conn)
        if start > latest_version():
            raise SchemaMismatch(_newer(start))
        for migration in migrations()[start:]:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute("INSERT INTO gateway_schema (version, name) VALUES ($1, $2)",
                                   migration.version, migration.name)
        return start, latest_version()
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def check(conn: Connection) -> None:
    """Raise SchemaMismatch unless the database is at exactly this gateway's version."""
    version = await current_version(conn)
    if version < latest_version():
        state = "has no gateway schema" if version == 0 else f"is at schema version {version}"
        raise SchemaMismatch(
            f"the catalog database {state}; this gateway needs version {latest_version()}: "
            "run `gateway db upgrade` (or start with GATEWAY_DATABASE_MIGRATE=true)")
    if version > latest_version():
        raise SchemaMismatch(_newer(version))


def _newer(version: int) -> str:
    return (f"the catalog database is at schema version {version}, newer than this "
            f"gateway's {latest_version()}: run a newer gateway")
