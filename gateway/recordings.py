"""Recording operations that span the catalog and storage; no HTTP here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from gateway.audit import AuditLock
from gateway.cache import TtlCache
from gateway.catalog import (
    Catalog,
    DeletesWithMedia,
    NewMediaFile,
    NewRecording,
    RecordingCatalog,
)
from gateway.errors import Conflict, GatewayError, NotFound, PayloadTooLarge, Unprocessable
from gateway.journal import Orphan, Upload, UploadJournal
from gateway.media import WAV_HEADER_PROBE, parse_wav_header
from gateway.models import UNSCOPED, MediaFile, Recording, RecordingStatus, Scope
from gateway.peaks import peaks_key
from gateway.storage import StorageRegistry
from gateway.storage.base import KEY_RE, ObjectNotFound
from gateway.storage.sweep import sweep_partial_uploads

log = logging.getLogger(__name__)
_T = TypeVar("_T")

UPLOAD_CHUNK = 1024 * 1024
"""Upload bytes are gathered into writes of this size (bounded memory per upload)."""


class UploadBody:
    """An upload's chunks, regrouped into larger writes, counted against a limit.

    Keeps the first bytes so the header of the file can be read afterwards.
    """

    def __init__(self, source: AsyncIterable[bytes], limit: int) -> None:
        self._source = source
        self._limit = limit
        self.size = 0
        self.head = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pending = bytearray()
        async for chunk in self._source:
            self.size += len(chunk)
            if self.size > self._limit:
                raise PayloadTooLarge(
                    f"Upload exceeds the limit of {self._limit} bytes; nothing was kept"
                )
            if len(self.head) < WAV_HEADER_PROBE:
                self.head += chunk[: WAV_HEADER_PROBE - len(self.head)]
            pending += chunk
            if len(pending) >= UPLOAD_CHUNK:
                yield bytes(pending)
                pending.clear()
        if pending:
            yield bytes(pending)


@dataclass(frozen=True, slots=True)
class DeleteReport:
    recording_id: int
    storage_errors: tuple[dict[str, Any], ...]


class ExpireOutcome(Enum):
    """What retention did with one expired recording."""

    DELETED = "deleted"
    HELD = "held"  # put on legal hold since it was found: kept
    GONE = "gone"  # already deleted (by another worker, or through the API)
    FAILED = "failed"  # some bytes could not be deleted: the metadata stays, to retry


_CacheKey = tuple[int, tuple[str, int | None, str]]


class Recordings:
    """Reading and deleting recordings: the catalog and the storages kept consistent."""

    def __init__(self, catalog: RecordingCatalog, storages: StorageRegistry,
                 cache_ttl: float, lock: AuditLock | None = None) -> None:
        self.catalog = catalog
        self.storages = storages
        self.lock = lock or AuditLock()
        # Seeking sends many range requests for one file: remember the metadata briefly
        # (per caller where the catalog answers per caller), one lookup for a crowd.
        self._cache: TtlCache[_CacheKey, Recording] = TtlCache(cache_ttl)

    def _key(self, recording_id: int, scope: Scope) -> tuple[_CacheKey, Scope]:
        lookup = self.catalog.lookup_scope(scope)
        return (recording_id, lookup.cache_key), lookup

    def caches(self) -> dict[str, TtlCache[_CacheKey, Recording]]:
        """For metrics: the cache of recording metadata."""
        return {"recordings": self._cache}

    def invalidate(self, recording_id: int, scope: Scope) -> None:
        self._cache.invalidate(self._key(recording_id, scope)[0])

    async def get(self, recording_id: int, scope: Scope) -> Recording:
        recording = await self.catalog.get_recording(recording_id, scope)
        if recording is None:
            raise NotFound("Recording not found")
        return recording

    async def find_media(
        self, recording_id: int, media_id: int, scope: Scope
    ) -> tuple[Recording, MediaFile]:
        """The recording and one of its media files, from the cache when fresh."""
        key, lookup = self._key(recording_id, scope)
        recording = await self._cache.get(
            key, lambda: self.catalog.get_recording(recording_id, lookup))
        if recording is not None and recording.media(media_id) is None:
            # Perhaps uploaded since we cached it (by another worker): look again.
            self._cache.invalidate(key)
            recording = await self._cache.get(
                key, lambda: self.catalog.get_recording(recording_id, lookup))
        media = None if recording is None else recording.media(media_id)
        if recording is None or media is None or not scope.allows(recording):
            raise NotFound("Media file not found")
        return recording, media

    async def delete(self, recording: Recording, scope: Scope) -> DeleteReport:
        """Remove the stored objects (best effort, failures reported), then the metadata.

        Refused (409) by the audit lock: the tenant's delete policy, a legal hold. When
        the catalog is an upstream that decides deletes itself, its DELETE comes first:
        a refusal must leave every byte in place. An object that then fails to go is
        reported and logged, as in the other order.
        """
        self.lock.check_delete(recording)
        if self.catalog.decides_deletes:
            if not await self.catalog.delete_recording(recording.id, scope):
                self.invalidate(recording.id, scope)
                raise NotFound("Recording not found")
            self.invalidate(recording.id, scope)
            errors = await self._delete_objects(recording)
        else:
            errors = await self._delete_objects(recording)
            errors += (await self._delete_metadata(recording, scope))[1]
            self.invalidate(recording.id, scope)
        return DeleteReport(recording.id, tuple(errors))

    async def expire(self, recording_id: int) -> tuple[ExpireOutcome, Recording | None]:
        """Retention's delete: past any delete policy, never past a legal hold.

        Read again first, so that a hold set or a file uploaded since the sweep found it
        counts. Unlike `delete`, the metadata stays when bytes could not be deleted: an
        object nobody can find any more would outlive the retention unnoticed.
        """
        recording = await self.catalog.get_recording(recording_id, UNSCOPED)
        if recording is None:
            return ExpireOutcome.GONE, None
        if recording.legal_hold:
            return ExpireOutcome.HELD, recording
        if await self._delete_objects(recording):
            return ExpireOutcome.FAILED, recording
        removed, _ = await self._delete_metadata(recording, UNSCOPED)
        self.invalidate(recording.id, UNSCOPED)
        return (ExpireOutcome.DELETED if removed else ExpireOutcome.GONE), recording

    async def _delete_metadata(
        self, recording: Recording, scope: Scope
    ) -> tuple[bool, list[dict[str, Any]]]:
        """Delete the catalog's rows; then the objects of media files uploaded since
        `recording` was read (by another request, worker or replica), which would
        otherwise stay in storage with nothing pointing at them. Whether the rows were
        there, and the objects that failed to go."""
        if not isinstance(self.catalog, DeletesWithMedia):
            return await self.catalog.delete_recording(recording.id, scope), []
        media = await self.catalog.delete_recording_media(recording.id, scope)
        if media is None:
            return False, []
        known = {m.id for m in recording.media_files}
        late = tuple(m for m in media if m.id not in known)
        if not late:
            return True, []
        return True, await self._delete_objects(replace(recording, media_files=late))

    async def _delete_objects(self, recording: Recording) -> list[dict[str, Any]]:
        """Delete every stored object of a recording; a missing one counts as deleted.

        Each media file goes first, then its cached peaks: a peaks scan that raced
        with this delete looks for the file after storing peaks, and takes them back.
        """
        errors: list[dict[str, Any]] = []
        for media in recording.media_files:
            try:
                storage = self.storages.for_reading_media(media.storage_name,
                                                          media.storage_backend)
                await storage.delete(media.storage_key)
                await storage.delete(peaks_key(media.storage_key))
            except GatewayError as exc:
                # Where it is, for whoever cleans up: the metadata may be gone already.
                log.error("could not delete media file %s of recording %s (storage %s, "
                          "object %s): %s", media.id, recording.id, media.storage_name,
                          media.storage_key, exc.detail)
                errors.append({"media_file_id": media.id, "detail": exc.detail})
        return errors


class Ingest:
    """The bot side of the embedded catalog: create, upload, complete."""

    def __init__(self, catalog: Catalog, recordings: Recordings,
                 journal: UploadJournal | None = None) -> None:
        self.catalog = catalog
        self._recordings = recordings
        self._journal = journal

    async def create(self, new: NewRecording) -> Recording:
        return await self.catalog.create_recording(new)

    async def add_media(
        self, recording: Recording, media_type: str, media_format: str,
        body: AsyncIterable[bytes], *, limit: int,
    ) -> MediaFile:
        """Stream an upload into storage, then record it; nothing partial is ever kept."""
        if recording.status is not RecordingStatus.IN_PROGRESS:
            raise Conflict(f"Recording is {recording.status}; it takes no more media")
        if any(m.format == media_format for m in recording.media_files):
            raise Conflict(f"Recording already has a {media_format} media file")
        storage = self._recordings.storages.for_reading(recording.storage_name)
        key = recording.key_for(media_format)
        upload = UploadBody(body, limit)
        # Noted until the catalog row commits: a process killed in between leaves an
        # object nobody knows of, which the next start removes (see recover).
        note = await self._note(Upload(storage.name, key))
        try:
            size = await storage.write(key, upload)
            try:
                duration, metadata = _describe(media_format, upload.head, size)
                media = await self.catalog.add_media_file(
                    NewMediaFile(recording.id, media_type, media_format, storage.backend,
                                 storage.name, key, size, duration, metadata)
                )
            except BaseException:
                # Shielded: a cancelled request must still take its object away again.
                await asyncio.shield(storage.delete(key))
                raise
            finally:
                self._recordings.invalidate(recording.id, UNSCOPED)
        finally:
            if note is not None:
                await asyncio.shield(self._run(self._end_note, note))
        return media

    async def _note(self, upload: Upload) -> Path | None:
        if self._journal is None:
            return None
        return await self._run(self._journal.begin, upload)

    def _end_note(self, note: Path) -> None:
        assert self._journal is not None
        self._journal.end(note)

    @staticmethod
    async def _run(fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def recover(self, *, stale_after: float) -> None:
        """Undo the uploads that dead processes left unfinished, then sweep storage.

        An upload noted in the journal by a worker that is gone may have left its
        object under the final key without a catalog row: it is deleted, unless the
        row exists (the process died after the commit) or a live worker is uploading
        to the same key. Then the storages remove the temporary pieces
        (gateway/storage/sweep.py).
        """
        undone: dict[str, set[str]] = {}
        orphans: list[Orphan] = []
        journal = self._journal
        if journal is not None:
            found, live = await self._run(journal.orphans)
            for orphan in found:
                if orphan.upload in live:
                    continue  # uploaded again right now: a later start decides
                try:
                    await self._undo(orphan.upload)
                except GatewayError as exc:
                    log.warning("could not undo the unfinished upload to %s in storage %r: %s",
                                orphan.upload.key, orphan.upload.storage, exc.detail)
                    continue
                undone.setdefault(orphan.upload.storage, set()).add(orphan.upload.key)
                orphans.append(orphan)
        swept = await sweep_partial_uploads(self._recordings.storages, abandoned=undone,
                                            stale_after=stale_after)
        log.info("upload recovery: %d unfinished upload(s) of stopped processes settled, "
                 "%d piece(s) removed from storage", len(orphans), sum(swept.values()))
        for orphan in orphans:
            # Kept while its storage could not be swept: the next start tries again.
            if journal is not None and (orphan.upload.storage in swept or
                                        orphan.upload.storage not in self._recordings.storages):
                await self._run(journal.forget, orphan)

    async def _undo(self, upload: Upload) -> None:
        """Delete an abandoned upload's object, if it has one and the catalog lacks it."""
        if upload.storage not in self._recordings.storages:
            log.warning("an unfinished upload to %s names storage %r, which is not "
                        "configured any more", upload.key, upload.storage)
            return
        if not KEY_RE.fullmatch(upload.key):
            log.warning("ignoring an unfinished upload to a key of another shape")
            return
        storage = self._recordings.storages[upload.storage]
        recording_id = int(upload.key.split("/")[2])  # recordings/<user>/<recording>/...
        try:
            await (await storage.open(upload.key)).close()
        except ObjectNotFound:
            return  # it died before its object got the final name
        # Neither backend replaces an object, so the one found stays the orphan
        # candidate until it is deleted here.
        recording = await self.catalog.get_recording(recording_id, UNSCOPED)
        if recording is not None and any(
                m.storage_name == upload.storage and m.storage_key == upload.key
                for m in recording.media_files):
            return  # it died after the catalog row committed: a complete upload
        await storage.delete(upload.key)
        log.warning("deleted %s from storage %r: its upload was cut short by a stopped "
                    "process before the catalog knew of it", upload.key, upload.storage)

    async def finish(
        self, recording: Recording, status: RecordingStatus, error_message: str | None
    ) -> Recording:
        if recording.status is status:
            return recording  # completing twice is harmless
        if recording.status is not RecordingStatus.IN_PROGRESS:
            raise Conflict(f"Recording is already {recording.status}")
        finished = await self.catalog.finish_recording(recording.id, status, error_message)
        self._recordings.invalidate(recording.id, UNSCOPED)
        if finished is None:
            raise NotFound("Recording not found")
        if finished.status is not status:
            raise Conflict(f"Recording is already {finished.status}")
        return finished


def _describe(media_format: str, head: bytes, size: int) -> tuple[float | None, dict[str, Any]]:
    """Duration and metadata read from the file's own header, where we know the format."""
    if size == 0:
        raise Unprocessable("The upload is empty")
    if media_format != "wav":
        return None, {}
    wav = parse_wav_header(head)
    if wav is None:
        raise Unprocessable("The upload is not a WAV file (no RIFF/WAVE header)")
    return wav.duration(size), wav.metadata()
