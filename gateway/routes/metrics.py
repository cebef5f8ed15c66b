"""GET /metrics: this app's Prometheus registry, in the text exposition format.

Open on the listening address by default, as Prometheus scrapes; with
GATEWAY_METRICS_TOKEN set it needs `Authorization: Bearer <token>` (401 otherwise,
which counts against the address's failed authentications like any other 401).
"""

from __future__ import annotations

import hmac

from aiohttp import hdrs, web

from gateway.access_log import remember_principal
from gateway.appkeys import METRICS, SETTINGS
from gateway.errors import Unauthorized
from gateway.metrics import CONTENT_TYPE

PATH = "/metrics"


def _check_token(request: web.Request, tokens: tuple[bytes, ...]) -> None:
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Metrics need a Bearer token", scheme="Bearer")
    given = token.strip().encode("utf-8", "replace")
    valid = False
    for expected in tokens:  # every one compared: timing tells nothing about which
        valid |= hmac.compare_digest(expected, given)
    if not valid:
        raise Unauthorized("Invalid metrics token", scheme="Bearer")
    remember_principal(request, "metrics")


async def metrics(request: web.Request) -> web.Response:
    tokens = request.app[SETTINGS].metrics_tokens
    if tokens:
        _check_token(request, tokens)
    return web.Response(body=request.app[METRICS].exposition(), headers={
        hdrs.CONTENT_TYPE: CONTENT_TYPE,
        hdrs.CACHE_CONTROL: "no-store",  # a snapshot, stale at once
    })


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, metrics)
