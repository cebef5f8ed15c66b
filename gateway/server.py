"""The HTTP server: aiohttp's own, plus deadlines for slow request heads and stalled readers.

aiohttp closes a connection that stays idle between requests for `keepalive_timeout`,
but puts no limit on how long a request line and its headers may take to arrive
(a client that sends one byte a second keeps its connection: slowloris), nor on how
long a client may accept no bytes of a response (a stalled reader keeps its stream,
and on object storage a pooled connection, for ever). nginx bounds both
(client_header_timeout, send_timeout), as do Go and Apache; aiohttp has no option
for either, so RequestHandler below adds them, and AppRunner runs the app with it
(gateway/shutdown.py serves with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
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

_LINGER_RESET = struct.pack("ii", 1, 0)
# struct tcp_info (linux/tcp.h, append-only): tcpi_unacked (u32) at 24, tcpi_bytes_acked
# (u64, Linux 4.1) at 120, tcpi_notsent_bytes (u32, Linux 4.6) at 144.
_TCP_INFO_SIZE = 148


def send_progress(sock: Any) -> tuple[int, bool] | None:
    """Bytes the peer has acknowledged so far, and whether more are waiting for it
    (sent and unacknowledged, or queued); None where TCP_INFO cannot tell (not Linux)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except (AttributeError, OSError):
        return None
    if len(info) < _TCP_INFO_SIZE:
        return None
    (unacked,) = struct.unpack_from("=I", info, 24)
    (acked,) = struct.unpack_from("=Q", info, 120)
    (notsent,) = struct.unpack_from("=I", info, 144)
    return acked, bool(unacked or notsent)


class RequestHandler(web.RequestHandler):
    """aiohttp's connection handler, with a deadline for the head of each request and
    one for a reader that accepts no bytes.

    Head: the clock starts when the connection opens, and for each later request at
    its first byte; it stops once the head is parsed, so bodies (long uploads) and
    responses (long streams) are never timed. Idle time between requests stays
    aiohttp's keep-alive timeout. A client that misses the deadline gets 408 with
    `Connection: close` if it had sent anything, and the connection is closed.

    Send: when the client acknowledges none of the bytes waiting for it for
    `send_timeout` seconds (between one and two timeouts, checked every timeout),
    the connection is reset, and the stream's handler finds it gone at its next
    write and releases its file or storage connection. A slow reader that keeps
    taking bytes, however few, is not cut.

    It reads three attributes of aiohttp's handler (`_request_count`, `_waiter`,
    `_force_close`); tests/test_slowloris.py fails if a new aiohttp changes them.
    """

    __slots__ = ("_head_started", "_header_bytes", "_header_timeout", "_header_timer",
                 "_heads_before", "_send_acked", "_send_timeout", "_send_timer",
                 "_send_waiting")

    def __init__(self, manager: web.Server, *, header_timeout: float, send_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        # When the head being awaited started (loop time), or None between heads. The
        # timer is not cancelled when a head completes: it finds nothing pending when
        # it fires, so a keep-alive connection costs one timer per timeout, not one
        # per request.
        self._head_started: float | None = None
        self._heads_before = 0
        self._header_bytes = False
        self._send_timeout = send_timeout
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_acked = 0
        self._send_waiting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_header_timer()
        self._send_timer = self._loop.call_later(self._send_timeout, self._check_send)

    def data_received(self, data: bytes) -> None:
        if self._head_started is None and data and self._between_requests():
            self._start_header_timer()
        if data and self._head_started is not None:
            self._header_bytes = True
        super().data_received(data)
        if self._head_started is not None and self._request_count != self._heads_before:
            self._head_started = None  # a whole head arrived (a malformed one counts: 400)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_timer()
        self._stop_send_timer()
        super().connection_lost(exc)

    def _check_send(self) -> None:
        """Every send_timeout: drop the connection if, since the last check, bytes were
        waiting for the client all along and it acknowledged none of them.

        The kernel's counters are the only true measure: local files go out with
        sendfile(2), past this protocol, and the kernel's send buffer (megabytes)
        hides a stalled client from the transport for minutes.
        """
        self._send_timer = None
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        progress = send_progress(sock) if sock is not None else None
        if progress is None:
            return  # no TCP_INFO here: no send timeout
        acked, waiting = progress
        waiting = waiting or transport.get_write_buffer_size() > 0
        if waiting and self._send_waiting and acked == self._send_acked:
            log.debug("dropping a connection from %s: it accepted no bytes for %g s",
                      transport.get_extra_info("peername"), self._send_timeout)
            with contextlib.suppress(OSError):
                # A reset rather than a FIN queued behind megabytes nobody reads; the
                # shutdown wakes whatever waits to write (the transport, or sendfile,
                # whose writes then fail), so the stream ends and releases its storage.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                sock.shutdown(socket.SHUT_RDWR)
            return
        self._send_acked, self._send_waiting = acked, waiting
        self._send_timer = self._loop.call_later(self._send_timeout, self._check_send)

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _between_requests(self) -> bool:
        # The same test as aiohttp's keep-alive check: waiting for the next message.
        # Bytes that arrive during a request are its body, or a pipelined request
        # that the keep-alive timeout covers once the current one is answered.
        return self._waiter is not None and not self._waiter.done()

    def _start_header_timer(self) -> None:
        self._heads_before = self._request_count
        self._header_bytes = False
        self._head_started = self._loop.time()
        if self._header_timer is None:
            self._header_timer = self._loop.call_at(self._head_started + self._header_timeout,
                                                    self._header_timed_out)

    def _stop_header_timer(self) -> None:
        self._head_started = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        transport = self.transport
        if (self._head_started is None or transport is None or self._force_close
                or self._request_count != self._heads_before):
            return  # no head pending: the next one arms the timer again
        deadline = self._head_started + self._header_timeout
        if self._loop.time() < deadline:  # a later head than the one this timer was for
            self._header_timer = self._loop.call_at(deadline, self._header_timed_out)
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

    def __init__(self, handler: Any, *, header_timeout: float, send_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._timeouts = {"header_timeout": header_timeout, "send_timeout": send_timeout}

    def __call__(self) -> RequestHandler:
        return RequestHandler(self, loop=self._loop, **self._timeouts, **self._kwargs)


class AppRunner(web.AppRunner):
    """web.AppRunner whose server times request heads and stalled readers (seconds)."""

    __slots__ = ("_timeouts",)

    def __init__(self, app: web.Application, *, header_timeout: float, send_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._timeouts = {"header_timeout": header_timeout, "send_timeout": send_timeout}

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # the app's startup runs here
        # The same server aiohttp built for the app, only with another handler class.
        return Server(made.request_handler, request_factory=made.request_factory,
                      handler_cancellation=made.handler_cancellation, loop=made._loop,
                      **self._timeouts, **made._kwargs)
