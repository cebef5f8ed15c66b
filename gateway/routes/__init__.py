"""HTTP routes, one module per resource; which ones depends on the mode."""

from aiohttp import web

from gateway.routes import (
    api_docs,
    media,
    metrics,
    ops,
    peaks,
    player,
    recordings,
    storage,
    upstream,
)


def setup_standalone_routes(app: web.Application) -> None:
    """Standalone: the embedded catalog answers everything; other paths are 404."""
    # Reads first: aiohttp tries the resources under /recordings in the order they were
    # added, and a 64 KiB range request should not pay for six regex misses first.
    media.setup_reads(app)
    recordings.setup_standalone(app)
    recordings.setup_delete(app)
    media.setup_uploads(app)
    peaks.setup(app)
    storage.setup(app)
    ops.setup(app)
    player.setup(app, at_root=True)
    api_docs.setup(app)
    metrics.setup(app)


def setup_sidecar_routes(app: web.Application) -> None:
    """Sidecar: bytes and deletes here, recording JSON filtered from the upstream, and
    every other path proxied to it (the catch-all comes last)."""
    media.setup_reads(app)
    peaks.setup(app)
    recordings.setup_delete(app)
    upstream.setup(app)
    ops.setup(app)
    player.setup(app, at_root=False)  # `/` stays the upstream's
    api_docs.setup(app)
    metrics.setup(app)
    upstream.setup_proxy(app)
