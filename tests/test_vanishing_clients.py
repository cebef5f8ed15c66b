"""Vanishing clients: 2,000 downloads cut at random points leave nothing behind.

A real `gateway serve` (its own process, so /proc shows only its descriptors,
sockets and memory) on local disk, on S3 (moto over HTTP) and on Azure (Azurite).
Raw sockets with a small receive buffer (so that the gateway is really in the middle
of sending) ask for the whole file, one range, a suffix or several ranges, read a
random number of bytes (none, part of the head, part of the body) and close, most
with a reset (SO_LINGER 0), some with a FIN. Afterwards, once settled, the gateway must hold no
client connection, no open recording file, no more storage connections than the
clients could have left idle in the pool, about the descriptors it had before, and
about the memory. The gateway has no active-stream counter to read: descriptors
and connections are what is measured.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.azurite import azure_env
from tests.gateway_process import MIB, GatewayProcess, gcs_env, s3_env
from tests.raw_clients import storm

REQUESTS = 2000
CONCURRENCY = 32
# Loopback sockets take in about 4 MiB before a sender waits: files and reads are
# sized so that most clients leave while the gateway still has several MiB to send.
# S3's file is smaller, because moto copies the whole object for every ranged GET.
FILE_SIZE = {"local": 32 * MIB, "s3": 8 * MIB, "gcs": 8 * MIB, "azure": 8 * MIB}
MOST_READ = 1 * MIB
SETTLE = 15.0  # seconds to wait, at most, for the counts to come back
# Tolerances, generous for a shared machine: descriptors other than pooled storage
# connections back within this of the baseline; resident memory grown by less.
FD_TOLERANCE = 5
RSS_TOLERANCE = 48 * MIB
S3_POOL = 64  # GATEWAY_S3_MAX_CONNECTIONS: a leak of storage connections would exhaust it


@dataclass
class Served:
    gateway: GatewayProcess
    backend: str
    raw_path: str
    data: bytes
    storage_dir: Path
    moto_port: int | None


@pytest.fixture(params=["local", "s3", "gcs", "azure"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    env = {"GATEWAY_LOG_LEVEL": "debug"}  # its log tells which clients it saw leave
    moto_port = None
    if request.param == "s3":
        s3, moto_port = s3_env(request.getfixturevalue("moto_endpoint"))
        env |= s3 | {"GATEWAY_S3_MAX_CONNECTIONS": str(S3_POOL), "GATEWAY_STORAGE_TIMEOUT": "5"}
    if request.param == "gcs":
        gcs, moto_port = gcs_env(request.getfixturevalue("gcs_endpoint"),
                                 request.getfixturevalue("gcs_credentials"))
        env |= gcs | {"GATEWAY_S3_MAX_CONNECTIONS": str(S3_POOL), "GATEWAY_STORAGE_TIMEOUT": "5"}
    if request.param == "azure":
        azure, moto_port = azure_env(request.getfixturevalue("azurite_endpoint"),
                                     tmp_path / "azure")
        env |= azure | {"GATEWAY_S3_MAX_CONNECTIONS": str(S3_POOL),
                        "GATEWAY_STORAGE_TIMEOUT": "5"}
    gateway = GatewayProcess.start(tmp_path / "data", env)
    try:
        data = os.urandom(FILE_SIZE[request.param])

        async def upload() -> tuple[int, int]:
            async with aiohttp.ClientSession() as session:
                return await gateway.upload(session, data)

        recording_id, media_id = asyncio.run(upload())
        yield Served(gateway, request.param,
                     f"/recordings/{recording_id}/media/{media_id}/raw", data,
                     tmp_path / "data" / "recordings", moto_port)
    finally:
        assert gateway.stop() == 0, gateway.log.read_text()


@dataclass(frozen=True)
class Measure:
    """The gateway's resources at one moment."""

    fds: int
    client_sockets: list[str]  # states of sockets to clients (not the listener)
    storage_sockets: list[str]  # states of sockets to the S3 endpoint
    recording_files: int  # descriptors open on files under the local storage dir
    rss: int

    @property
    def other_fds(self) -> int:
        return self.fds - len(self.storage_sockets)


def measure(served: Served) -> Measure:
    gateway = served.gateway
    targets = gateway.fd_targets()
    sockets = gateway.tcp_sockets()
    return Measure(
        fds=len(targets),
        client_sockets=[s.state for s in sockets
                        if s.local_port == gateway.port and s.state != "LISTEN"],
        storage_sockets=[s.state for s in sockets if s.remote_port == served.moto_port],
        recording_files=sum(t.startswith(str(served.storage_dir)) for t in targets),
        rss=gateway.rss(),
    )


