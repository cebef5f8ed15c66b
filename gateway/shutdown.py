"""Graceful shutdown: on SIGTERM a worker drains for a grace period, then stops.

aiohttp's `run_app` closes idle keep-alive connections the moment it stops, so a
load balancer probing /readyz over a kept-alive connection sees a reset rather
than the 503 that tells it to drain. Here a stop has two phases:

1. drain: the listening socket closes (new connections are refused), /readyz
   answers 503 on the connections that stay open, every response carries
   `Connection: close`, and requests in flight (a long stream, an upload) go on
   for up to GATEWAY_SHUTDOWN_GRACE seconds, or until none is left;
2. stop: what still runs is cancelled (a stream is cut, an upload discarded),
   aiohttp's own cleanup closes the idle connections, and the cleanup contexts
   close storage and catalog in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler, Middleware

from gateway.server import AppRunner

log = logging.getLogger(__name__)

CUT_TIMEOUT = 1.0
"""Seconds that requests cancelled after the grace get to unwind, and that requests
arriving during the stop get to finish."""
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class Drain:
    """Whether the worker is shutting down, and how many requests are in flight."""

    def __init__(self) -> None:
        self.draining = False
        self._handlers: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._handlers)

    def attach(self, app: web.Application) -> None:
        """Count every request (outermost middleware) and mark responses while draining."""
        app.middlewares.insert(0, self._middleware())
        app.on_response_prepare.append(self._on_prepare)

    def begin(self) -> None:
        self.draining = True

    async def idle(self) -> None:
        """Return once no request is in flight."""
        await self._idle.wait()

    def cancel_in_flight(self) -> None:
        """Cancel every handler still running: its stream is cut, its upload discarded."""
        for task in self._handlers:
            task.cancel()

    def _middleware(self) -> Middleware:
        @web.middleware
        async def count_in_flight(request: web.Request,
                                  handler: Handler) -> web.StreamResponse:
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            self._idle.clear()
            try:
                return await handler(request)
            finally:
                self._handlers.discard(task)
                if not self._handlers:
                    self._idle.set()

        return count_in_flight

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.draining:
            # The client sends its next request on a new connection, which reaches
            # another worker or replica (RFC 9112 §9.6). The header is set here too:
            # aiohttp has written its Connection header before this hook runs.
            response.force_close()
            response.headers[hdrs.CONNECTION] = "close"


async def serve(
    app: web.Application, drain: Drain, *, host: str, port: int, reuse_port: bool,
    grace: float, access_log: logging.Logger, access_log_class: type[AbstractAccessLogger],
    keepalive_timeout: float, header_timeout: float, send_timeout: float,
) -> None:
    """Serve `app` until SIGTERM or SIGINT, then drain for up to `grace` seconds and stop.

    Connections are gateway/server.py's: with deadlines for request heads and for
    readers that accept no bytes, besides aiohttp's keep-alive timeout.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        stop.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    # `gateway serve` holds these signals while a worker starts (gateway/cli.py);
    # one that came meanwhile is delivered now, to the handler above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    runner = AppRunner(
        app, handle_signals=False, shutdown_timeout=CUT_TIMEOUT,
        keepalive_timeout=keepalive_timeout, header_timeout=header_timeout,
        send_timeout=send_timeout, access_log=access_log,
        access_log_class=access_log_class,
        # A client that goes away does not cancel its handler: streams notice it
        # when a write fails, uploads when the body breaks, and clean up themselves.
        handler_cancellation=False,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
        await site.start()
        await stop.wait()
        stopping = loop.time()
        log.info("%s received: shutting down", received[0])
        # site.stop() closes the listening socket without suspending: no request
        # sees the 503 of /readyz while new connections are still accepted.
        await site.stop()
        drain.begin()
        if drain.in_flight:
            log.info("shutting down: %d request(s) in flight, waiting up to %g s",
                     drain.in_flight, grace)
        try:
            async with asyncio.timeout(grace):
                await drain.idle()
        except TimeoutError:
            log.warning("shutting down: %d request(s) still in flight after %g s; "
                        "closing them", drain.in_flight, grace)
            # Cancelled here rather than by aiohttp's cleanup, which would first wait
            # for them twice more (2 x shutdown_timeout).
            drain.cancel_in_flight()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CUT_TIMEOUT):
                    await drain.idle()
    finally:
        await runner.cleanup()
    log.info("stopped %.1f s after the signal", loop.time() - stopping)
