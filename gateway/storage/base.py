"""The Storage protocol every backend implements; handlers know nothing else."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from gateway.errors import NotFound

# recordings/<user_id>/<recording_id>/<session_uid>.<ext>: checked again here so
# that no backend ever sees a key that could name anything else. A media file's
# waveform peaks are cached beside it under the same key plus `.peaks`.
KEY_RE = re.compile(
    r"recordings/[0-9]{1,19}/[0-9]{1,19}/[A-Za-z0-9_-]{1,128}\.[a-z0-9]{1,8}(?:\.peaks)?")


class ObjectNotFound(NotFound):
    default_detail = "Media file not found in storage"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Size and validators of a stored object."""

    size: int
    etag: str  # strong entity-tag, quotes included
    last_modified: int  # seconds since the epoch


class ByteSource(Protocol):
    """One byte range of an object, fetched and ready to be written out."""

    async def send(self, request: web.BaseRequest, response: web.StreamResponse) -> int:
        """Write the range to an already prepared response.

        Its status line and headers may still wait in the writer, to leave with the
        body's first bytes (gateway/streaming.py): a source that writes past the writer
        (sendfile, the transport, splice) sends them first with `writer.send_headers()`.
        Returns how many bytes went straight to the transport (sendfile), past the
        response's writer, so that the caller can count them.
        """

    def chunks(self) -> AsyncGenerator[bytes, None]:
        """The range's bytes in pieces of bounded size, for the gateway to read itself.

        Raises the gateway's own errors (StorageUnavailable, GatewayTimeout) if the
        storage fails or the range ends early.
        """

    @property
    def sent(self) -> int:
        """Bytes of the range handed to the client so far, also after `send` failed."""

    async def close(self) -> None: ...


class StoredObject(Protocol):
    """An object opened for reading; `close()` must always be awaited."""

    @property
    def info(self) -> ObjectInfo: ...

    async def read(self, start: int, length: int) -> ByteSource:
        """Start reading a range. Storage errors surface here, before any header is sent."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What a storage check did: the test object it wrote, read back and deleted."""

    object_key: str
    steps: tuple[str, ...]


class Storage(Protocol):
    """A place that holds objects under recording keys."""

    @property
    def name(self) -> str: ...

    @property
    def backend(self) -> str:
        """The `storage_backend` value shown in media file JSON (local, minio, s3)."""

    async def open(self, key: str) -> StoredObject:
        """Open an object for reading, or raise ObjectNotFound."""

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the chunks under `key` all at once or not at all; return the size."""

    async def delete(self, key: str) -> None:
        """Remove the object; an object that is already gone is not an error."""

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int
    ) -> str | None:
        """A URL that fetches the object without our credentials, or None if unsupported."""

    async def ping(self) -> None:
        """Raise if the storage cannot be used right now."""

    async def check(self) -> CheckReport:
        """Write, read back and delete a small test object; raise with the storage's error."""

    def describe(self) -> dict[str, str]:
        """Name, type and location for operators: never a secret or a local path."""

    async def close(self) -> None: ...


def check_key(key: str) -> str:
    """Return the key if it has the one allowed shape, else raise ObjectNotFound."""
    if not KEY_RE.fullmatch(key):
        raise ObjectNotFound()
    return key
