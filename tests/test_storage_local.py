"""LocalStorage on a real directory: key checks, symlink escapes, atomic writes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import Conflict
from gateway.storage import LocalStorage, ObjectNotFound

KEY = "recordings/1/2/session.wav"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage("default", tmp_path / "root", fsync=True)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_write_then_open(storage: LocalStorage, tmp_path: Path) -> None:
    assert await storage.write(KEY, chunks(b"abc", b"def")) == 6
    assert (tmp_path / "root" / KEY).read_bytes() == b"abcdef"
    obj = await storage.open(KEY)
    try:
        assert obj.info.size == 6
        assert obj.info.etag.startswith('"') and obj.info.etag.endswith('"')
    finally:
        await obj.close()


@pytest.mark.parametrize("key", [
    "recordings/1/2/../../../etc/passwd",
    "/etc/passwd",
    "recordings/1/2/session.wav/..",
    "recordings/1/2/a b.wav",
    "recordings/x/2/s.wav",
    "recordings/1/2/s.WAV",
    "recordings/1/2/.hidden.wav.part",
    "recordings/1/2/s.wav\x00",
    "../recordings/1/2/s.wav",
])
async def test_keys_of_any_other_shape_are_refused(storage: LocalStorage, key: str) -> None:
    with pytest.raises(ObjectNotFound):
        await storage.open(key)
    with pytest.raises(ObjectNotFound):
        await storage.write(key, chunks(b"x"))
    with pytest.raises(ObjectNotFound):
        await storage.delete(key)


async def test_symlinked_directory_cannot_lead_outside(
    storage: LocalStorage, tmp_path: Path
) -> None:
    outside = tmp_path / "outside" / "2"
    outside.mkdir(parents=True)
    (outside / "session.wav").write_bytes(b"secret")
    (tmp_path / "root" / "recordings" / "1").mkdir(parents=True)
    (tmp_path / "root" / "recordings" / "1" / "2").symlink_to(outside)
    with pytest.raises(ObjectNotFound):
        await storage.open(KEY)
    with pytest.raises(ObjectNotFound):
        await storage.write("recordings/1/2/other.wav", chunks(b"x"))
    assert sorted(p.name for p in outside.iterdir()) == ["session.wav"]


async def test_symlinked_file_is_not_followed(storage: LocalStorage, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"secret")
    target = tmp_path / "root" / KEY
    target.parent.mkdir(parents=True)
    target.symlink_to(tmp_path / "secret")
    with pytest.raises(ObjectNotFound):
        await storage.open(KEY)


async def test_failed_source_leaves_nothing(storage: LocalStorage, tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"a" * 100_000
        raise RuntimeError("the client went away")

    with pytest.raises(RuntimeError):
        await storage.write(KEY, broken())
    assert [p for p in (tmp_path / "root").rglob("*") if p.is_file()] == []


async def test_existing_object_is_never_replaced(storage: LocalStorage, tmp_path: Path) -> None:
    await storage.write(KEY, chunks(b"first"))
    with pytest.raises(Conflict):
        await storage.write(KEY, chunks(b"second"))
    assert (tmp_path / "root" / KEY).read_bytes() == b"first"
    assert [p.name for p in (tmp_path / "root" / KEY).parent.iterdir()] == ["session.wav"]


async def test_delete_is_idempotent(storage: LocalStorage) -> None:
    await storage.write(KEY, chunks(b"x"))
    await storage.delete(KEY)
    await storage.delete(KEY)
    with pytest.raises(ObjectNotFound):
        await storage.open(KEY)


async def test_presign_is_not_offered(storage: LocalStorage) -> None:
    url = await storage.presigned_url(KEY, filename="a.wav", content_type="audio/wav",
                                      expires_in=60)
    assert url is None


async def test_an_open_cancelled_at_any_point_leaves_no_descriptor(
        storage: LocalStorage, tmp_path: Path) -> None:
    """A request cancelled while its file is being opened: the file is closed, not lost."""
    await storage.write(KEY, chunks(b"abc"))
    path = str((tmp_path / "root" / KEY).resolve())

    def open_on_the_file() -> int:  # only this file: other tests' servers share the process
        return sum(_target(fd) == path for fd in os.listdir("/proc/self/fd"))

    outcomes = {"cancelled": 0, "opened": 0}
    for turn in range(300):
        task = asyncio.create_task(storage.open(KEY))
        for _ in range(turn % 5):  # cancelled before, while and after the thread opens
            await asyncio.sleep(0)
        if turn % 7 == 0:
            await asyncio.sleep(0.001)
        task.cancel()
        try:
            obj = await task
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
        else:
            outcomes["opened"] += 1
            await obj.close()
    # Closing waits for the opens still under way; the loop closes each file they hand back.
    await storage.close()
    assert open_on_the_file() == 0
    assert outcomes["cancelled"] > 0


def _target(fd: str) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # closed meanwhile (the listing's own descriptor, another thread's)
        return None
