"""The embedded catalog the settings choose: SQLite in the data dir, or PostgreSQL."""

from __future__ import annotations

from gateway.catalog.base import Catalog
from gateway.catalog.sqlite import SqliteCatalog
from gateway.models import Clock, system_clock
from gateway.settings import Settings


async def open_catalog(settings: Settings, *, clock: Clock = system_clock,
                       migrate: bool | None = None) -> Catalog:
    """Open the standalone catalog; `migrate` overrides GATEWAY_DATABASE_MIGRATE.

    PostgreSQL raises CatalogUnavailable when it cannot be reached or its schema is
    not this gateway's (SQLite migrates itself as it opens).
    """
    if settings.catalog == "postgres":
        from gateway.catalog.postgres import PostgresCatalog  # asyncpg only when used

        return await PostgresCatalog.open(
            settings.database_url, pool_size=settings.database_pool_size,
            wait=settings.database_timeout, clock=clock,
            migrate=settings.database_migrate if migrate is None else migrate)
    return await SqliteCatalog.open(settings.catalog_path, clock=clock)
