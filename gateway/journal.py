"""A journal of the uploads in flight, so that a restart can undo what a killed process began.

Between the moment an upload's object gets its final name and the moment its
catalog row commits, `kill -9` (the OOM killer, a power cut) leaves an object that
nobody knows of: invisible, never deleted, and in the way of the next upload of
that format (409). So each worker notes every upload it begins in a small file
under `<data dir>/uploads/<worker>/`, and removes the note once the catalog row is
committed or the upload has failed and cleaned up after itself.

A worker holds a lock on `<data dir>/uploads/<worker>.lock` for as long as it
lives; the kernel drops it when the process dies, however it dies. A starting
worker therefore knows exactly which notes belong to dead processes: those are the
uploads to undo (see Ingest.recover). No age, no guess: a slow upload of a live
worker is never mistaken for an abandoned one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_WORKER_RE = re.compile(r"[0-9a-f]{32}")
_NOTE_RE = re.compile(r"[0-9a-f]{32}\.json")
LOCK_SUFFIX = ".lock"


@dataclass(frozen=True, slots=True)
class Upload:
    """Where an upload writes: a storage and a key in it."""

    storage: str
    key: str


@dataclass(frozen=True, slots=True)
class Orphan:
    """An upload noted by a worker that is gone."""

    upload: Upload
    note: Path


class UploadJournal:
    """This worker's notes of its uploads in flight, and a view of the other workers'."""

    def __init__(self, root: Path, worker: str, lock_fd: int, *, fsync: bool) -> None:
        self.root = root
        self.worker = worker
        self._lock_fd = lock_fd
        self._notes = root / worker
        self._fsync = fsync

    @classmethod
    def open(cls, root: Path, *, fsync: bool) -> UploadJournal:
        """Join the journal as a new worker: take its lock, then make its notes directory.

        Blocking (file system calls): run it in an executor.
        """
        root.mkdir(parents=True, exist_ok=True)
        worker = secrets.token_hex(16)
        # Locked under a temporary name, then renamed: no other worker ever sees
        # the lock file of a live worker unlocked.
        tmp = root / f".{worker}{LOCK_SUFFIX}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, root / f"{worker}{LOCK_SUFFIX}")
            (root / worker).mkdir()
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return cls(root, worker, fd, fsync=fsync)

    def begin(self, upload: Upload) -> Path:
        """Note an upload before its first byte is written; the note's path. Blocking."""
        note = self._notes / f"{secrets.token_hex(16)}.json"
        with note.open("x") as handle:
            json.dump({"storage": upload.storage, "key": upload.key}, handle)
            if self._fsync:  # as durable as the object it announces will be
                handle.flush()
                os.fsync(handle.fileno())
        if self._fsync:
            _fsync_dir(self._notes)
        return note

    def end(self, note: Path) -> None:
        """The upload is in the catalog, or gone again: forget it. Blocking."""
        note.unlink(missing_ok=True)

    def close(self) -> None:
        """Leave the journal (a clean stop): nothing of ours is left to undo."""
        shutil.rmtree(self._notes, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.root / f"{self.worker}{LOCK_SUFFIX}").unlink()
        os.close(self._lock_fd)

    def orphans(self) -> tuple[list[Orphan], set[Upload]]:
        """Uploads noted by dead workers, and those that live workers (us too) have in flight.

        Blocking. Dead workers with nothing left to undo are tidied away on the way.
        """
        orphans: list[Orphan] = []
        live: set[Upload] = set()
        # Lock files and notes directories; temporary lock names start with a dot.
        workers = {entry.removesuffix(LOCK_SUFFIX) for entry in os.listdir(self.root)}
        for worker in sorted(w for w in workers if _WORKER_RE.fullmatch(w)):
            if worker == self.worker or self._alive(worker):
                # A note being written reads as broken: its upload has not begun.
                live.update(upload for upload, _ in self._read_notes(worker, dead=False))
                continue
            notes = self._read_notes(worker, dead=True)
            if notes:
                orphans += [Orphan(upload, path) for upload, path in notes]
            else:
                self._remove_worker(worker)
        return orphans, live

    def forget(self, orphan: Orphan) -> None:
        """An orphan is undone: drop its note, and its dead worker once it has none left."""
        orphan.note.unlink(missing_ok=True)
        worker = orphan.note.parent.name
        if not any(orphan.note.parent.glob("*.json")):
            self._remove_worker(worker)

    def _alive(self, worker: str) -> bool:
        try:
            fd = os.open(self.root / f"{worker}{LOCK_SUFFIX}", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False  # its directory outlived its lock: a tidy-up was cut short
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: alive; or no flock on this file system: assume alive
            return True
        finally:
            os.close(fd)
        return False

    def _remove_worker(self, worker: str) -> None:
        # Notes first, lock file last: a half-done tidy-up is finished by the next one.
        shutil.rmtree(self.root / worker, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.root / f"{worker}{LOCK_SUFFIX}").unlink()

    def _read_notes(self, worker: str, *, dead: bool) -> list[tuple[Upload, Path]]:
        notes = []
        directory = self.root / worker
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        for name in names:
            if not _NOTE_RE.fullmatch(name):
                continue
            path = directory / name
            try:
                data = json.loads(path.read_text())
                notes.append((Upload(str(data["storage"]), str(data["key"])), path))
            except FileNotFoundError:
                continue  # ended meanwhile
            except (OSError, ValueError, KeyError, TypeError):
                if dead:
                    # Cut short while being written: its upload never wrote a byte.
                    log.warning("removing the unfinished upload note %s", path)
                    path.unlink(missing_ok=True)
        return notes


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
