"""What the object storages (S3, GCS, Azure) share for reads: one ranged GET, streamed.

Each backend decides ranges and preconditions from the object's cached validators,
sends one GET for exactly the bytes to serve (through a plain aiohttp session), and
hands its answer here; only the mapping of failures differs, so it is passed in.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_writer import StreamWriter

from gateway.errors import GatewayError, StorageUnavailable
from gateway.storage import splice
from gateway.storage.base import ObjectInfo

READ_CHUNK = 64 * 1024
"""Bytes per piece where the gateway reads a body itself (waveform peaks) or writes it
through aiohttp's writer."""

SPLICE_MIN = 1024 * 1024
"""Bytes left to send from which a stream goes by splice(2), where it can (see
gateway/storage/splice.py). The store connection is closed after it, not reused: for
less, a new connection would cost more than the copy saves."""

STORE_READ_BUFFER = 256 * 1024
"""aiohttp's read_bufsize for the store sessions: one socket read's worth."""

CLIENT_BUFFER = 64 * 1024
"""Bytes waiting in a client's transport above which a stream stops reading its store."""

DEFAULT_READ_TIMEOUT = 60.0
"""Seconds of silence mid-body after which a relay gives up, for a session without one."""

ErrorMap = Callable[[BaseException, str], GatewayError]
"""A backend's mapping of a failure (and its storage's name) to the gateway's answer."""


class HttpRange:
    """The body of one ranged GET, streamed out in chunks."""

    __slots__ = ("_errors", "_length", "_read_timeout", "_response", "_storage", "sent",
                 "spliced")

    def __init__(self, response: aiohttp.ClientResponse, length: int, storage: str,
                 errors: ErrorMap, read_timeout: float) -> None:
        self._response = response
        self._length = length
        self._storage = storage
        self._errors = errors
        self._read_timeout = read_timeout
        self.sent = 0
        self.spliced = 0  # of `sent`: the bytes that went by splice(2)

    async def send(self, request: web.BaseRequest, response: web.StreamResponse) -> int:
        writer = await response.prepare(request)  # prepared already: this gives its writer
        if writer is None or response.chunked or response.compression:
            # Framed or encoded by the writer (never for media): through it, in pieces.
            async with contextlib.aclosing(self.chunks()) as chunks:
                async for chunk in chunks:
                    await response.write(chunk)
                    self.sent += len(chunk)
            return 0
        # Each chunk goes to the client's transport as the store's socket gave it (no
        # slicing, no copy), and nothing more is read from the store while the client's
        # transport is full: a slow client keeps at most one socket read in the gateway.
        content = self._response.content
        remaining = self._length
        client = self._splice_target(request) if remaining >= SPLICE_MIN else None
        first = True
        while True:
            # Once all that was read is sent (the first socket read came with the head).
            if (client is not None and remaining >= SPLICE_MIN
                    and content.total_bytes == self.sent and not content.is_eof()):
                if await self._splice(request, client, writer, remaining):
                    return 0
                client = None  # out of descriptors: this stream copies
            try:
                chunk = await content.readany()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise self._errors(exc, self._storage) from None
            if not chunk:
                break
            if len(chunk) > remaining:
                raise StorageUnavailable(f"Storage {self._storage!r} sent more than the range")
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("client went away")
            if first and isinstance(writer, StreamWriter):
                # Through the writer, which sends the status line and headers with it in
                # one packet if they still wait (gateway/streaming.py): for a small range,
                # often the whole answer. Not drained there: the client's backpressure
                # below applies to it as to every chunk.
                await writer.write(chunk, drain=False)
            else:
                writer.send_headers()  # if they still wait (another writer)
                # The headers are out, so the body may pass the writer: the transport
                # keeps what the socket does not take now, and no reference here holds
                # a second copy of it while the client catches up.
                transport.write(chunk)
                writer.output_size += len(chunk)  # counted as the writer would, for the log
            first = False
            self.sent += len(chunk)
            remaining -= len(chunk)
            del chunk
            if transport.get_write_buffer_size() > CLIENT_BUFFER:
                # (Not once the whole body is in: resuming would restart the store's read
                # timer on a connection about to go back to the pool, where it would fire
                # and fail whichever request takes the connection next.)
                store = None if content.is_eof() else self._response.connection
                protocol = store.protocol if store is not None else None
                if protocol is not None:
                    protocol.pause_reading()
                await writer.drain()
                if protocol is not None and store is self._response.connection:
                    protocol.resume_reading()
        if remaining:
            raise StorageUnavailable(f"Storage {self._storage!r} ended the body early")
        return 0

    def _splice_target(self, request: web.BaseRequest) -> socket.socket | None:
        """The client's socket, if the body can go to it by splice(2): both connections
        plain TCP, the body framed by its length only."""
        answer = self._response
        store = answer.connection
        if (store is None or "Content-Length" not in answer.headers
                or "Transfer-Encoding" in answer.headers):
            return None
        if splice.plain_socket(store.transport) is None:
            return None
        return splice.plain_socket(request.transport)

    async def _splice(self, request: web.BaseRequest, client: socket.socket,
                      writer: AbstractStreamWriter, remaining: int) -> bool:
        """Send the rest of the body by splice(2); False, having sent nothing, if the
        process has no descriptors to spare for it (or the store's connection closed)."""
        store = self._response.connection
        protocol = store.protocol if store is not None else None
        source = splice.plain_socket(store.transport) if store is not None else None
        if protocol is None or source is None:
            return False
        relay = splice.Relay.prepare(source, client)
        if relay is None:
            return False
        writer.send_headers()  # if they still wait for the body's first bytes
        # The store's transport reads no more, and the client's writes out what it
        # holds (headers, part heads) first: from here both sockets are the relay's.
        # The store connection cannot be reused after it: close() closes it.
        protocol.pause_reading()
        transport = request.transport
        assert transport is not None  # plain_socket() found it open
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0, low=0)  # drain() waits until it is empty
        try:
            await writer.drain()
        except BaseException:
            relay.close()
            raise
        finally:
            transport.set_write_buffer_limits(high=high, low=low)

        def count(n: int) -> None:
            writer.output_size += n
            self.sent += n
            self.spliced += n

        try:
            await relay.run(remaining, read_timeout=self._read_timeout, sent=count)
        except TimeoutError as exc:
            raise self._errors(exc, self._storage) from None
        except splice.SourceEnded:
            raise StorageUnavailable(f"Storage {self._storage!r} ended the body early")\
                from None
        except splice.SourceFailed as exc:
            raise StorageUnavailable(
                f"Storage {self._storage!r} connection failed ({exc.strerror})") from None
        return True

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        remaining = self._length
        try:
            async for chunk in self._response.content.iter_chunked(READ_CHUNK):
                yield chunk
                remaining -= len(chunk)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._errors(exc, self._storage) from None
        if remaining:
            raise StorageUnavailable(f"Storage {self._storage!r} ended the body early")

    async def close(self) -> None:
        # Read to its end, the connection is already back in the pool; abandoned,
        # it is closed here: a client that went away never holds a storage connection.
        self._response.close()


