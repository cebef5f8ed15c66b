"""GCS clients compared on a streamed read: gcloud-aio-storage against google-cloud-storage.

Starts fake-gcs-server (from the test extra) on 127.0.0.1, stores a 64 MiB object,
then streams it in 64 KiB reads with each client, best of three: throughput and the
process's CPU time. Then opens 50 streams at once with each and reads 128 KiB of each,
to see the memory one open stream holds. Prints a table; docs/storage.md quotes it
("Client: gcloud-aio-storage").

    .venv/bin/python bench/gcs_clients.py
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.gcs_emulator import FakeGcs, create_bucket
from tests.storage_probe import GcsProbe

SIZE = 64 * 1024 * 1024
READ = 64 * 1024
STREAMS = 50
BUCKET = "bench"
OBJECT = "recording.bin"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def read_gcloud_aio(url: str) -> int:
    from gcloud.aio.storage import Storage

    async with aiohttp.ClientSession(read_bufsize=READ) as session:
        storage = Storage(session=session, api_root=url)  # type: ignore[arg-type]
        stream = await storage.download_stream(BUCKET, OBJECT)
        total = 0
        while chunk := await stream.read(READ):
            total += len(chunk)
        return total


async def read_plain_aiohttp(url: str) -> int:
    async with aiohttp.ClientSession(read_bufsize=READ) as session, session.get(
            f"{url}/storage/v1/b/{BUCKET}/o/{OBJECT}", params={"alt": "media"}) as answer:
        total = 0
        async for chunk in answer.content.iter_chunked(READ):
            total += len(chunk)
        return total


def google_blob(url: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
    client = storage.Client(project="bench", credentials=anonymous,
                            client_options={"api_endpoint": url})
    return client.bucket(BUCKET).blob(OBJECT)


def read_google_sync(url: str) -> int:
    total = 0
    with google_blob(url).open("rb", chunk_size=1024 * 1024) as stream:
        while chunk := stream.read(READ):
            total += len(chunk)
    return total


async def read_google_executor(url: str) -> int:
    return await asyncio.get_running_loop().run_in_executor(None, read_google_sync, url)


def best_of_three(read: Callable[[str], Coroutine[Any, Any, int]], url: str) -> tuple[float, float]:
    """(MiB/s, CPU milliseconds) of the fastest of three runs, after one to warm up."""
    import time

    asyncio.run(read(url))
    best: tuple[float, float] | None = None
    for _ in range(3):
        cpu, started = cpu_seconds(), time.perf_counter()
        assert asyncio.run(read(url)) == SIZE
        wall, used = time.perf_counter() - started, cpu_seconds() - cpu
        if best is None or wall < best[0]:
            best = (wall, used)
    assert best is not None
    return SIZE / best[0] / 2**20, best[1] * 1000


async def open_streams_gcloud_aio(url: str) -> int:
    from gcloud.aio.storage import Storage

    async with aiohttp.ClientSession(read_bufsize=READ) as session:
        storage = Storage(session=session, api_root=url)  # type: ignore[arg-type]
        await (await storage.download_stream(BUCKET, OBJECT)).read(READ)
        base = rss()
        streams = [await storage.download_stream(BUCKET, OBJECT) for _ in range(STREAMS)]
        for _ in range(2):
            for stream in streams:
                await stream.read(READ)
        grown = rss() - base
        for stream in streams:
            stream._response.close()
        return grown


def open_streams_google(url: str) -> int:
    with google_blob(url).open("rb", chunk_size=1024 * 1024) as warm:
        warm.read(READ)
    base = rss()
    streams = [google_blob(url).open("rb", chunk_size=1024 * 1024) for _ in range(STREAMS)]
    with ThreadPoolExecutor(STREAMS) as pool:
        list(pool.map(lambda s: s.read(2 * READ), streams))
        grown = rss() - base
    for stream in streams:
        stream.close()
    return grown


def main() -> None:
    emulator = FakeGcs()
    emulator.start()
    try:
        create_bucket(emulator.url, BUCKET)
        GcsProbe(emulator.url, BUCKET).put(OBJECT, os.urandom(SIZE))
        rows = [
            ("gcloud-aio-storage download_stream", read_gcloud_aio),
            ("plain aiohttp", read_plain_aiohttp),
            ("google-cloud-storage blob.open in an executor", read_google_executor),
        ]
        print(f"| client | MiB/s | CPU ms for {SIZE >> 20} MiB |")
        print("|---|---|---|")
        for name, read in rows:
            speed, cpu = best_of_three(read, emulator.url)
            print(f"| {name} | {speed:,.0f} | {cpu:.0f} |")
        aio = asyncio.run(open_streams_gcloud_aio(emulator.url))
        google = open_streams_google(emulator.url)
        print(f"\n{STREAMS} open streams: gcloud-aio-storage {aio / STREAMS / 1024:.0f} KiB "
              f"each, google-cloud-storage {google / STREAMS / 1024:.0f} KiB each")
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
