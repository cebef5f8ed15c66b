"""X-Request-ID: the client's own when it is sane, else a new one; echoed, logged, forwarded.

A request id joins the lines that one request leaves in several logs (a proxy in
front, the gateway, the upstream meeting API behind it). The client's id is taken
only when it is short and plain (letters, digits and `._:;=+/@-`, at most 128
characters, one header): anything else is replaced by a fresh id, never echoed,
so that a header cannot carry control characters or other text into responses
and log lines. Every response carries the id, errors and streamed bodies included,
and the upstream of a sidecar receives it with every call made for the request.
"""

from __future__ import annotations

import random
import re
from contextvars import ContextVar
from types import SimpleNamespace

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

HEADER = "X-Request-ID"
MAX_LENGTH = 128
_SANE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:;=+/@-]{{0,{MAX_LENGTH - 1}}}")

REQUEST_ID = web.RequestKey("request_id", str)
_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id() -> str:
    """128 random bits as 32 hex digits: unique without any coordination.

    An id is no secret, so `random` (seeded from the OS, reseeded after a fork) is
    enough; os.urandom cost tens of microseconds per call on some virtual machines.
    """
    return f"{random.getrandbits(128):032x}"


def accepted_request_id(values: list[str]) -> str | None:
    """The client's id if there is exactly one and it is sane, else None."""
    if len(values) != 1:
        return None
    value = values[0].strip()
    return value if _SANE.fullmatch(value) else None


def current_request_id() -> str | None:
    """The id of the request being handled by this task, for log records and upstream calls."""
    return _current.get()


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: every later middleware, handler and log record sees the id."""
    request_id = accepted_request_id(request.headers.getall(HEADER, [])) or new_request_id()
    request[REQUEST_ID] = request_id
    token = _current.set(request_id)
    try:
        return await handler(request)
    finally:
        # The next request on this keep-alive connection runs in the same task.
        _current.reset(token)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs before the status line of every response, streamed or not."""
    request_id = request.get(REQUEST_ID)
    if request_id is None:  # prepared outside the middleware chain
        request_id = request[REQUEST_ID] = new_request_id()
    response.headers[HEADER] = request_id


def setup_request_id(app: web.Application) -> None:
    """Echo the id on every response; the middleware itself is put first by create_app."""
    app.on_response_prepare.append(echo_request_id)


def forwarding_trace() -> aiohttp.TraceConfig:
    """Client tracing that sets the current request's id on every outgoing request.

    It replaces whatever X-Request-ID the proxied client sent, so the upstream sees the
    same, checked id as the gateway's own log.
    """

    async def on_request_start(session: aiohttp.ClientSession, context: SimpleNamespace,
                               params: aiohttp.TraceRequestStartParams) -> None:
        request_id = _current.get()
        if request_id is not None:
            params.headers[HEADER] = request_id

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    return trace
