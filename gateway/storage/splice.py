"""Zero-copy relay of a body from a store's socket to a client's, through a kernel pipe.

A byte that only passes through the gateway need not enter Python: splice(2) moves
it from one socket to a pipe and from the pipe to the other socket by reference,
with no copy into user space and no Python object per chunk. For a large range of a
plain-HTTP store (MinIO in the same network, say) sent to a plain-HTTP client (behind
a TLS proxy), that is less than half the CPU of reading and writing it.

Linux only, and only between plain TCP sockets of the default (selector) event loop;
anything else, TLS on either side included, takes the ordinary path.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

PIPE_SIZE = 256 * 1024
"""Bytes a relay's pipe holds: four socket reads' worth. 200 streams take 50 MiB of
kernel memory, within Linux's default allowance of pipe buffers per user (64 MiB)."""
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_AVAILABLE = sys.platform == "linux" and hasattr(os, "splice")


class SourceEnded(Exception):
    """The source closed before the length asked for."""


class SourceFailed(Exception):
    """The source's connection failed (reset, say); `strerror` says how."""

    def __init__(self, strerror: str) -> None:
        super().__init__(strerror)
        self.strerror = strerror


def plain_socket(transport: asyncio.BaseTransport | None) -> socket.socket | None:
    """The TCP socket under a transport of the selector event loop, if it carries the
    bytes as they are (no TLS); None otherwise."""
    if (not _AVAILABLE or transport is None
            or transport.is_closing() or transport.get_extra_info("sslcontext") is not None
            or not isinstance(asyncio.get_running_loop(),
                              asyncio.selector_events.BaseSelectorEventLoop)):
        return None
    sock: Any = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6) \
            or sock.type != socket.SOCK_STREAM:
        return None
    return sock  # type: ignore[no-any-return]


class Relay:
    """Duplicates of two sockets' descriptors and a pipe between them, ready to move a
    body. Duplicates, so that a transport that closes its own descriptor meanwhile
    cannot hand this relay someone else's socket."""

    __slots__ = ("_fds",)

    def __init__(self, fds: tuple[int, int, int, int]) -> None:
        self._fds = fds  # source, target, pipe's read end, pipe's write end

    @classmethod
    def prepare(cls, source: socket.socket, target: socket.socket) -> Relay | None:
        """None if the process is out of descriptors (or pipes): the caller copies."""
        opened: list[int] = []
        try:
            opened.append(os.dup(source.fileno()))
            opened.append(os.dup(target.fileno()))
            opened.extend(os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError:
            for fd in opened:
                os.close(fd)
            return None
        with contextlib.suppress(OSError):  # a smaller pipe where the user's allowance is spent
            fcntl.fcntl(opened[3], _F_SETPIPE_SZ, PIPE_SIZE)
        src, dst, pipe_r, pipe_w = opened
        return cls((src, dst, pipe_r, pipe_w))

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)

    async def run(self, length: int, *, read_timeout: float,
                  sent: Callable[[int], None]) -> None:
        """Move exactly `length` bytes from the source to the target, calling `sent` with
        each count the target took, then close. The caller keeps both transports from
        reading or writing meanwhile.

        Raises SourceEnded if the source closes early, SourceFailed if its connection
        fails, TimeoutError if it sends nothing for `read_timeout` seconds,
        ConnectionResetError if the target is gone.
        """
        try:
            await self._move(length, read_timeout, sent)
        finally:
            self.close()

    async def _move(self, length: int, read_timeout: float,
                    sent: Callable[[int], None]) -> None:
        loop = asyncio.get_running_loop()
        src, dst, pipe_r, pipe_w = self._fds
        remaining, in_pipe = length, 0
        while remaining or in_pipe:
            moved = False
            if remaining:
                try:
                    n = os.splice(src, pipe_w, remaining, flags=_FLAGS)
                except BlockingIOError:  # nothing to read, or the pipe is full
                    pass
                except OSError as exc:
                    raise SourceFailed(exc.strerror or type(exc).__name__) from exc
                else:
                    if n == 0:
                        raise SourceEnded
                    remaining -= n
                    in_pipe += n
                    moved = True
            if in_pipe:
                try:
                    n = os.splice(pipe_r, dst, in_pipe, flags=_FLAGS)
                except BlockingIOError:
                    pass
                except OSError as exc:  # EPIPE, ECONNRESET, or a reset by the send timeout
                    raise ConnectionResetError("client went away") from exc
                else:
                    in_pipe -= n
                    sent(n)
                    moved = True
            if not moved:
                # Bytes in the pipe: the client's turn (the pipe may be full, and then a
                # readable source would wake this loop for nothing, again and again).
                # An empty pipe: the store's, which has read_timeout to send something.
                await _ready(loop, None if in_pipe else src, dst if in_pipe else None,
                             read_timeout)


async def _ready(loop: asyncio.AbstractEventLoop, readable: int | None,
                 writable: int | None, read_timeout: float) -> None:
    """Wait until `readable` can be read, or `writable` written. Only the wait on the
    source is timed: a slow client is the send timeout's business (gateway/server.py)."""
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    if readable is not None:
        loop.add_reader(readable, wake)
    if writable is not None:
        loop.add_writer(writable, wake)
    try:
        if writable is None:
            async with asyncio.timeout(read_timeout):
                await waiter
        else:
            await waiter
    finally:
        if readable is not None:
            loop.remove_reader(readable)
        if writable is not None:
            loop.remove_writer(writable)
