"""The zero-copy relay on its own, between real TCP connections on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Iterator

import pytest

from gateway.storage.splice import Relay, SourceEnded

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="splice(2) is Linux's")

MIB = 1024 * 1024


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Both ends of one TCP connection, non-blocking, as asyncio's transports keep them."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        near = socket.create_connection(listener.getsockname())
        far, _ = listener.accept()
    for sock in (near, far):
        sock.setblocking(False)
    return near, far


Pairs = tuple[socket.socket, socket.socket, socket.socket, socket.socket]


@pytest.fixture
def pairs() -> Iterator[Pairs]:
    """store -> (source ... target) -> client: the relay reads `source`, writes `target`."""
    store, source = tcp_pair()
    target, client = tcp_pair()
    yield store, source, target, client
    for sock in (store, source, target, client):
        sock.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def send_all(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)


async def receive(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    while len(got) < size:
        piece = await loop.sock_recv(sock, size - len(got))
        if not piece:
            break
        got += piece
    return bytes(got)


async def test_moves_exactly_the_length_asked_and_closes_its_descriptors(pairs: Pairs) -> None:
    store, source, target, client = pairs
    data = os.urandom(5 * MIB + 123)
    before = open_fds()
    relay = Relay.prepare(source, target)
    assert relay is not None
    counted: list[int] = []
    length = len(data) - 100  # what follows stays unread in the source
    _, _, got = await asyncio.gather(
        send_all(store, data), relay.run(length, read_timeout=5, sent=counted.append),
        receive(client, length))
    assert got == data[:length]
    assert sum(counted) == length
    assert open_fds() == before
    assert await receive(source, 100) == data[length:]  # the source's socket still works


async def test_a_source_that_closes_early(pairs: Pairs) -> None:
    store, source, target, client = pairs
    relay = Relay.prepare(source, target)
    assert relay is not None
    await send_all(store, b"x" * 1000)
    store.shutdown(socket.SHUT_WR)
    with pytest.raises(SourceEnded):
        await relay.run(5000, read_timeout=5, sent=lambda n: None)
    assert await receive(client, 1000) == b"x" * 1000


async def test_a_silent_source_times_out(pairs: Pairs) -> None:
    _store, source, target, _client = pairs
    relay = Relay.prepare(source, target)
    assert relay is not None
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await relay.run(5000, read_timeout=0.3, sent=lambda n: None)
    assert 0.25 <= asyncio.get_running_loop().time() - started < 3


async def test_a_client_that_is_gone(pairs: Pairs) -> None:
    store, source, target, client = pairs
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # a reset, as a vanished player's
    relay = Relay.prepare(source, target)
    assert relay is not None
    sending = asyncio.create_task(send_all(store, os.urandom(8 * MIB)))
    try:
        with pytest.raises(ConnectionResetError):
            await relay.run(8 * MIB, read_timeout=5, sent=lambda n: None)
    finally:
        sending.cancel()


def test_without_descriptors_to_spare_it_declines(pairs: Pairs) -> None:
    _store, source, _target, _client = pairs
    closed = socket.socket()
    closed.close()  # its descriptor is gone: dup() fails as it would at the limit
    before = open_fds()
    assert Relay.prepare(source, closed) is None
    assert open_fds() == before  # the source's duplicate was closed again
