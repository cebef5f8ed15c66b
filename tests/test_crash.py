"""Crash safety: `kill -9` during uploads, then a restart on the same data dir.

What must hold after the restart: the catalog opens and is intact, every upload
that answered 201 reads back byte for byte, nothing half-written is visible or
left behind (no media row, no object under the final key, no temporary file, no
unfinished multipart upload), and the recording can take the upload again.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from gateway.appkeys import STORAGES
from gateway.settings import Settings
from gateway.storage.sweep import PartialUploads
from tests.conftest import AiohttpClient, local_only, s3_only, start_gateway
from tests.gateway_subprocess import HOST, GatewayProcess, read_response, sha256
from tests.storage_probe import s3_client

BIG = 64 * 1024 * 1024  # declared; only part of it is ever sent


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def start_big_upload(gw: GatewayProcess, key: str, recording_id: int, sent: int, *,
                     declared: int = BIG) -> socket.socket:
    """An upload that declares more bytes than it sends: in flight at the kill."""
    sock = socket.create_connection((HOST, gw.port), timeout=60)
    sock.sendall(f"POST /recordings/{recording_id}/media?format=mp3 HTTP/1.1\r\n"
                 f"Host: {HOST}\r\nX-API-Key: {key}\r\n"
                 f"Content-Length: {declared}\r\n\r\n".encode())
    sock.sendall(os.urandom(sent))
    return sock


def final_path(gw: GatewayProcess, recording: dict[str, Any], fmt: str = "mp3") -> Path:
    return (gw.data_dir / "recordings" / "recordings" / str(recording["user_id"])
            / str(recording["id"]) / f"{recording['session_uid']}.{fmt}")


def absent(path: Path) -> bool:
    return not path.exists()


def part_files(gw: GatewayProcess) -> list[Path]:
    return sorted((gw.data_dir / "recordings").rglob("*.part"))


class UploadBurst:
    """Threads that create recordings and upload small files, until the gateway dies."""

    def __init__(self, gw: GatewayProcess, key: str, threads: int = 8) -> None:
        self.gw, self.key = gw, key
        self.sent: dict[int, tuple[dict[str, Any], bytes]] = {}
        self.created: dict[int, int] = {}  # recording id -> media id, for each 201
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            try:
                recording = self.gw.create_recording(self.key)
                data = os.urandom(150_000)
                with self._lock:
                    self.sent[recording["id"]] = (recording, data)
                media = self.gw.upload(self.key, recording["id"], data)
            except (OSError, http.client.HTTPException, AssertionError, ValueError):
                return  # the gateway is gone
            with self._lock:
                self.created[recording["id"]] = media


def _media_rows(data_dir: Path) -> set[int]:
    """Recording ids with a media row, read straight from the catalog file."""
    db = sqlite3.connect(f"file:{data_dir / 'catalog.sqlite3'}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT recording_id FROM media_files")}
    finally:
        db.close()


def catalog_is_intact(data_dir: Path) -> None:
    db = sqlite3.connect(f"file:{data_dir / 'catalog.sqlite3'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


def test_kill_9_during_uploads_local(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    gw = GatewayProcess(tmp_path / "data")
    key = gw.create_key()
    gw.start()
    try:
        kept = []
        for size in (1, 200_000, 3 * 1024 * 1024):
            recording = gw.create_recording(key)
            data = os.urandom(size)
            kept.append((recording["id"], gw.upload(key, recording["id"], data), sha256(data)))

        target = gw.create_recording(key)
        upload = start_big_upload(gw, key, target["id"], 12 * 1024 * 1024)
        wait_until(lambda: any(p.stat().st_size >= 8 * 1024 * 1024 for p in part_files(gw)),
                   "the big upload has written 8 MiB to its temporary file")
        burst = UploadBurst(gw, key)
        burst.start()
        wait_until(lambda: len(burst.created) >= 20, "20 small uploads answered 201")

        gw.send_signal(signal.SIGKILL)
        assert gw.wait(timeout=30) == -signal.SIGKILL
        burst.join()
        upload.close()
        assert part_files(gw), "the kill left no temporary file: the test proves nothing"
        catalog_is_intact(gw.data_dir)
        cut = [r for i, (r, _) in burst.sent.items() if i not in burst.created]
        record_property("uploads_201_before_kill", len(kept) + len(burst.created))
        record_property("uploads_cut_by_kill", len(cut) + 1)
        record_property("temporary_files_left", len(part_files(gw)))
        record_property("objects_without_catalog_row_left",
                        sum(final_path(gw, r).exists() for r in cut
                            if r["id"] not in _media_rows(gw.data_dir)))

        restarted = time.monotonic()
        gw.start()
        # The sweep runs in the background as the gateway starts.
        wait_until(lambda: not part_files(gw), "the temporary files are removed")
        wait_until(lambda: len(os.listdir(gw.data_dir / "uploads")) == 2,
                   "the killed process's upload notes are gone (only ours are left)")
        record_property("restart_to_clean_s", round(time.monotonic() - restarted, 3))

        # Everything that answered 201 before the kill reads back intact.
        for recording_id, media_id, digest in kept:
            assert gw.raw_sha256(key, recording_id, media_id) == digest
        for recording_id, media_id in burst.created.items():
            assert gw.raw_sha256(key, recording_id, media_id) == sha256(
                burst.sent[recording_id][1])
        # The big upload is nowhere: no media row, no object under its name.
        listed = gw.json("GET", f"/recordings/{target['id']}", key)
        assert listed["media_files"] == []
        assert not final_path(gw, target).exists()
        # Every upload cut by the kill is either complete and listed (its row made it
        # into the catalog before the kill), or gone without a trace.
        for recording_id, (recording, data) in burst.sent.items():
            media = gw.json("GET", f"/recordings/{recording_id}", key)["media_files"]
            if media:
                assert gw.raw_sha256(key, recording_id, media[0]["id"]) == sha256(data)
            else:
                wait_until(partial(absent, final_path(gw, recording)),
                           "the object that the catalog never knew of is deleted")
                # ...and the recording takes the upload again.
                gw.upload(key, recording_id, data)
        gw.upload(key, target["id"], b"after the crash")

        gw.send_signal(signal.SIGTERM)
        assert gw.wait(timeout=60) == 0
        catalog_is_intact(gw.data_dir)
    finally:
        gw.stop()


# A process that dies exactly where the window is: after the object got its final
# name, before the catalog row committed. It does what an upload does, with the
# gateway's own journal and storage, and SIGKILLs itself at that point.
_DIE_AFTER_PUBLISH = textwrap.dedent("""
    import asyncio, os, signal, sys
    from pathlib import Path
    from gateway.journal import Upload, UploadJournal
    from gateway.storage.local import LocalStorage

    data_dir, key, payload, publish = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    journal = UploadJournal.open(data_dir / "uploads", fsync=False)
    journal.begin(Upload("default", key))

    async def write() -> None:
        async def chunks():
            yield Path(payload).read_bytes()
        await LocalStorage("default", data_dir / "recordings", fsync=False).write(key, chunks())

    if publish == "yes":
        asyncio.run(write())
    os.kill(os.getpid(), signal.SIGKILL)
