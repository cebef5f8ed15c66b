"""HTTP routes, one module per resource."""

from aiohttp import web

from gateway.routes import media, ops, recordings, storage


def setup_routes(app: web.Application) -> None:
    """Standalone mode: the embedded catalog answers everything; other paths are 404."""
    recordings.setup_standalone(app)
    recordings.setup_delete(app)
    media.setup_uploads(app)
    media.setup_reads(app)
    storage.setup(app)
    ops.setup(app)
