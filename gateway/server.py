"""The HTTP server: aiohttp's own, plus a deadline for each request's head (slowloris).

aiohttp closes a connection that stays idle between requests for `keepalive_timeout`,
but puts no limit on how long a request line and its headers may take to arrive:
a client that sends one byte a second keeps its connection, and a few thousand such
clients hold every descriptor the process has. Go (ReadHeaderTimeout), nginx
(client_header_timeout) and Apache (mod_reqtimeout) bound that time; aiohttp has no
option for it, so RequestHandler below adds one, and `serve` runs the app with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

_TIMEOUT_BODY = json.dumps({"detail": "The request headers did not arrive in time"}).encode()
# RFC 9110 §15.5.9: 408 says the server gave up waiting for the request; §9.6 "close"
# tells the client the connection ends here. Written by hand: there is no request
# object to build an aiohttp response for.
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class RequestHandler(web.RequestHandler):
    """aiohttp's connection handler, with a deadline for the head of each request.

    The clock starts when the connection opens, and for each later request at its
    first byte; it stops once the head is parsed, so bodies (long uploads) and
    responses (long streams) are never timed. Idle time between requests stays
    aiohttp's keep-alive timeout. A client that misses the deadline gets 408 with
    `Connection: close` if it had sent anything, and the connection is closed.

    It reads three attributes of aiohttp's handler (`_request_count`, `_waiter`,
    `_force_close`); tests/test_slowloris.py fails if a new aiohttp changes them.
    """

    __slots__ = ("_header_bytes", "_header_timeout", "_header_timer", "_heads_before")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._heads_before = 0
        self._header_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and data and self._between_requests():
            self._start_header_timer()
        if data and self._header_timer is not None:
            self._header_bytes = True
        super().data_received(data)
        if self._header_timer is not None and self._request_count != self._heads_before:
            self._stop_header_timer()  # a whole head arrived (a malformed one counts: 400)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        # The same test as aiohttp's keep-alive check: waiting for the next message.
        # Bytes that arrive during a request are its body, or a pipelined request
        # that the keep-alive timeout covers once the current one is answered.
        return self._waiter is not None and not self._waiter.done()

    def _start_header_timer(self) -> None:
        self._heads_before = self._request_count
        self._header_bytes = False
        self._header_timer = self._loop.call_later(self._header_timeout, self._header_timed_out)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport is None or self._force_close or self._request_count != self._heads_before:
            return
        peer = transport.get_extra_info("peername")
        # Debug only: a client that triggers this on purpose must not flood the log.
        log.debug("closing a connection from %s: no request head within %g s",
                  peer, self._header_timeout)
        if self._header_bytes:
            transport.write(REQUEST_TIMEOUT)
        self.force_close()  # the 408, if any, is flushed before the socket closes


class Server(web.Server):
    """aiohttp's Server, with our RequestHandler for each connection."""

    def __init__(self, handler: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return RequestHandler(self, loop=self._loop, header_timeout=self._header_timeout,
                              **self._kwargs)


class AppRunner(web.AppRunner):
    """web.AppRunner whose server times request heads (`header_timeout`, seconds)."""

    __slots__ = ("_header_timeout",)

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # the app's startup runs here
        # The same server aiohttp built for the app, only with another handler class.
        return Server(made.request_handler, request_factory=made.request_factory,
                      handler_cancellation=made.handler_cancellation, loop=made._loop,
                      header_timeout=self._header_timeout, **made._kwargs)


async def _serve(app: web.Application, host: str, port: int, reuse_port: bool,
                 header_timeout: float, options: dict[str, Any]) -> None:
    runner = AppRunner(app, header_timeout=header_timeout, **options)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        # Stops listening, lets requests in flight finish (up to shutdown_timeout),
        # then runs the app's cleanup contexts in reverse.
        await runner.cleanup()


def serve(app: web.Application, *, host: str, port: int, reuse_port: bool = False,
          header_timeout: float, **options: Any) -> None:
    """Serve `app` until SIGINT or SIGTERM, as web.run_app does; `options` go to the runner.

    web.run_app cannot be given another runner, hence this small copy of it.
    """
    asyncio.run(_serve(app, host, port, reuse_port, header_timeout, options))