async def warm_up(served: Served) -> None:
    """Normal requests first, so that pools, caches and lazy imports exist at the baseline."""
    gateway = served.gateway
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for index in range(10):
            headers = gateway.headers()
            if index % 2:
                headers["Range"] = f"bytes={index * 1000}-{index * 5000}"
            async with session.get(gateway.base_url + served.raw_path, headers=headers) as resp:
                assert resp.status in (200, 206)
                await resp.read()


async def settled(served: Served, baseline: Measure) -> tuple[Measure, float]:
    """Poll until the counts are back, or SETTLE seconds pass; the last measure and when."""
    started = time.monotonic()
    while True:
        now = measure(served)
        back = (not now.client_sockets and not now.recording_files
                and now.other_fds <= baseline.other_fds + FD_TOLERANCE
                and all(state == "ESTABLISHED" for state in now.storage_sockets))
        elapsed = time.monotonic() - started
        if back or elapsed > SETTLE:
            return now, elapsed
        await asyncio.sleep(0.25)


async def scrape(served: Served, name: str) -> float:
    """One sample of the gateway's own /metrics, for the storage that holds the file."""
    async with aiohttp.ClientSession() as session, session.get(
            served.gateway.base_url + "/metrics") as resp:
        text = await resp.text()
    storage = "azure" if served.backend == "azure" else "default"
    line = f'{name}{{storage="{storage}"}} '
    values = [float(row[len(line):]) for row in text.splitlines() if row.startswith(line)]
    assert len(values) == 1, (name, text[:2000])
    return values[0]


async def test_vanishing_clients_leave_nothing_behind(served: Served) -> None:
    gateway = served.gateway
    await warm_up(served)
    baseline = measure(served)
    sent_before = await scrape(served, "gateway_media_sent_bytes_total")
    started = time.monotonic()
    statuses = await storm(gateway.port, served.raw_path, gateway.key, len(served.data),
                           requests=REQUESTS, concurrency=CONCURRENCY, most_read=MOST_READ,
                           seed=REQUESTS)
    duration = time.monotonic() - started
    after, settle_time = await settled(served, baseline)
    print(f"\n{served.backend}: {REQUESTS} vanishing clients in {duration:.1f} s "
          f"(statuses seen: {dict(statuses)}); settled in {settle_time:.2f} s\n"
          f"  fds {baseline.fds} -> {after.fds} (other than storage sockets "
          f"{baseline.other_fds} -> {after.other_fds}); client sockets "
          f"{len(after.client_sockets)}; recording files open {after.recording_files}; "
          f"storage sockets {len(baseline.storage_sockets)} -> {len(after.storage_sockets)} "
          f"{dict(Counter(after.storage_sockets))}; RSS {baseline.rss / MIB:.1f} -> "
          f"{after.rss / MIB:.1f} MiB")

    assert set(statuses) <= {"200", "206", "-"}, statuses  # never a 5xx
    assert after.client_sockets == [], Counter(after.client_sockets)
    assert after.recording_files == 0
    assert after.other_fds <= baseline.other_fds + FD_TOLERANCE
    # Connections to S3: only those the pool keeps idle for reuse (at most one per
    # concurrent client), and none half-closed (CLOSE_WAIT would be a leaked response).
    assert len(after.storage_sockets) <= len(baseline.storage_sockets) + CONCURRENCY
    assert set(after.storage_sockets) <= {"ESTABLISHED"}, Counter(after.storage_sockets)
    assert after.rss - baseline.rss < RSS_TOLERANCE
    # The gateway's own count agrees: no stream is left active, and bytes did go out.
    assert await scrape(served, "gateway_media_streams_active") == 0
    assert await scrape(served, "gateway_media_sent_bytes_total") > sent_before
    # And it still serves: the whole file, byte for byte, and a range.
    async with aiohttp.ClientSession() as session:
        assert (await gateway.sha256(session, served.raw_path)
                == hashlib.sha256(served.data).hexdigest())
        async with session.get(gateway.base_url + served.raw_path,
                               headers={**gateway.headers(), "Range": "bytes=100-199"}) as resp:
            assert resp.status == 206 and await resp.read() == served.data[100:200]
    log = gateway.log.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-5000:]
    # The gateway's side of the story (its debug log): most clients left while it
    # was sending a body, or before it could answer, as the test means them to.
    cut = log.count("client went away during") + log.count("client closed the connection")
    print(f"  the gateway saw {cut} of {REQUESTS} clients leave before their response "
          "was sent")
    assert cut > REQUESTS / 2
