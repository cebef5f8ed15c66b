"""/storage: the configured storages and their check (admin only), as in Stream."""

from __future__ import annotations

from aiohttp import web

from gateway.access import require_role
from gateway.appkeys import STORAGES
from gateway.errors import NotFound
from gateway.models import Role
from gateway.routes.params import principal
from gateway.storage.config import NAME_RE


async def list_storages(request: web.Request) -> web.Response:
    require_role(await principal(request), Role.ADMIN)
    storages = request.app[STORAGES]
    return web.json_response({
        "default": storages.default,
        "storages": [{**storage.describe(), "default": name == storages.default}
                     for name, storage in storages.items()],
    })


async def check_storage(request: web.Request) -> web.Response:
    """Write, read back and delete `gateway-check-<uuid>.md`; 502 with the store's words."""
    require_role(await principal(request), Role.ADMIN)
    name = request.match_info["name"]
    storage = request.app[STORAGES].get(name)
    if storage is None:
        raise NotFound(f"Unknown storage {name!r}")
    report = await storage.check()
    return web.json_response({"name": name, "status": "ok", "object": report.object_key,
                              "steps": list(report.steps)})


def setup(app: web.Application) -> None:
    app.router.add_get("/storage", list_storages)
    app.router.add_post(f"/storage/{{name:{NAME_RE.pattern}}}/check", check_storage)
