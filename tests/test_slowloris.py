"""Slowloris: request heads that never finish, and idle connections, are closed in time.

A real `gateway serve` with short GATEWAY_HEADER_TIMEOUT and GATEWAY_KEEPALIVE_TIMEOUT,
and raw sockets that send headers one byte a second, or nothing at all, while normal
clients keep being served. Times are only compared with the configured timeouts:
never closed before one (timers do not fire early), always before a slow client
could have finished.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gateway.settings import SettingsError, load_settings
from tests.gateway_process import GatewayProcess

HEADER_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 3.0
EARLY = 0.05  # timers may fire this much before their time (clock granularity)
SLOW_HEAD = (b"GET /recordings HTTP/1.1\r\nHost: gateway\r\nUser-Agent: slowloris\r\n"
             b"X-Filler: " + b"a" * 40 + b"\r\n\r\n")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess.start(
        tmp_path_factory.mktemp("slowloris"),
        {"GATEWAY_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
         "GATEWAY_KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT)})
    yield process
    assert process.stop() == 0, process.log.read_text()


@dataclass
class Closed:
    """How a connection ended: seconds after it opened, what we sent, what came back,
    and whether it ended with a reset (a byte we sent crossed the gateway's close)."""

    after: float
    sent: int
    received: bytes
    reset: bool = False


async def read_until_closed(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """Everything the gateway sends until it closes; and whether that was a reset."""
    parts = []
    try:
        while chunk := await reader.read(4096):
            parts.append(chunk)
    except ConnectionError:
        return b"".join(parts), True
    return b"".join(parts), False


async def trickle(port: int, data: bytes, interval: float, *, wait: float = 0) -> Closed:
    """Connect, idle `wait` seconds, then send `data` one byte per `interval` until the
    gateway closes the connection."""
    # Before the connection: the gateway's clock cannot have started earlier.
    opened = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = asyncio.create_task(read_until_closed(reader))
    sent = 0
    try:
        await asyncio.wait([received], timeout=wait)
        for byte in data:
            if received.done():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
            await asyncio.wait([received], timeout=interval)
        response, reset = await asyncio.wait_for(received, timeout=60)
        return Closed(time.monotonic() - opened, sent, response, reset)
    finally:
        received.cancel()
        writer.close()


def assert_408(closed: Closed) -> None:
    head, _, body = closed.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), closed.received
    assert b"Connection: close" in head
    assert json.loads(body) == {"detail": "The request headers did not arrive in time"}


async def test_slow_heads_are_cut_at_the_header_timeout_while_others_are_served(
    gateway: GatewayProcess,
) -> None:
    # Bytes at 0.5 s, 1.5 s, 2.5 s...: none is sent just as the gateway closes, which
    # would make the close a reset that takes the 408 with it.
    slow = [asyncio.create_task(trickle(gateway.port, SLOW_HEAD, 1.0, wait=0.5))
            for _ in range(20)]
    silent = [asyncio.create_task(trickle(gateway.port, b"", 1.0)) for _ in range(5)]
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:
        while not all(task.done() for task in slow + silent):
            async with session.get(f"{gateway.base_url}/recordings",
                                   headers=gateway.headers()) as resp:
                statuses.append(resp.status)
            async with session.get(f"{gateway.base_url}/healthz") as resp:
                statuses.append(resp.status)
            await asyncio.sleep(0.2)
    # Normal clients were served all along.
    assert len(statuses) >= 10 and set(statuses) == {200}, statuses
    answered = 0
    for closed in [task.result() for task in slow]:
        print(f"slow head: closed after {closed.after:.2f} s, {closed.sent} of "
              f"{len(SLOW_HEAD)} bytes sent{', reset' if closed.reset else ''}")
        assert closed.after >= HEADER_TIMEOUT - EARLY
        assert closed.sent < len(SLOW_HEAD)  # cut long before the head could be finished
        if not closed.reset:  # a reset (a very late timer) loses the 408 on the way
            assert_408(closed)
            answered += 1
    assert answered >= len(slow) // 2
    for closed in [task.result() for task in silent]:
        # Nothing asked, nothing answered: just closed.
        assert closed.after >= HEADER_TIMEOUT - EARLY
        assert closed.received == b""


async def test_the_timer_restarts_at_the_first_byte_of_a_later_request(
    gateway: GatewayProcess,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        for round_ in range(3):  # quicker than either timeout: the connection stays up
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if round_ < 2:
                await asyncio.sleep(HEADER_TIMEOUT * 0.75)  # longer in all than the timeout
        # Start a head slowly: the header clock starts at its first byte. (The keep-alive
        # clock, from the last answer, would close the connection without a 408 later.)
        started = time.monotonic()
        sent = 0
        received = asyncio.create_task(read_until_closed(reader))
        for byte in SLOW_HEAD:  # at 0, 0.9, 1.8, 2.7 s...: none just as the gateway closes
            writer.write(bytes([byte]))
            sent += 1
            await asyncio.wait([received], timeout=0.9)
            if received.done():
                break
        response, reset = await asyncio.wait_for(received, timeout=60)
        after = time.monotonic() - started
    finally:
        writer.close()
    assert after >= HEADER_TIMEOUT - EARLY and sent < len(SLOW_HEAD)
    assert not reset
    assert_408(Closed(after, sent, response))


async def test_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(
    gateway: GatewayProcess,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        asked = time.monotonic()  # the keep-alive clock starts later, once answered
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in head
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        rest = await asyncio.wait_for(reader.read(), timeout=KEEPALIVE_TIMEOUT * 10)
        idle = time.monotonic() - asked
    finally:
        writer.close()
    print(f"idle keep-alive connection closed after {idle:.2f} s")
    assert rest == b""  # closed without a word: nothing was asked
    assert idle >= KEEPALIVE_TIMEOUT - EARLY


async def test_a_slow_body_is_not_a_slow_head(gateway: GatewayProcess) -> None:
    """Uploads may trickle: only the head is timed, so this one outlives the header timeout."""
    async with aiohttp.ClientSession() as session, session.post(
            f"{gateway.base_url}/recordings", json={}, headers=gateway.headers()) as resp:
        recording = (await resp.json())["id"]
    body = b"ID3slowbody!"
    head = (f"POST /recordings/{recording}/media?format=mp3 HTTP/1.1\r\nHost: gateway\r\n"
            f"X-API-Key: {gateway.key}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    started = time.monotonic()
    try:
        writer.write(head)
        for byte in body:
            await asyncio.sleep(HEADER_TIMEOUT * 2 / len(body))
            writer.write(bytes([byte]))
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
    finally:
        writer.close()
    assert time.monotonic() - started > HEADER_TIMEOUT
    assert response.startswith(b"HTTP/1.1 201 "), response


def test_timeouts_are_settings_with_defaults_and_checked_values(tmp_path: Path) -> None:
    settings = load_settings({"GATEWAY_DATA_DIR": str(tmp_path)})
    assert (settings.header_timeout, settings.keepalive_timeout, settings.send_timeout) == (
        15.0, 75.0, 60.0)
    for variable, field in (("GATEWAY_HEADER_TIMEOUT", "header_timeout"),
                            ("GATEWAY_KEEPALIVE_TIMEOUT", "keepalive_timeout"),
                            ("GATEWAY_SEND_TIMEOUT", "send_timeout")):
        with pytest.raises(SettingsError) as error:
            load_settings({"GATEWAY_DATA_DIR": str(tmp_path), variable: "0"})
        assert error.value.variable == variable
        changed = load_settings({"GATEWAY_DATA_DIR": str(tmp_path), variable: "2.5"})
        assert getattr(changed, field) == 2.5
