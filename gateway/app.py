"""create_app(settings): the one place where the gateway is put together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from functools import partial

from aiohttp import web

from gateway.access import Authenticator, ForwardedAccess, KeyAccess
from gateway.appkeys import (
    ACCESS,
    AUTHENTICATOR,
    CATALOG,
    CLOCK,
    DRAIN,
    INGEST,
    METRICS,
    RECORDINGS,
    RETENTION,
    SETTINGS,
    SIGNER,
    STORAGES,
    UPSTREAM,
    WAVEFORMS,
)
from gateway.audit import AuditLock
from gateway.auth import ApiKeyAuthenticator, UrlSigner
from gateway.catalog.factory import open_catalog
from gateway.catalog.upstream import UpstreamCatalog
from gateway.cors import setup_cors
from gateway.journal import UploadJournal
from gateway.metrics import Metrics
from gateway.middlewares import error_middleware
from gateway.models import Clock, system_clock
from gateway.peaks import Waveforms
from gateway.ratelimit import FailedAuthLimiter
from gateway.recordings import Ingest, Recordings
from gateway.request_id import forwarding_trace, request_id_middleware, setup_request_id
from gateway.retention import Retention, RetentionRules
from gateway.routes import setup_sidecar_routes, setup_standalone_routes
from gateway.settings import Settings
from gateway.shutdown import Drain
from gateway.storage.factory import open_storages
from gateway.storage.metered import metered
from gateway.upstream import Upstream


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        storages = metered(await open_storages(app[SETTINGS], stack), app[METRICS])
        app[STORAGES] = storages
        yield
        await storages.close()


async def _standalone_ctx(app: web.Application) -> AsyncIterator[None]:
    """The embedded catalog, its API keys and the bot side."""
    settings = app[SETTINGS]
    catalog = await open_catalog(settings, clock=app[CLOCK])
    app[CATALOG] = catalog
    recordings = Recordings(catalog, app[STORAGES], settings.cache_ttl,
                            AuditLock.from_tenants(settings.tenants))
    app[RECORDINGS] = recordings
    loop = asyncio.get_running_loop()
    journal = await loop.run_in_executor(None, partial(
        UploadJournal.open, settings.data_dir / "uploads", fsync=settings.local_storage_fsync))
    app[INGEST] = Ingest(catalog, recordings, journal)
    tokens = None
    if settings.bearer_tokens:
        from gateway.tokens import TokenAuthenticator, rules_from  # pyjwt only when used

        tokens = TokenAuthenticator(rules_from(settings))
    authenticator = Authenticator(ApiKeyAuthenticator(catalog, settings.cache_ttl), tokens)
    app[AUTHENTICATOR] = authenticator
    app[ACCESS] = KeyAccess(authenticator)
    app[METRICS].watch_caches(recordings)
    app[METRICS].watch_caches(authenticator.api_keys)
    yield
    await authenticator.close()
    await loop.run_in_executor(None, journal.close)
    await catalog.close()


async def _retention_ctx(app: web.Application) -> AsyncIterator[None]:
    """Standalone: sweep expired recordings in the background, stopped before the catalog.

    Every worker process sweeps; deletes are idempotent, so two that meet only repeat
    a little work.
    """
    settings = app[SETTINGS]
    rules = RetentionRules.from_settings(settings.retention_days, settings.tenants)
    retention = Retention(app[CATALOG], app[RECORDINGS], rules,
                          batch=settings.retention_batch, clock=app[CLOCK])
    app[RETENTION] = retention
    if not rules.enabled:
        yield
        return
    task = asyncio.create_task(retention.run_periodically(settings.retention_interval),
                               name="retention")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _recovery_ctx(app: web.Application) -> AsyncIterator[None]:
    """Standalone: undo, in the background, the uploads of processes that were killed."""
    ingest, stale_after = app[INGEST], app[SETTINGS].stale_upload_age
    task = asyncio.create_task(ingest.recover(stale_after=stale_after), name="recovery")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sidecar_ctx(app: web.Application) -> AsyncIterator[None]:
    """The upstream meeting API as the catalog; its answers decide who sees what."""
    settings = app[SETTINGS]
    async with Upstream.session_for(
            timeout=settings.upstream_timeout, connections=settings.upstream_connections,
            trace_configs=(forwarding_trace(), app[METRICS].upstream_trace())) as session:
        upstream = Upstream(settings.upstream_url, session)
        app[UPSTREAM] = upstream
        catalog = UpstreamCatalog(upstream, app[STORAGES].resolve)
        app[RECORDINGS] = Recordings(catalog, app[STORAGES], settings.cache_ttl)
        app[METRICS].watch_caches(app[RECORDINGS])
        app[ACCESS] = ForwardedAccess()
        yield


def create_app(settings: Settings, *, clock: Clock = system_clock) -> web.Application:
    """Build the gateway application; resources open on startup, close in reverse.

    `clock` stamps the catalog's times and ages recordings for retention.
    """
    metrics = Metrics()
    # Uploads are streamed and never read whole; this bounds JSON bodies only.
    # The request id first: every middleware after it, and every log line, can use it.
    app = web.Application(
        middlewares=[request_id_middleware, metrics.middleware(), error_middleware],
        client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[SIGNER] = UrlSigner(settings.signing_keys)
    app[WAVEFORMS] = Waveforms(settings.cache_ttl)
    app[METRICS] = metrics
    setup_request_id(app)
    app[DRAIN] = Drain()
    app[DRAIN].attach(app)
    setup_cors(app, settings.cors_origins)
    if settings.auth_failure_burst:
        limiter = FailedAuthLimiter(settings.auth_failure_burst, settings.auth_failure_rate)
        app.middlewares.append(limiter.middleware())
        metrics.watch_limiter(limiter)
    if settings.sidecar:
        app.cleanup_ctx.extend([_storage_ctx, _sidecar_ctx])
        setup_sidecar_routes(app)
    else:
        app.cleanup_ctx.extend([_storage_ctx, _standalone_ctx, _retention_ctx])
        app.cleanup_ctx.append(_recovery_ctx)
        setup_standalone_routes(app)
    return app
