"""Uploads and downloads stream: memory does not grow with the file size."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Gateway

MIB = 1024 * 1024


@pytest.fixture(params=["local", "azure"])
def backend(request: pytest.FixtureRequest) -> str:
    """Local disk, and Azure (Azurite runs in a process of its own). Not S3: moto runs
    inside this process and keeps S3 objects in memory here, so this process's RSS says
    nothing about the gateway on S3 (bench/ measures that with the gateway in a process
    of its own)."""
    value: str = request.param
    return value


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class PeakRss:
    """Samples this process's resident memory while a block runs."""

    def __init__(self) -> None:
        self.baseline = rss()
        self.peak = self.baseline

    async def sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss())
            await asyncio.sleep(0.02)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


async def test_one_gib_upload_and_download_keep_memory_flat(gw: Gateway) -> None:
    size = 1024 * MIB
    chunk = bytes(range(256)) * 4096  # 1 MiB

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // len(chunk)):
            yield chunk

    recording = await gw.create_recording()
    peak = PeakRss()
    sampler = asyncio.create_task(peak.sample())
    try:
        async with gw.client.post(f"/recordings/{recording['id']}/media?format=mp3",
                                  data=body(), headers=gw.h()) as resp:
            assert resp.status == 201, await resp.text()
            media = await resp.json()
        assert media["file_size_bytes"] == size
        received = 0
        async with gw.client.get(gw.raw_path(recording["id"], media["id"]),
                                 headers=gw.h()) as resp:
            async for part in resp.content.iter_chunked(MIB):
                received += len(part)
        assert received == size
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    # Client and server share this process; a buffered file would add a whole GiB.
    print(f"{gw.backend}: RSS growth during 1 GiB up and down: {peak.growth / MIB:.1f} MiB")
    assert peak.growth < 64 * MIB, f"RSS grew by {peak.growth / MIB:.0f} MiB"
