"""HTTP routes, one module per resource."""

from aiohttp import web

from gateway.routes import media, ops, recordings, storage


def setup_routes(app: web.Application) -> None:
    recordings.setup(app)
    media.setup(app)
    storage.setup(app)
    ops.setup(app)
