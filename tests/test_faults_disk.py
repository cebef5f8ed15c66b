"""A full disk during a local upload: 507, nothing partial left, no catalog row.

The disk is real: `gateway serve` runs in a private mount namespace (unshare(1)) with a
1 MiB tmpfs over its LOCAL_STORAGE_DIR, so the kernel itself answers ENOSPC and the
mount dies with the process. Root needs only a new mount namespace; anyone else also
maps themselves to root in a new user namespace, which most Linux systems allow. Where
neither works, the test is skipped and says why. (A file-size limit, RLIMIT_FSIZE,
would give EFBIG rather than ENOSPC; injecting errors into our own code would prove
nothing.)
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.gateway_process import wait_until_up

DISK = 1024 * 1024
"""The tmpfs's size."""


@dataclass
class FullDiskGateway:
    process: subprocess.Popen[str]
    base: str
    key: str
    storage: Path  # as the test sees it: the directory under the mount
    catalog: Path

    @property
    def mounted(self) -> Path:
        """The storage directory as the gateway sees it: the tmpfs, inside its namespace."""
        return Path(f"/proc/{self.process.pid}/root") / self.storage.relative_to("/")

    def files(self) -> list[str]:
        """Every file on the tmpfs, hidden temporary ones included."""
        return sorted(str(p.relative_to(self.mounted)) for p in self.mounted.rglob("*")
                      if p.is_file())

    def media_rows(self, recording_id: int) -> int:
        with sqlite3.connect(f"file:{self.catalog}?mode=ro", uri=True) as db:
            (count,) = db.execute("SELECT COUNT(*) FROM media_files WHERE recording_id = ?",
                                  (recording_id,)).fetchone()
        return int(count)


def _namespace_command() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None or sys.platform != "linux":
        pytest.skip("needs Linux and unshare(1) to mount a small tmpfs for the gateway")
    # --fork would put the gateway under a child pid; without it unshare execs in place.
    command = [unshare, "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        command += ["--user", "--map-root-user"]
    return command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[FullDiskGateway]:
    storage = tmp_path / "recordings"
    storage.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(GATEWAY_DATA_DIR=str(tmp_path / "data"), LOCAL_STORAGE_DIR=str(storage),
               GATEWAY_PORT=str(_free_port()), GATEWAY_LOG_LEVEL="warning")
    created = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--user-id", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=True)
    key = created.stdout.strip().splitlines()[-1]
    probe = subprocess.run(
        [*_namespace_command(), "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(storage)],
        capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private namespace: {probe.stderr.strip()}")
    script = 'mount -t tmpfs -o size=1m tmpfs "$LOCAL_STORAGE_DIR" && exec "$0" -m gateway serve'
    process = subprocess.Popen([*_namespace_command(), "sh", "-c", script, sys.executable],
                               env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    gateway = FullDiskGateway(process, f"http://127.0.0.1:{env['GATEWAY_PORT']}", key,
                              storage, tmp_path / "data" / "catalog.sqlite3")
    try:
        _wait_until_up(gateway)
        yield gateway
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        finally:
            process.kill()
            process.communicate()
    assert not any(storage.iterdir()), "the tmpfs was visible outside its namespace"


def _wait_until_up(gateway: FullDiskGateway) -> None:
    wait_until_up(f"{gateway.base}/healthz", gateway.process,
                  lambda: gateway.process.communicate()[1])


async def test_full_disk_is_507_and_leaves_nothing(full_disk: FullDiskGateway) -> None:
    gw = full_disk
    headers = {"X-API-Key": gw.key}
    async with aiohttp.ClientSession(gw.base, headers=headers) as client:

        async def upload(recording_id: int, size: int, fill: bytes) -> tuple[int, Any]:
            async with client.post(f"/recordings/{recording_id}/media?format=mp3",
                                   data=io.BytesIO(fill * size)) as resp:
                return resp.status, await resp.json()

        async def new_recording() -> int:
            async with client.post("/recordings", json={}) as resp:
                assert resp.status == 201
                recording_id: int = (await resp.json())["id"]
                return recording_id

        # An upload larger than the whole disk.
        first = await new_recording()
        started = time.monotonic()
        status, body = await upload(first, 3 * DISK, b"a")
        print(f"seconds={time.monotonic() - started:.3f}")  # a figure for `pytest -rP`
        assert status == 507
        assert body == {"detail": "Local storage is full; the upload was discarded"}
        assert gw.files() == []  # no temporary file, no partial file
        assert gw.media_rows(first) == 0
        async with client.get(f"/recordings/{first}") as resp:
            assert (await resp.json())["media_files"] == []

        # A file that fits, then one that does not fit beside it: the first stays whole.
        kept = await new_recording()
        status, stored = await upload(kept, DISK * 6 // 10, b"k")
        assert status == 201, stored
        status, body = await upload(first, DISK * 6 // 10, b"b")
        assert status == 507
        assert gw.media_rows(first) == 0
        assert len(gw.files()) == 1  # only the kept file
        async with client.get(f"/recordings/{kept}/media/{stored['id']}/raw") as resp:
            assert resp.status == 200
            assert await resp.read() == b"k" * (DISK * 6 // 10)

        # The space of the discarded uploads was given back: a small file fits.
        status, small = await upload(first, DISK // 4, b"c")
        assert status == 201, small
        assert gw.media_rows(first) == 1
        assert len(gw.files()) == 2
