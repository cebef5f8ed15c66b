"""Every error leaves as `{"detail": "..."}`; a traceback never does."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

# aiohttp's own headers of an HTTPException that describe its text body, not ours.
_BODY_HEADERS = ("Content-Type", "Content-Length")


def json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return json_error(exc.status, exc.detail, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k not in _BODY_HEADERS}
        return json_error(exc.status, exc.reason, headers)
    except asyncio.CancelledError:
        raise
    except ConnectionError:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            log.exception("connection error in %s %s", request.method, request.path)
            return json_error(500, "Internal server error")
        # The client left before we could answer: nothing to send, nothing broken.
        # The access log shows 499, the usual mark of a request closed by its client.
        log.debug("client closed the connection during %s %s", request.method, request.path)
        return web.Response(status=499, reason="Client Closed Request")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "Internal server error")
