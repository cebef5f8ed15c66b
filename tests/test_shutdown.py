"""Graceful shutdown of `gateway serve`: SIGTERM drains, then the process exits 0.

Real subprocesses, real sockets. A stream is "slow" because the test reads it
slowly through a small receive buffer, as a phone on a poor network would.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gateway_subprocess import HOST, GatewayProcess, sha256

GRACE = 6.0
"""The grace of the single-worker test: what must finish does so within a second or two."""
SIZE = 24 * 1024 * 1024
"""Big enough that a slow reader cannot finish it in the grace, with kernel buffers full."""
SLOW_PIECE, SLOW_PAUSE = 16 * 1024, 0.05  # ~320 KB/s: 24 MiB would take over a minute


class RawStream:
    """One GET, read by hand at the test's pace through a small receive buffer."""

    def __init__(self, port: int, path: str, key: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        self.sock.settimeout(60)
        self.sock.connect((HOST, port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nX-API-Key: {key}\r\n\r\n"
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            piece = self.sock.recv(4096)
            assert piece, "closed in the headers"
            head += piece
        raw, _, rest = head.partition(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip()
                        for k, _, v in (line.partition(":") for line in lines[1:])}
        self.length = int(self.headers["content-length"])
        self.hash = hashlib.sha256(rest)
        self.received = len(rest)
        self.ended = False

    def read(self, limit: int) -> int:
        """One recv of at most `limit` bytes; 0 once the connection ended."""
        if self.ended or self.received >= self.length:
            return 0
        try:
            piece = self.sock.recv(min(limit, self.length - self.received))
        except ConnectionResetError:
            piece = b""
        if not piece:
            self.ended = True
            return 0
        self.hash.update(piece)
        self.received += len(piece)
        return len(piece)

    def read_to_end(self) -> bool:
        """Read as fast as it comes; True if every byte of Content-Length arrived."""
        while self.read(1024 * 1024):
            pass
        return self.received == self.length

    def close(self) -> None:
        self.sock.close()


class SlowReader(threading.Thread):
    """Reads a stream slowly until told to hurry (the server is gone), then to its end."""

    def __init__(self, stream: RawStream) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.hurry = threading.Event()
        self.received_at: list[tuple[float, int]] = []

    def run(self) -> None:
        while not self.hurry.is_set():
            if not self.stream.read(SLOW_PIECE):
                return
            self.received_at.append((time.monotonic(), self.stream.received))
            time.sleep(SLOW_PAUSE)
        self.stream.read_to_end()


def wait_for_draining(conn: http.client.HTTPConnection) -> dict[str, str]:
    """GET /readyz on the kept-alive `conn` until it says 503 (the signal is async)."""
    deadline = time.monotonic() + 30
    while True:
        conn.request("GET", "/readyz")
        response = conn.getresponse()
        body = response.read()
        if response.status == 503:
            assert json.loads(body) == {"status": "draining", "checks": {}}
            return {k.lower(): v for k, v in response.getheaders()}
        assert response.status == 200, (response.status, body)
        assert time.monotonic() < deadline, "readyz never turned 503"
        time.sleep(0.02)


def connection_refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=10).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture(scope="module")
def big_file() -> bytes:
    return os.urandom(SIZE)


def test_sigterm_drains_finishes_what_fits_in_the_grace_and_cuts_the_rest(
    tmp_path: Path, big_file: bytes, record_property: Callable[[str, object], None]
) -> None:
    gw = GatewayProcess(tmp_path / "data", env={"GATEWAY_SHUTDOWN_GRACE": str(GRACE)})
    key = gw.create_key()
    gw.start()
    try:
        recording = gw.create_recording(key)
        media = gw.upload(key, recording["id"], big_file)
        raw = f"/recordings/{recording['id']}/media/{media}/raw"

        probe = gw.connection()  # a load balancer's kept-alive health-check connection
        probe.request("GET", "/readyz")
        first = probe.getresponse()
        assert first.status == 200 and first.getheader("Connection") is None
        first.read()

        short = RawStream(gw.port, raw, key)  # will finish within the grace
        while short.received < 512 * 1024:
            short.read(SLOW_PIECE)
        long = SlowReader(RawStream(gw.port, raw, key))  # would take a minute: cut
        long.start()

        # An upload half sent when the signal comes; the rest follows during the drain.
        target = gw.create_recording(key)
        upload_body = os.urandom(3 * 1024 * 1024)
        upload = socket.create_connection((HOST, gw.port), timeout=60)
        upload.sendall(f"POST /recordings/{target['id']}/media?format=mp3 HTTP/1.1\r\n"
                       f"Host: {HOST}\r\nX-API-Key: {key}\r\n"
                       f"Content-Length: {len(upload_body)}\r\n\r\n".encode())
        upload.sendall(upload_body[: len(upload_body) // 2])
        time.sleep(0.2)  # the handler is streaming it to storage

        signalled = time.monotonic()
        gw.send_signal(signal.SIGTERM)

        # At once: readyz 503 on the kept-alive connection, which the answer closes...
        headers = wait_for_draining(probe)
        record_property("readyz_503_after_s", round(time.monotonic() - signalled, 3))
        assert headers["connection"] == "close"
        # ...and no new connection is accepted.
        assert connection_refused(gw.port)

        # In flight, and done within the grace: every byte, intact.
        upload.sendall(upload_body[len(upload_body) // 2:])
        answer = _read_response(upload)
        assert answer.startswith(b"HTTP/1.1 201 "), answer[:300]
        assert b"Connection: close" in answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["file_size_bytes"] == len(
            upload_body)
        record_property("upload_201_after_s", round(time.monotonic() - signalled, 3))
        assert short.status == 200 and short.read_to_end()
        assert short.hash.hexdigest() == sha256(big_file)
        record_property("stream_complete_after_s", round(time.monotonic() - signalled, 3))

        # The slow one goes on until the grace is over, then is cut; the process exits 0.
        code = gw.wait(timeout=GRACE + 60)
        exited = time.monotonic()
        long.hurry.set()
        long.join(timeout=60)
        assert code == 0, gw.log()
        record_property("grace_s", GRACE)
        record_property("exit_after_s", round(exited - signalled, 3))
        record_property("slow_stream_bytes", long.stream.received)
        record_property("slow_stream_bytes_after_sigterm", long.stream.received - next(
            (n for at, n in long.received_at if at >= signalled), long.stream.received))
        assert exited - signalled >= GRACE  # nothing was cut before the grace ended
        assert any(at > signalled + GRACE / 2 for at, _ in long.received_at), (
            "the slow stream should still have been flowing during the grace")
        assert long.stream.ended and long.stream.received < SIZE
        log = gw.log()
        assert "request(s) still in flight after" in log, log
        assert "Traceback" not in log, log

        # The upload that finished during the drain is stored under its final name,
        # and nothing temporary is left.
        stored = (tmp_path / "data" / "recordings" / "recordings" / "1" / str(target["id"])
                  / f"{target['session_uid']}.mp3")
        assert sha256(stored.read_bytes()) == sha256(upload_body)
        assert not list((tmp_path / "data").rglob("*.part"))
        for sock in (short, long.stream):
            sock.close()
        upload.close()
        probe.close()
    finally:
        gw.stop()


def test_every_worker_drains_and_the_parent_exits_0(
    tmp_path: Path, big_file: bytes, record_property: Callable[[str, object], None]
) -> None:
    gw = GatewayProcess(tmp_path / "data", workers=2, env={"GATEWAY_SHUTDOWN_GRACE": "60"})
    key = gw.create_key()
    gw.start()
    try:
        recording = gw.create_recording(key)
        media = gw.upload(key, recording["id"], big_file)
        raw = f"/recordings/{recording['id']}/media/{media}/raw"
        workers = set(gw.worker_pids())
        assert len(workers) == 2

        # Per worker: a kept-alive probe connection and a stream in flight. The kernel
        # spreads connections over the workers (SO_REUSEPORT); /proc says which is whose.
        probes: dict[int, http.client.HTTPConnection] = {}
        streams: dict[int, RawStream] = {}
        spare = []
        for _ in range(64):
            if len(probes) == len(streams) == 2:
                break
            conn = gw.connection()
            conn.request("GET", "/readyz")
            conn.getresponse().read()
            assert conn.sock is not None
            owner = gw.owner_of(conn.sock)
            if owner in workers and owner not in probes:
                probes[owner] = conn
                continue
            conn.close()
            stream = RawStream(gw.port, raw, key)
            owner = gw.owner_of(stream.sock)
            if owner in workers and owner not in streams:
                stream.read(SLOW_PIECE)
                streams[owner] = stream
            else:
                spare.append(stream)
        assert len(probes) == len(streams) == 2, "the kernel never used both workers"
        for stream in spare:
            stream.close()

        signalled = time.monotonic()
        gw.send_signal(signal.SIGTERM)  # to the parent, which tells every worker
        for conn in probes.values():
            assert wait_for_draining(conn)["connection"] == "close"
        assert connection_refused(gw.port)
        for stream in streams.values():
            assert stream.read_to_end()
            assert stream.hash.hexdigest() == sha256(big_file)
        assert gw.wait(timeout=60) == 0, gw.log()
        record_property("exit_after_s", round(time.monotonic() - signalled, 3))
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
        for stream in streams.values():
            stream.close()
    finally:
        gw.stop()


def test_a_signal_while_workers_start_is_held_then_drained(tmp_path: Path) -> None:
    """SIGTERM in a worker's first second used to kill it outright: `serve` exited 1."""
    gw = GatewayProcess(tmp_path / "data", workers=2)
    gw.start(wait=False)
    try:
        deadline = time.monotonic() + 60
        while len(gw.worker_pids()) < 2:  # both spawned, neither serving yet
            assert gw.process is not None and gw.process.poll() is None, gw.log()
            assert time.monotonic() < deadline, "the workers were never spawned"
            time.sleep(0.005)
        assert not gw.listening_pids()
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(timeout=90) == 0, gw.log()
        log = gw.log()
        assert log.count("SIGTERM received: shutting down") == 2, log
        assert "Traceback" not in log, log
    finally:
        gw.stop()


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while True:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
