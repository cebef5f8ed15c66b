"""Liveness and readiness for orchestrators and load balancers."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.appkeys import DRAIN, RECORDINGS, SETTINGS, STORAGES

log = logging.getLogger(__name__)
READY_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    drain = request.app[DRAIN]
    if drain.draining:
        return _draining()
    label = "upstream" if request.app[SETTINGS].sidecar else "catalog"
    checks = {label: request.app[RECORDINGS].catalog.ping()}
    for name, storage in request.app[STORAGES].items():
        checks[f"storage:{name}"] = storage.ping()
    results: dict[str, str] = {}
    for label, check in checks.items():
        try:
            await asyncio.wait_for(check, READY_TIMEOUT)
            results[label] = "ok"
        except Exception as exc:  # any failure of a dependency means "not ready"
            log.warning("readiness check %s failed: %s", label, exc)
            results[label] = "unavailable"
    if drain.draining:  # it began while the checks ran
        return _draining()
    ready = all(v == "ok" for v in results.values())
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": results},
        status=200 if ready else 503,
    )


def _draining() -> web.Response:
    # Shutting down: a load balancer stops sending requests here (the answer also
    # closes the connection; see gateway/shutdown.py).
    return web.json_response({"status": "draining", "checks": {}}, status=503)


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