""")


def die_after_publish(gw: GatewayProcess, recording: dict[str, Any], data: bytes,
                      *, publish: bool = True) -> None:
    key = (f"recordings/{recording['user_id']}/{recording['id']}/"
           f"{recording['session_uid']}.mp3")
    payload = gw.data_dir.parent / f"payload-{recording['id']}"
    payload.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _DIE_AFTER_PUBLISH, str(gw.data_dir), key, str(payload),
         "yes" if publish else "no"], env=gw.env, capture_output=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_object_of_a_killed_upload_is_removed_unless_the_catalog_has_it(
    tmp_path: Path
) -> None:
    gw = GatewayProcess(tmp_path / "data")
    key = gw.create_key()
    gw.start()
    try:
        orphan = gw.create_recording(key)  # killed after publishing, before the commit
        committed = gw.create_recording(key)  # killed after the commit, before its note went
        data = os.urandom(100_000)
        committed_media = gw.upload(key, committed["id"], data)
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(timeout=60) == 0

        die_after_publish(gw, orphan, data)
        die_after_publish(gw, committed, data, publish=False)
        assert final_path(gw, orphan).read_bytes() == data
        notes = list((gw.data_dir / "uploads").glob("*/*.json"))
        assert len(notes) == 2

        gw.start()
        wait_until(lambda: not final_path(gw, orphan).exists(),
                   "the object nobody knew of is deleted")
        wait_until(lambda: not any(n.exists() for n in notes), "the notes are forgotten")
        assert "its upload was cut short by a stopped process" in gw.log()
        assert gw.json("GET", f"/recordings/{orphan['id']}", key)["media_files"] == []
        gw.upload(key, orphan["id"], data)  # the format is free again (it was 409)
        # The complete upload stays.
        assert gw.raw_sha256(key, committed["id"], committed_media) == sha256(data)
    finally:
        gw.stop()


def test_a_live_processs_upload_is_left_alone(tmp_path: Path) -> None:
    """A worker that starts while another uploads must not take that upload for dead."""
    gw = GatewayProcess(tmp_path / "data")
    key = gw.create_key()
    gw.start()
    other = GatewayProcess(tmp_path / "data", name="other")  # same data dir, as a worker
    try:
        target = gw.create_recording(key)
        declared = 8 * 1024 * 1024
        upload = start_big_upload(gw, key, target["id"], 6 * 1024 * 1024, declared=declared)
        wait_until(lambda: any(p.stat().st_size >= 4 * 1024 * 1024 for p in part_files(gw)),
                   "the upload has written 4 MiB")
        other.start()
        wait_until(lambda: "upload recovery:" in other.log(), "the other's sweep ran")
        assert part_files(gw), "a live upload's temporary file was removed"
        upload.sendall(os.urandom(declared - 6 * 1024 * 1024))
        status, _, body = read_response(upload)
        upload.close()
        assert status == 201, body[:300]
        assert json.loads(body)["file_size_bytes"] == declared
        assert final_path(gw, target).stat().st_size == declared
    finally:
        other.stop()
        gw.stop()


@pytest.fixture
def s3_env(moto_endpoint: str, s3_bucket: str, tmp_path: Path) -> dict[str, str]:
    return {"STORAGE_BACKEND": "s3", "S3_ENDPOINT": moto_endpoint, "S3_BUCKET": s3_bucket,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "GATEWAY_S3_PART_SIZE": "5M"}


def test_kill_9_during_a_multipart_upload_s3(
    tmp_path: Path, s3_env: dict[str, str], moto_endpoint: str, s3_bucket: str,
    record_property: Callable[[str, object], None],
) -> None:
    s3 = s3_client(moto_endpoint)
    gw = GatewayProcess(tmp_path / "data", env=s3_env)
    key = gw.create_key()
    gw.start()
    try:
        kept = []
        for size in (1, 6 * 1024 * 1024):  # a single PUT, and a multipart upload
            recording = gw.create_recording(key)
            data = os.urandom(size)
            kept.append((recording["id"], gw.upload(key, recording["id"], data), sha256(data)))

        target = gw.create_recording(key)
        upload = start_big_upload(gw, key, target["id"], 12 * 1024 * 1024)

        def parts_uploaded() -> bool:
            for pending in s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []):
                parts = s3.list_parts(Bucket=s3_bucket, Key=pending["Key"],
                                      UploadId=pending["UploadId"]).get("Parts", [])
                if parts:
                    return True
            return False

        wait_until(parts_uploaded, "the big upload has sent a part to S3")
        gw.send_signal(signal.SIGKILL)
        assert gw.wait(timeout=30) == -signal.SIGKILL
        upload.close()
        target_key = (f"recordings/{target['user_id']}/{target['id']}/"
                      f"{target['session_uid']}.mp3")
        assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]] == [
            target_key]

        restarted = time.monotonic()
        gw.start()
        wait_until(lambda: not s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"),
                   "the unfinished multipart upload is aborted")
        record_property("restart_to_clean_s", round(time.monotonic() - restarted, 3))
        for recording_id, media_id, digest in kept:
            assert gw.raw_sha256(key, recording_id, media_id) == digest
        assert gw.json("GET", f"/recordings/{target['id']}", key)["media_files"] == []
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
        assert target_key not in listed and len(listed) == len(kept)
        gw.upload(key, target["id"], b"after the crash")
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(timeout=60) == 0
        catalog_is_intact(gw.data_dir)
    finally:
        gw.stop()


# The sweep itself, in process against the real backends.


@pytest.fixture
def no_age_sweep(settings: Settings) -> Settings:
    """moto dates every multipart upload 2010-11-10: an age this long sweeps none of them."""
    return settings.with_changes(stale_upload_age=1e10)


@local_only
async def test_local_sweep_removes_only_temporary_files_nobody_holds(
    aiohttp_client: AiohttpClient, no_age_sweep: Settings
) -> None:
    gw = await start_gateway(aiohttp_client, no_age_sweep)
    storage = gw.app[STORAGES]["default"].inner  # type: ignore[attr-defined]  # measured
    assert isinstance(storage, PartialUploads)
    directory = no_age_sweep.local_storage_dir / "recordings" / "1" / "2"
    directory.mkdir(parents=True)
    abandoned = directory / ".s.mp3.0123456789abcdef.part"
    live = directory / ".s.mp3.fedcba9876543210.part"
    other_key = directory / ".t.mp3.0123456789abcdef.part"
    not_ours = directory / ".s.mp3.backup"
    for path in (abandoned, live, other_key, not_ours):
        path.write_bytes(b"partial")
    with live.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the upload writing it does while it lives
        removed = await storage.remove_partial_uploads(keys=["recordings/1/2/s.mp3"],
                                                       started_before=time.time())
    assert removed == 1
    assert not abandoned.exists()
    assert live.exists() and other_key.exists() and not_ours.exists()


@s3_only
async def test_s3_sweep_aborts_abandoned_and_stale_recording_uploads_only(
    aiohttp_client: AiohttpClient, no_age_sweep: Settings, moto_endpoint: str
) -> None:
    gw = await start_gateway(aiohttp_client, no_age_sweep)
    storage = gw.app[STORAGES]["default"].inner  # type: ignore[attr-defined]  # measured
    assert isinstance(storage, PartialUploads)
    s3, bucket = s3_client(moto_endpoint), no_age_sweep.s3_bucket
    abandoned, other = "recordings/1/2/abandoned.mp3", "recordings/1/3/other.mp3"
    foreign = ("recordings/notes.txt", "exports/1/2/report.mp3")  # not recording keys
    for key in (abandoned, other, *foreign):
        s3.create_multipart_upload(Bucket=bucket, Key=key)

    def pending() -> set[str]:
        return {u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}

    # An abandoned upload goes whatever its age (moto says 2010; this asks for 2001).
    assert await storage.remove_partial_uploads(keys=[abandoned],
                                                started_before=1_000_000_000) == 1
    assert pending() == {other, *foreign}
    # Age alone takes the other recording upload, never a key of another shape.
    assert await storage.remove_partial_uploads(keys=[], started_before=time.time()) == 1
    assert pending() == set(foreign)
