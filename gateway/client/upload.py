"""A local file as an upload: checked first, then read in pieces, never whole."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiofiles

from gateway.client.http import ClientFailure, ExitStatus
from gateway.media import FORMATS, MEDIA_TYPES, is_supported

READ_CHUNK = 1024 * 1024
"""Bytes read from the file at a time: one piece in memory, whatever the file's size."""


@dataclass(frozen=True, slots=True)
class UploadFile:
    """A file that exists, is regular, readable and not empty, with its media format."""

    path: Path
    size: int
    media_type: str
    media_format: str

    @classmethod
    def check(cls, path: Path, media_type: str, media_format: str | None) -> UploadFile:
        """Everything that can be known before a byte is sent; a ClientFailure otherwise.

        The format defaults to the file's extension; a WAV file must start with a
        RIFF/WAVE header, as the gateway checks only after the whole upload.
        """
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                raise _usage(f"{path}: not a regular file")
            with path.open("rb") as handle:
                head = handle.read(12)
        except FileNotFoundError:
            raise _usage(f"{path}: no such file") from None
        except OSError as exc:
            raise _usage(f"{path}: cannot be read ({exc.strerror})") from None
        if info.st_size == 0:
            raise _usage(f"{path}: the file is empty")
        if media_format is None:
            media_format = path.suffix.lstrip(".").lower()
            if media_format not in FORMATS:
                raise _usage(f"{path}: cannot tell the format from the extension; "
                             f"give --format ({', '.join(FORMATS)})")
        if media_type not in MEDIA_TYPES or not is_supported(media_type, media_format):
            raise _usage(f"{media_type}/{media_format} is not a supported media type and "
                         "format (docs/cli.md lists them)")
        if media_format == "wav" and not (head[:4] in (b"RIFF", b"RF64")
                                           and head[8:12] == b"WAVE"):
            raise _usage(f"{path}: no RIFF/WAVE header, so not a WAV file; give the right "
                         "--format")
        return cls(path, info.st_size, media_type, media_format)


class FileBody:
    """The file's first `size` bytes as an async iterable, counted as they go out.

    Exactly `size` bytes, the length announced in Content-Length: a file that grows
    meanwhile is cut there, one that shrinks fails the upload (`error` says why,
    since aiohttp reports only a broken connection).
    """

    def __init__(self, upload: UploadFile, on_chunk: Callable[[int], object]) -> None:
        self._upload = upload
        self._on_chunk = on_chunk
        self.error: ClientFailure | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        path, remaining = self._upload.path, self._upload.size
        async with aiofiles.open(path, "rb") as handle:
            while remaining:
                chunk = await handle.read(min(READ_CHUNK, remaining))
                if not chunk:
                    self.error = ClientFailure(
                        f"{path} shrank to {self._upload.size - remaining} bytes during the "
                        "upload; the gateway kept nothing")
                    raise self.error
                remaining -= len(chunk)
                self._on_chunk(len(chunk))
                yield chunk


def _usage(message: str) -> ClientFailure:
    return ClientFailure(message, ExitStatus.USAGE)

