"""Recordings on the local filesystem: atomic writes, sendfile reads."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import io
import logging
import os
import re
import secrets
import stat
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import aiofiles
from aiohttp import web

from gateway.errors import Conflict, InsufficientStorage, StorageUnavailable
from gateway.storage.base import CheckReport, ObjectInfo, ObjectNotFound, check_key

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_PROC_FD = os.path.isdir("/proc/self/fd")
_CLOSE_WAIT_S = 5.0  # at most, for opens under way when the storage closes
PART_SUFFIX = ".part"
# The temporary names write() gives: .<session_uid>.<ext>.<16 hex digits>.part
_PART_RE = re.compile(r"\.[A-Za-z0-9_-]{1,128}\.[a-z0-9]{1,8}\.[0-9a-f]{16}\.part")
COPY_CHUNK = 256 * 1024
_T = TypeVar("_T")


class LocalRange:
    """A byte range of an open file, sent with sendfile(2) where the transport allows it."""

    __slots__ = ("_file", "_length", "_start", "sent")

    def __init__(self, file: io.FileIO, start: int, length: int) -> None:
        self._file = file
        self._start = start
        self._length = length
        self.sent = 0

    async def send(self, request: web.BaseRequest, response: web.StreamResponse) -> int:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        writer = await response.prepare(request)  # prepared already: this gives its writer
        if writer is not None:
            writer.send_headers()  # if they still wait for the body's first bytes
        # Headers and multipart part heads already sit in the transport's buffer:
        # loop.sendfile waits for it to empty before the file's bytes follow, and
        # copies through user space by itself where the transport cannot (TLS).
        loop = asyncio.get_running_loop()
        # loop.sendfile leaves the file position after the last byte sent, also when it
        # fails: so a cut stream still counts what went out.
        self._file.seek(self._start)
        try:
            self.sent = await loop.sendfile(transport, self._file, self._start, self._length)
            return self.sent
        except NotImplementedError:  # a loop without sendfile at all (uvloop)
            pass
        except BaseException:
            self.sent = max(0, min(self._length, self._file.tell() - self._start))
            raise
        async with contextlib.aclosing(self.chunks()) as chunks:
            async for chunk in chunks:
                await response.write(chunk)
                self.sent += len(chunk)
        return 0

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        loop = asyncio.get_running_loop()
        fd = self._file.fileno()
        position, end = self._start, self._start + self._length
        while position < end:
            chunk = await loop.run_in_executor(
                None, os.pread, fd, min(COPY_CHUNK, end - position), position)
            if not chunk:
                raise StorageUnavailable("The file ended before its recorded size")
            yield chunk
            position += len(chunk)

    async def close(self) -> None:
        return None  # the file belongs to its LocalFile


class LocalFile:
    """An open local file; ranges of it share the one descriptor."""

    __slots__ = ("_file", "info")

    def __init__(self, file: io.FileIO, info: ObjectInfo) -> None:
        self._file = file
        self.info = info

    async def read(self, start: int, length: int) -> LocalRange:
        return LocalRange(self._file, start, length)

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        # Closing a read-only descriptor of a regular file does not block.
        self._file.close()


class LocalStorage:
    """Objects as files under one root directory, keys mapped to relative paths."""

    backend = "local"

    def __init__(self, name: str, root: Path, *, fsync: bool) -> None:
        self.name = name
        root.mkdir(parents=True, exist_ok=True)  # once, at startup
        self._root = root.resolve()
        self._root_prefix = f"{self._root}/"
        self._fsync = fsync
        # Threads of its own for opening files (as many as asyncio's default pool):
        # a thread hands its file straight to the waiting request, see open().
        self._openers = ThreadPoolExecutor(min(32, (os.cpu_count() or 1) + 4),
                                           thread_name_prefix=f"open-{name}")

    def _path(self, key: str) -> Path:
        return self._root / check_key(key)

    def _checked_dir(self, path: Path) -> None:
        # The key shape forbids "..", but a symlinked directory inside the tree
        # could still lead out of it: resolve and compare.
        if not path.parent.resolve().is_relative_to(self._root):
            raise ObjectNotFound()

    def _real_path(self, fd: int, path: str) -> str:
        # Where the descriptor really points, symlinks in directories resolved:
        # one readlink on Linux instead of an lstat per path component.
        if _PROC_FD:
            return os.readlink(f"/proc/self/fd/{fd}")
        return os.path.realpath(path)

    def _open_sync(self, path: str) -> LocalFile:
        try:
            fd = os.open(path, _OPEN_FLAGS)  # O_NOFOLLOW: the file itself is no symlink
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound() from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ObjectNotFound() from None
            raise StorageUnavailable(f"Local storage cannot open the file ({exc.strerror})")\
                from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not self._real_path(fd, path).startswith(
                self._root_prefix
            ):
                raise ObjectNotFound()
        except BaseException:
            os.close(fd)
            raise
        # Files are written once and renamed into place, so mtime and size are a
        # strong validator (RFC 9110 §8.8.1).
        info = ObjectInfo(st.st_size, f'"{st.st_mtime_ns:x}-{st.st_size:x}"', int(st.st_mtime))
        return LocalFile(io.FileIO(fd, "rb", closefd=True), info)

    async def open(self, key: str) -> LocalFile:
        path = self._root_prefix + check_key(key)
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[LocalFile] = loop.create_future()
        # The thread hands its result to `opened` itself: if the request was cancelled
        # meanwhile, the file it opened is closed, not dropped. (run_in_executor under
        # asyncio.shield would do the same with two more wake-ups of the loop: a tenth of
        # the CPU time of a 64 KiB range request.)
        self._openers.submit(self._open_into, loop, opened, path)
        try:
            return await opened
        except asyncio.CancelledError:
            # Cancelled after the file arrived but before this task ran again.
            if opened.done() and not opened.cancelled() and opened.exception() is None:
                opened.result().close_now()
            raise

    def _open_into(self, loop: asyncio.AbstractEventLoop, opened: asyncio.Future[LocalFile],
                   path: str) -> None:
        if opened.cancelled():  # a stale read at worst: delivery checks again
            return
        try:
            file = self._open_sync(path)
        except BaseException as exc:
            loop.call_soon_threadsafe(_fail_open, opened, exc)
        else:
            loop.call_soon_threadsafe(_deliver_open, opened, file)

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        path = self._path(key)
        loop = asyncio.get_running_loop()
        await _io(loop.run_in_executor(None, self._make_dirs, path.parent))
        # A hidden temporary name in the same directory: rename is atomic there,
        # and readers only ever open final names.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{PART_SUFFIX}")
        size = 0
        owner: io.FileIO | None = None
        try:
            # Locked from creation to publication: a starting gateway removes only the
            # temporary files that nobody holds (see remove_partial_uploads).
            owner = await _io(loop.run_in_executor(None, _create_locked, tmp))
            handle = await _io(aiofiles.open(owner.fileno(), "wb", closefd=False))
            try:
                # Errors of the chunk source (a client that went away, a size
                # limit) pass through untouched; only file errors are mapped.
                async for chunk in chunks:
                    await _io(handle.write(chunk))
                    size += len(chunk)
                await _io(handle.flush())
                if self._fsync:
                    await _io(loop.run_in_executor(None, os.fsync, handle.fileno()))
            finally:
                await _io(handle.close())
            await _io(loop.run_in_executor(None, self._publish, tmp, path))
        except BaseException:
            await _discard(tmp)
            raise
        finally:
            if owner is not None:
                await _release(owner)
        return size

    def _make_dirs(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._checked_dir(directory / "x")

    def _publish(self, tmp: Path, path: Path) -> None:
        # link() rather than rename(): it never replaces an object that exists.
        os.link(tmp, path)
        os.unlink(tmp)
        if self._fsync:
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    async def remove_partial_uploads(self, *, keys: Collection[str],
                                     started_before: float) -> int:
        """Remove the temporary files of uploads to `keys` that no process writes; how many.

        Needs no age (`started_before` is for stores without locks): a live upload
        holds a lock on its file, which the kernel drops when the process dies.
        """
        return await asyncio.get_running_loop().run_in_executor(
            None, self._remove_partial, [self._path(key) for key in keys])

    def _remove_partial(self, paths: list[Path]) -> int:
        removed = 0
        for path in paths:
            try:
                names = os.listdir(path.parent)
            except (FileNotFoundError, NotADirectoryError):
                continue
            prefix = f".{path.name}."
            for name in names:
                if name.startswith(prefix) and _PART_RE.fullmatch(name) and \
                        _remove_if_abandoned(str(path.parent / name)):
                    removed += 1
        return removed

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.get_running_loop().run_in_executor(None, _unlink_quietly, path)
        except OSError as exc:  # read-only filesystem, permissions, a directory in its place
            raise StorageUnavailable(
                f"Local storage could not delete the file ({exc.strerror})") from None

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int
    ) -> str | None:
        return None  # a filesystem cannot sign URLs; the gateway signs its raw path instead

    async def ping(self) -> None:
        ok = await asyncio.get_running_loop().run_in_executor(
            None, os.access, self._root, os.W_OK | os.X_OK
        )
        if not ok:
            raise StorageUnavailable(f"Local storage {self.name!r} is not writable")

    async def check(self) -> CheckReport:
        return await asyncio.get_running_loop().run_in_executor(None, self._check_sync)

    def _check_sync(self) -> CheckReport:
        name = f"gateway-check-{uuid.uuid4()}.md"
        path = self._root / name
        body = f"# Storage check\n\nWritten by the recordings gateway to test {self.name!r}.\n"
        step = "write"
        try:
            path.write_text(body)
            step = "read"
            if path.read_text() != body:
                raise StorageUnavailable(f"Storage {self.name!r} returned other bytes")
            step = "delete"
            path.unlink()
        except OSError as exc:
            _unlink_quietly(path)
            raise StorageUnavailable(
                f"Storage {self.name!r} check failed at {step}: {exc.strerror}") from None
        return CheckReport(name, ("write", "read", "delete"))

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "type": self.backend}

    async def close(self) -> None:
        # Wait for the opens under way: each hands its file to the loop, which closes
        # it, and those hand-overs run before this coroutine resumes. An open stuck on
        # a dead mount is left behind after a while rather than blocking shutdown.
        waiting = asyncio.create_task(asyncio.to_thread(self._openers.shutdown, True))
        await asyncio.wait([waiting], timeout=_CLOSE_WAIT_S)


def _create_locked(path: Path) -> io.FileIO:
    """Create a temporary file exclusively and lock it for as long as it is open."""
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o666)
        file = io.FileIO(fd, "wb", closefd=True)  # closed by the GC if a cancel drops it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a sweep looks at the file
        except OSError as exc:
            # A filesystem without flock (some network ones): the upload goes on, and
            # no sweep can lock the file either, so none removes it.
            log.debug("cannot lock %s (%s); it will not be swept", path.name, exc.strerror)
            return file
        if os.fstat(fd).st_nlink:
            return file
        # A sweep took the file between its creation and our lock: make it again.
        file.close()


def _remove_if_abandoned(path: str) -> bool:
    """Unlink a temporary file if no live upload holds it; True if it was removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False  # gone meanwhile (published, discarded, another sweep), or a symlink
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by a live upload; or no flock here, so nobody can tell
            return False
        # A writer that created the file but has not locked it yet finds it unlinked
        # once it has, and makes it again (_create_locked).
        os.unlink(path)
        log.info("removed %s, left by an upload that did not finish", path)
        return True
    finally:
        os.close(fd)


async def _release(owner: io.FileIO) -> None:
    # Shielded like _discard: the descriptor and its lock go whatever happens.
    await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, owner.close))


def _deliver_open(opened: asyncio.Future[LocalFile], file: LocalFile) -> None:
    if opened.cancelled():
        file.close_now()  # nobody waits for it any more
    else:
        opened.set_result(file)


def _fail_open(opened: asyncio.Future[LocalFile], exc: BaseException) -> None:
    if not opened.cancelled():
        opened.set_exception(exc)


async def _io(operation: Awaitable[_T]) -> _T:
    """Await a file operation, turning OS errors into the gateway's own."""
    try:
        return await operation
    except FileExistsError:
        raise Conflict("A media file of this format already exists for the recording") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("Local storage is full; the upload was discarded") from None
        log.error("local storage I/O failed: %s", exc)
        raise StorageUnavailable("Local storage could not write the file") from None


async def _discard(tmp: Path) -> None:
    # Shielded: a cancelled upload must still remove its temporary file.
    try:
        await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, _unlink_quietly, tmp))
    except asyncio.CancelledError:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: Path) -> None:
    path.unlink(missing_ok=True)