def ranged_answer(answer: aiohttp.ClientResponse, start: int, length: int, size: int,
                  storage: str, errors: ErrorMap, read_timeout: float | None,
                  ) -> HttpRange | None:
    """The answer's body if it is the range asked for (a 206 of exactly that range, or a
    200 when the range is the whole object); None if the store answered something else
    (an error, for the backend to map). A 206 of another range is refused outright:
    a store, or a cache in front of it, that answers another range would have us serve
    the wrong bytes under the right headers. `read_timeout` is the session's sock_read:
    the longest silence of the store mid-body."""
    timeout = read_timeout if read_timeout is not None else DEFAULT_READ_TIMEOUT
    if answer.status == 206:
        if answer.headers.get("Content-Range") != f"bytes {start}-{start + length - 1}/{size}":
            answer.close()
            raise StorageUnavailable(f"Storage {storage!r} answered another range than the "
                                     "one asked for")
        return HttpRange(answer, length, storage, errors, timeout)
    if answer.status == 200 and length == size:
        return HttpRange(answer, length, storage, errors, timeout)
    return None


class RangeReader(Protocol):
    async def get_range(self, full_key: str, info: ObjectInfo, start: int,
                        length: int) -> HttpRange: ...


class RemoteObject:
    """An object of a remote store, opened: its validators, and reads of its ranges."""

    __slots__ = ("_storage", "info", "key")

    def __init__(self, storage: RangeReader, key: str, info: ObjectInfo) -> None:
        self._storage = storage
        self.key = key
        self.info = info

    async def read(self, start: int, length: int) -> HttpRange:
        return await self._storage.get_range(self.key, self.info, start, length)

    async def close(self) -> None:
        return None
