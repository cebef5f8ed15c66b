"""create_app(settings): the one place where the gateway is put together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from aiohttp import web

from gateway.access import KeyAccess
from gateway.appkeys import (
    ACCESS,
    API_KEYS,
    CATALOG,
    INGEST,
    RECORDINGS,
    SETTINGS,
    SIGNER,
    STORAGES,
)
from gateway.auth import ApiKeyAuthenticator, UrlSigner
from gateway.catalog import SqliteCatalog
from gateway.middlewares import error_middleware
from gateway.recordings import Ingest, Recordings
from gateway.routes import setup_routes
from gateway.settings import Settings
from gateway.storage.factory import open_storages


async def _catalog_ctx(app: web.Application) -> AsyncIterator[None]:
    catalog = await SqliteCatalog.open(app[SETTINGS].catalog_path)
    app[CATALOG] = catalog
    yield
    await catalog.close()


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        storages = await open_storages(app[SETTINGS], stack)
        app[STORAGES] = storages
        yield
        await storages.close()


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    ttl = app[SETTINGS].cache_ttl
    recordings = Recordings(app[CATALOG], app[STORAGES], ttl)
    app[RECORDINGS] = recordings
    app[INGEST] = Ingest(app[CATALOG], recordings)
    app[API_KEYS] = ApiKeyAuthenticator(app[CATALOG], ttl)
    app[ACCESS] = KeyAccess(app[API_KEYS])
    yield


def create_app(settings: Settings) -> web.Application:
    """Build the gateway application; resources open on startup, close in reverse."""
    # Uploads are streamed and never read whole; this bounds JSON bodies only.
    app = web.Application(middlewares=[error_middleware], client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    app[SIGNER] = UrlSigner(settings.signing_keys)
    app.cleanup_ctx.extend([_catalog_ctx, _storage_ctx, _services_ctx])
    setup_routes(app)
    return app
