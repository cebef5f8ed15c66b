"""`gateway serve` in a process of its own, and what /proc says about that process.

Tests that count the gateway's descriptors, connections and memory need it alone in
its process: an in-process test server shares all three with the test and with moto.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from gateway.auth import generate_api_key
from gateway.catalog import Catalog, SqliteCatalog
from gateway.catalog.postgres import PostgresCatalog
from gateway.models import Principal, Role
from tests.storage_probe import s3_client

MIB = 1024 * 1024
STARTUP = 90.0
"""Seconds a gateway may take to answer its first /healthz: generous, as a loaded
machine can take long to import and start (two workers, a demo recording)."""


def wait_until_up(url: str, process: subprocess.Popen[Any], output: Callable[[], str],
                  timeout: float = STARTUP) -> None:
    """Poll `url` until it answers 200; fail at once, with `output()`, if `process` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the gateway exited with {process.returncode} before "
                                 f"answering: {output()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def s3_env(endpoint: str) -> tuple[dict[str, str], int]:
    """Settings for a gateway on a fresh bucket of the moto server at `endpoint`, and
    moto's port (to tell the gateway's connections to the store apart)."""
    bucket = f"rec-{os.urandom(8).hex()}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    env = {"STORAGE_BACKEND": "s3", "S3_ENDPOINT": endpoint, "S3_BUCKET": bucket,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return env, int(endpoint.rsplit(":", 1)[1])
def gcs_env(endpoint: str, credentials: str) -> tuple[dict[str, str], int]:
    """Settings for a gateway on a fresh bucket of the GCS emulator at `endpoint`, and the
    emulator's port."""
    from tests.gcs_emulator import create_bucket

    bucket = f"rec-{os.urandom(8).hex()}"
    create_bucket(endpoint, bucket)
    env = {"STORAGE_BACKEND": "gcs", "GCS_ENDPOINT": endpoint, "GCS_BUCKET": bucket,
           "GCS_CREDENTIALS": credentials}
    return env, int(endpoint.rsplit(":", 1)[1])


_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN",
               "04": "FIN_WAIT1", "05": "FIN_WAIT2", "09": "LAST_ACK", "0B": "CLOSING"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class TcpSocket:
    """One TCP socket the process holds open."""

    local_port: int
    remote_port: int
    state: str


def fd_targets(pid: int) -> list[str]:
    """Where each open descriptor of a process points (a path, `socket:[inode]`, ...)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    targets = []
    for fd in os.listdir(fd_dir):
        try:
            targets.append(os.readlink(fd_dir / fd))
        except FileNotFoundError:  # closed while we looked
            continue
    return targets


def tcp_sockets(pid: int) -> list[TcpSocket]:
    """The TCP sockets a process holds. The kernel's table is per network namespace, not
    per process: entries are matched by the inodes of the process's socket descriptors."""
    inodes = {t[len("socket:["):-1] for t in fd_targets(pid) if t.startswith("socket:[")}
    sockets = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                sockets.append(TcpSocket(_port(fields[1]), _port(fields[2]),
                                         _TCP_STATES.get(fields[3], fields[3])))
    return sockets


async def _create_key(data_dir: Path, env: Mapping[str, str]) -> str:
    catalog: Catalog
    if env.get("GATEWAY_CATALOG") == "postgres":
        catalog = await PostgresCatalog.open(env["GATEWAY_DATABASE_URL"], pool_size=1,
                                             wait=30, migrate=True)
    else:
        catalog = await SqliteCatalog.open(data_dir / "catalog.sqlite3")
    try:
        key = generate_api_key()
        await catalog.add_api_key(key.key_hash, key.prefix, Principal(1, "default", Role.RECORDER))
        return key.key
    finally:
        await catalog.close()


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


class GatewayProcess:
    """A running `gateway serve`, its API key, and its numbers from /proc."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, key: str, log: Path) -> None:
        self.process = process
        self.port = port
        self.key = key
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    @classmethod
    def start(cls, data_dir: Path, env: Mapping[str, str]) -> GatewayProcess:
        """Create a recorder key for user 1, then start the gateway and wait for /healthz.

        Synchronous, for fixtures: it runs its own event loop for the catalog.
        """
        data_dir.mkdir(parents=True, exist_ok=True)
        key = asyncio.run(_create_key(data_dir, env))
        port = free_port()
        keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")
        full_env = {k: v for k, v in os.environ.items() if k in keep}
        full_env.update({"GATEWAY_DATA_DIR": str(data_dir), "GATEWAY_PORT": str(port),
                         "LOCAL_STORAGE_FSYNC": "false", "GATEWAY_LOG_LEVEL": "warning",
                         "AWS_CONFIG_FILE": str(data_dir / "no-aws-config"),
                         "AWS_SHARED_CREDENTIALS_FILE": str(data_dir / "no-aws-credentials"),
                         **env})
        log = data_dir / "gateway.log"
        # The log goes to a file: a pipe nobody reads would block the gateway once full.
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"],
                                       env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        gateway = cls(process, port, key, log)
        try:
            gateway._wait_until_up()
        except BaseException:
            gateway.stop()
            raise
        return gateway

    def _wait_until_up(self) -> None:
        wait_until_up(f"{self.base_url}/healthz", self.process, self.log.read_text)

    def stop(self) -> int:
        """SIGTERM, as an orchestrator stops it; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    # What /proc says about the process.

    def fd_targets(self) -> list[str]:
        return fd_targets(self.pid)

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far, user and system (/proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def tcp_sockets(self) -> list[TcpSocket]:
        return tcp_sockets(self.pid)

    # Talking to it.

    async def upload(self, session: aiohttp.ClientSession, body: AsyncIterator[bytes] | bytes,
                     fmt: str = "mp3") -> tuple[int, int]:
        """A new recording with one media file; returns (recording id, media id)."""
        data = io.BytesIO(body) if isinstance(body, bytes) else body
        async with session.post(f"{self.base_url}/recordings", json={},
                                headers=self.headers()) as resp:
            assert resp.status == 201, await resp.text()
            recording = await resp.json()
        async with session.post(f"{self.base_url}/recordings/{recording['id']}/media",
                                params={"format": fmt}, data=data,
                                headers=self.headers()) as resp:
            assert resp.status == 201, await resp.text()
            media = await resp.json()
        return recording["id"], media["id"]

    async def sha256(self, session: aiohttp.ClientSession, path: str) -> str:
        """Download `path` whole and hash it, never holding it in memory."""
        digest = hashlib.sha256()
        async with session.get(f"{self.base_url}{path}", headers=self.headers()) as resp:
            assert resp.status == 200, await resp.text()
            async for chunk in resp.content.iter_chunked(MIB):
                digest.update(chunk)
        return digest.hexdigest()


async def patterned(size: int, seed: int = 7) -> AsyncIterator[bytes]:
    """`size` bytes of a 32-byte pattern that depends on `seed`, in 1 MiB pieces."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)
    for offset in range(0, size, MIB):
        yield block[: min(MIB, size - offset)]
