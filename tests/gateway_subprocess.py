"""The gateway in a real subprocess (`python -m gateway serve`), as an operator runs it.

For what only a process shows: signals, exit codes, `kill -9`, restarts on the same
data dir, several workers. Its output goes to a file (a pipe nobody reads would
block it), shown when something fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
START_TIMEOUT = 90.0  # a loaded machine can take long to import and start workers


def base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT")
    return {k: v for k, v in os.environ.items() if k in keep}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class GatewayProcess:
    """`gateway serve` on 127.0.0.1 with its own data dir; restartable on the same one."""

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None,
                 workers: int = 1, name: str = "gateway") -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.workers = workers
        self.env = {**base_env(), "GATEWAY_DATA_DIR": str(data_dir),
                    "GATEWAY_PORT": str(self.port), "LOCAL_STORAGE_FSYNC": "false",
                    "GATEWAY_AUTH_FAILURE_BURST": "0", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{name}.log"
        self._log_offset = 0

    def command(self, *args: str) -> str:
        """Run another `gateway` command on the same settings; its standard output."""
        done = subprocess.run([sys.executable, "-m", "gateway", *args], env=self.env,
                              capture_output=True, text=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def create_key(self, user_id: int = 1) -> str:
        return self.command("keys", "create", "--user-id", str(user_id)).strip().splitlines()[-1]

    def start(self, *, wait: bool = True) -> None:
        """Start and (unless not `wait`) wait until /healthz answers on every worker."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--workers", str(self.workers)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not wait:
            return
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the gateway exited with {self.process.returncode} "
                                     f"before answering:\n{self.log()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/healthz")[0] == 200 and self._workers_up():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not answer in {START_TIMEOUT:.0f} s:\n"
                                     f"{self.log()}")
            time.sleep(0.1)

    def _workers_up(self) -> bool:
        # With several workers, each must have bound the port before tests count on it.
        return self.workers == 1 or len(self.listening_pids()) == self.workers

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """The processes that serve: the gateway itself, or its worker children."""
        if self.workers == 1:
            return [self.pid]
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return []
        return [int(c) for c in children if b"spawn_main" in _cmdline(int(c))]

    def listening_pids(self) -> set[int]:
        inodes = _socket_inodes(local_port=self.port, state=_LISTEN)
        return {pid for pid in self.worker_pids() if _owns_any(pid, inodes)}

    def owner_of(self, sock: socket.socket) -> int | None:
        """The worker that accepted the connection of client socket `sock`."""
        inodes = _socket_inodes(local_port=self.port, remote_port=sock.getsockname()[1])
        return next((pid for pid in self.worker_pids() if _owns_any(pid, inodes)), None)

    def send_signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Make sure nothing is left running (the test's `finally`)."""
        if self.process is not None and self.process.poll() is None:
            pids = self.worker_pids() if self.workers > 1 else []
            self.process.kill()
            self.process.wait(30)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        """What this run of the process wrote so far."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(HOST, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on a new connection: status, headers, body."""
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, key: str, body: bytes | None = None,
             expect: int = 200) -> Any:
        status, _, answer = self.request(method, path, body, {"X-API-Key": key})
        assert status == expect, (status, answer[:300])
        return json.loads(answer)

    def create_recording(self, key: str) -> dict[str, Any]:
        recording: dict[str, Any] = self.json("POST", "/recordings", key, b"{}", expect=201)
        return recording

    def upload(self, key: str, recording_id: int, data: bytes, fmt: str = "mp3") -> int:
        """Upload a media file; its id."""
        media = self.json("POST", f"/recordings/{recording_id}/media?format={fmt}", key, data,
                          expect=201)
        assert media["file_size_bytes"] == len(data)
        media_id: int = media["id"]
        return media_id

    def raw_sha256(self, key: str, recording_id: int, media_id: int) -> str:
        status, _, body = self.request(
            "GET", f"/recordings/{recording_id}/media/{media_id}/raw", headers={"X-API-Key": key})
        assert status == 200, (status, body[:300])
        return sha256(body)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length, read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"closed in the headers: {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        piece = sock.recv(65536)
        assert piece, "closed in the body"
        body += piece
    return int(lines[0].split()[1]), headers, body


_LISTEN = "0A"


def _socket_inodes(*, local_port: int, remote_port: int | None = None,
                   state: str | None = None) -> set[str]:
    """Inodes of the server-side sockets on `local_port` (from /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, st, inode = fields[1], fields[2], fields[3], fields[9]
        if int(local.split(":")[1], 16) != local_port:
            continue
        if remote_port is not None and int(remote.split(":")[1], 16) != remote_port:
            continue
        if state is not None and st != state:
            continue
        inodes.add(f"socket:[{inode}]")
    return inodes


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _owns_any(pid: int, inodes: set[str]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
    return False
