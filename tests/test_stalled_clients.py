"""Stalled clients: a client that accepts no bytes for GATEWAY_SEND_TIMEOUT is cut off.

A reader that stops reading but keeps its connection (a paused player, a slow-read
attack) would otherwise hold its stream for ever: on S3, a connection from the
store's pool. As many stalled clients as the pool has connections would leave every
other S3 download waiting for one, and answered 504. Here a real `gateway serve`
with a pool of POOL connections gets one steady slow reader and POOL - 1 stalled
clients, which take the whole pool, and then a normal download, which must succeed
once the stalled ones are cut; the slow reader, which keeps accepting bytes, must not
be. On local disk the same holds for streams sent with sendfile(2).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.gateway_process import MIB, GatewayProcess, patterned, s3_env

SEND_TIMEOUT = 2.0
POOL = 4
STALLED = POOL - 1  # with the steady reader, the whole pool
# Larger than the ~4 MiB that loopback sockets take in, so that a stalled client
# really leaves the gateway with bytes it cannot send.
FILE_SIZE = {"local": 32 * MIB, "s3": 8 * MIB}
EARLY = 0.05  # timers may fire this much before their time


@dataclass
class Served:
    gateway: GatewayProcess
    raw_path: str
    storage_dir: Path
    moto_port: int | None

    def streams_held(self) -> int:
        if self.moto_port is None:
            return sum(t.startswith(str(self.storage_dir)) for t in self.gateway.fd_targets())
        return sum(s.remote_port == self.moto_port for s in self.gateway.tcp_sockets())


@pytest.fixture(params=["local", "s3"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    # The storage timeout is longer than the send timeout: a download that waits for
    # a pooled connection gets one when the stalled streams are cut, before a 504.
    env = {"GATEWAY_SEND_TIMEOUT": str(SEND_TIMEOUT), "GATEWAY_STORAGE_TIMEOUT": "10"}
    moto_port = None
    if request.param == "s3":
        s3, moto_port = s3_env(request.getfixturevalue("moto_endpoint"))
        env |= s3 | {"GATEWAY_S3_MAX_CONNECTIONS": str(POOL)}
    gateway = GatewayProcess.start(tmp_path / "data", env)
    try:
        async def upload() -> tuple[int, int]:
            async with aiohttp.ClientSession() as session:
                return await gateway.upload(session, patterned(FILE_SIZE[request.param]))

        recording_id, media_id = asyncio.run(upload())
        yield Served(gateway, f"/recordings/{recording_id}/media/{media_id}/raw",
                     tmp_path / "data" / "recordings", moto_port)
    finally:
        assert gateway.stop() == 0, gateway.log.read_text()


async def open_stream(served: Served, receive_buffer: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", served.gateway.port))
    await loop.sock_sendall(sock, (f"GET {served.raw_path} HTTP/1.1\r\nHost: gateway\r\n"
                                   f"X-API-Key: {served.gateway.key}\r\n\r\n").encode())
    return sock


async def read_steadily(sock: socket.socket, seconds: float) -> tuple[int, bool]:
    """Read 1 KiB every 0.25 s (4 KiB/s) for `seconds`; bytes read, and whether the
    gateway closed the connection meanwhile."""
    received = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        try:
            data = sock.recv(1024)
        except BlockingIOError:
            continue
        except ConnectionError:
            return received, True
        if not data:
            return received, True
        received += len(data)
    return received, False


async def test_stalled_clients_are_cut_and_free_their_storage(served: Served) -> None:
    gateway = served.gateway
    opened = time.monotonic()  # before the connections: no gateway clock starts earlier
    steady = await open_stream(served, 4096)
    stalled = [await open_stream(served, 4096) for _ in range(STALLED)]
    try:
        reading = asyncio.create_task(read_steadily(steady, SEND_TIMEOUT * 4))
        for _ in range(300):  # until every stream holds its file or connection (30 s at most)
            if served.streams_held() >= STALLED + 1:
                break
            await asyncio.sleep(0.1)
        # A normal download, while the stalled clients hold what they hold.
        async with aiohttp.ClientSession() as session:
            async with session.get(gateway.base_url + served.raw_path, headers={
                    **gateway.headers(), "Range": f"bytes=0-{MIB - 1}"}) as resp:
                status = resp.status
                body = await resp.read()
            downloaded = time.monotonic() - opened
        # Every stalled stream is released, and its connection cut.
        for _ in range(int(SEND_TIMEOUT * 60)):
            if served.streams_held() <= 1:  # the steady reader's
                break
            await asyncio.sleep(0.1)
        released = time.monotonic() - opened
        held = served.streams_held()
        received, steady_closed = await reading
        cut = 0
        for sock in stalled:
            with contextlib.suppress(BlockingIOError):
                try:
                    while sock.recv(1 << 20):  # what the kernel still had for us
                        pass
                    cut += 1  # the gateway closed the connection
                except ConnectionError:
                    cut += 1  # the gateway reset it
    finally:
        for sock in [*stalled, steady]:
            sock.close()
    print(f"\n{STALLED} stalled clients released after {released:.2f} s "
          f"(GATEWAY_SEND_TIMEOUT={SEND_TIMEOUT:g}), {cut} of them cut; a download "
          f"waiting meanwhile answered {status} after {downloaded:.2f} s; the steady "
          f"reader got {received} bytes and was {'cut' if steady_closed else 'kept'}")
    assert status == 206 and len(body) == MIB
    if served.moto_port is not None:
        # The pool was full: the download had to wait for a stalled stream's connection.
        assert downloaded >= SEND_TIMEOUT - EARLY
    assert held <= 1 and cut == STALLED
    assert released >= SEND_TIMEOUT - EARLY
    assert not steady_closed and received > 0
