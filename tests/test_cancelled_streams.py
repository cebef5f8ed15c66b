"""Streams whose handler is cancelled mid-way release their file or storage connection.

`gateway serve` lets a handler run on when its client leaves (the next write fails),
but a handler can still be cancelled: aiohttp does it to requests still running when
a shutdown's grace period ends, and a test server does it whenever a client leaves.
Here an in-process gateway that cancels on disconnect gets 400 vanishing clients
(tests/raw_clients.py), on local disk, S3, GCS and Azure; cancellation then lands anywhere (in
open, in the ranged GET, in sendfile, in a write), and afterwards this process must
hold no recording file and no half-closed or surplus connection to the store, and
the server no connection but the test client's own.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import pytest
from yarl import URL

from gateway.settings import Settings
from tests.conftest import AiohttpClient, start_gateway
from tests.gateway_process import MIB, fd_targets, tcp_sockets
from tests.raw_clients import storm

REQUESTS = 400
CONCURRENCY = 16
FILE_SIZE = {"local": 32 * MIB, "s3": 8 * MIB, "gcs": 8 * MIB,  # as in test_vanishing_clients.py
             "azure": 8 * MIB}
SETTLE = 10.0


def storage_sockets(moto_port: int | None) -> list[str]:
    """States of this process's connections to the store (not moto's end of them)."""
    if moto_port is None:
        return []
    return [s.state for s in tcp_sockets(os.getpid()) if s.remote_port == moto_port]


async def test_cancelled_handlers_release_files_and_storage_connections(
    aiohttp_client: AiohttpClient, settings: Settings, backend: str,
    request: pytest.FixtureRequest,
) -> None:
    gw = await start_gateway(aiohttp_client, settings, cancel_on_disconnect=True)
    data = os.urandom(FILE_SIZE[backend])
    recording_id, media_id = await gw.recording_with_media(data, fmt="mp3")
    store = {"s3": "moto_endpoint", "gcs": "gcs_endpoint",
             "azure": "azurite_endpoint"}.get(backend)
    moto_port = URL(request.getfixturevalue(store)).port if store else None
    storage_dir = str(settings.local_storage_dir)
    before = len(storage_sockets(moto_port))
    port, runner = gw.client.server.port, gw.client.server.runner
    assert port is not None and runner is not None and runner.server is not None
    server = runner.server

    statuses = await storm(port, gw.raw_path(recording_id, media_id),
                           gw.keys["alice"], len(data), requests=REQUESTS,
                           concurrency=CONCURRENCY, most_read=MIB, seed=REQUESTS)

    started = time.monotonic()
    for _ in range(int(SETTLE * 10)):
        files = sum(t.startswith(storage_dir) for t in fd_targets(os.getpid()))
        to_store = storage_sockets(moto_port)
        connections = len(server.connections)
        if (not files and connections <= 1 and set(to_store) <= {"ESTABLISHED"}
                and len(to_store) <= before + CONCURRENCY):
            break
        await asyncio.sleep(0.1)
    print(f"\n{backend}: {REQUESTS} clients gone, handlers cancelled (statuses "
          f"{dict(statuses)}); after {time.monotonic() - started:.2f} s: {files} recording "
          f"files open, connections to the store {before} -> {dict(Counter(to_store))}, "
          f"server connections {connections}")
    assert set(statuses) <= {"200", "206", "-"}, statuses
    assert files == 0
    assert connections <= 1  # the test client's keep-alive connection, at most
    assert set(to_store) <= {"ESTABLISHED"}, Counter(to_store)
    assert len(to_store) <= before + CONCURRENCY
    # And the gateway still serves the file whole.
    async with gw.client.get(gw.raw_path(recording_id, media_id), headers=gw.h()) as resp:
        assert resp.status == 200 and await resp.read() == data
