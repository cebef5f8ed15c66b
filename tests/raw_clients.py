"""Clients that vanish: raw sockets that ask for media and leave in the middle.

Shared by the tests of vanishing clients against `gateway serve` and against an
in-process gateway that cancels the handlers of clients that left.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections import Counter


def random_request(rng: random.Random, path: str, key: str, size: int) -> bytes:
    """A GET of `path`: the whole file, one range, an open range, a suffix, or several."""
    kind = rng.choices(["full", "range", "open", "suffix", "multi"], [3, 3, 2, 1, 1])[0]
    a = rng.randrange(size)
    b = rng.randrange(a, size)
    value = {"full": None, "range": f"bytes={a}-{b}", "open": f"bytes={a}-",
             "suffix": f"bytes=-{rng.randrange(1, size)}",
             "multi": f"bytes=0-99,{a}-{b},-{rng.randrange(1, 4096)}"}[kind]
    head = f"GET {path} HTTP/1.1\r\nHost: gateway\r\nX-API-Key: {key}\r\n"
    if value is not None:
        head += f"Range: {value}\r\n"
    return (head + "\r\n").encode()


async def vanish(port: int, request: bytes, rng: random.Random, most_read: int) -> str:
    """Send `request`, read a random number of bytes (none, part of the head, or up to
    `most_read`), close abruptly; return the status, or "-" if the head was not read."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Small, so that the gateway is really still sending when the client goes.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    head = b""
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, request)
        budget = rng.choices([0, rng.randrange(1, 300), rng.randrange(most_read)], [1, 1, 8])[0]
        got = 0
        while got < budget:
            chunk = await loop.sock_recv(sock, min(64 * 1024, budget - got))
            if not chunk:
                break
            got += len(chunk)
            if b"\r\n\r\n" not in head:
                head += chunk
                if b"\r\n\r\n" in head:  # never wait for more than the response holds
                    budget = min(budget, _response_size(head))
        if rng.random() < 0.7:  # a reset, as a killed tab or a dropped network does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()
    return head[9:12].decode() if len(head) >= 12 else "-"


def _response_size(head: bytes) -> int:
    fields, _, _ = head.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in fields.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return len(fields) + 4 + length


async def storm(port: int, path: str, key: str, size: int, *, requests: int,
                concurrency: int, most_read: int, seed: int) -> Counter[str]:
    """`requests` vanishing clients, `concurrency` at a time; the statuses they saw."""
    rng = random.Random(seed)
    remaining = iter(range(requests))
    statuses: Counter[str] = Counter()

    async def worker() -> None:
        for _ in remaining:
            request = random_request(rng, path, key, size)
            # A gateway that stopped answering would hang the test: fail instead.
            status = await asyncio.wait_for(vanish(port, request, rng, most_read), timeout=30)
            statuses[status] += 1
            # A leak shows first as errors (an exhausted storage pool answers 504): stop
            # there, rather than wait for each of the remaining requests to time out.
            assert not status.startswith("5"), f"{status} after {statuses}"

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses
