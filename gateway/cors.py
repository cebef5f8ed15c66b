"""CORS for a browser frontend on another origin (GATEWAY_CORS_ORIGINS, off by default).

Our own code rather than aiohttp-cors: aiohttp-cors configures routes one by one and
cannot cover the sidecar's catch-all proxy route, and preflights must be answered
here before the proxy would forward them upstream. Preflights are answered by a
middleware; every other response gets its headers in on_response_prepare, which
runs before the status line of streamed responses too.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS = ("Range, X-API-Key, Authorization, Content-Type, If-Range, If-Match, "
                   "If-None-Match, If-Modified-Since, If-Unmodified-Since, X-Tenant, "
                   "X-Request-ID")
EXPOSED_HEADERS = ("Content-Range, Accept-Ranges, Content-Length, Content-Disposition, "
                   "Content-Type, ETag, Last-Modified, X-Request-ID")
PREFLIGHT_MAX_AGE = "600"


class Cors:
    def __init__(self, origins: tuple[str, ...]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(origins)

    def allows(self, origin: str) -> bool:
        return self._any or origin in self._origins

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if (origin is None or request.method != hdrs.METH_OPTIONS
                or hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers):
            return await handler(request)
        if not self.allows(origin):
            return web.json_response({"detail": "Origin not allowed"}, status=403)
        return web.Response(status=204, headers={
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOWED_METHODS,
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: PREFLIGHT_MAX_AGE,
            hdrs.VARY: "Origin",
        })

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        response.headers.add(hdrs.VARY, "Origin")  # the answer depends on it either way
        if origin is not None and self.allows(origin):
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED_HEADERS


def setup_cors(app: web.Application, origins: tuple[str, ...]) -> None:
    if not origins:
        return
    cors = Cors(origins)
    app.middlewares.append(cors.preflight)
    app.on_response_prepare.append(cors.on_prepare)
