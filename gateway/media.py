"""Media formats, their content types and filenames, and what a WAV header says."""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

MEDIA_TYPES = ("audio", "video")

# (media type, format) → Content-Type. The allow-list is also what keeps a
# format out of storage keys unless it is one of these short, known words.
_CONTENT_TYPES: dict[tuple[str, str], str] = {
    ("audio", "wav"): "audio/wav",
    ("audio", "webm"): "audio/webm",
    ("audio", "ogg"): "audio/ogg",
    ("audio", "opus"): "audio/ogg",
    ("audio", "mp3"): "audio/mpeg",
    ("audio", "m4a"): "audio/mp4",
    ("audio", "mp4"): "audio/mp4",
    ("video", "webm"): "video/webm",
    ("video", "mp4"): "video/mp4",
    ("video", "ogg"): "video/ogg",
}
FORMATS = tuple(sorted({fmt for _, fmt in _CONTENT_TYPES}))


def is_supported(media_type: str, media_format: str) -> bool:
    return (media_type, media_format) in _CONTENT_TYPES


def content_type(media_type: str, media_format: str) -> str:
    """The Content-Type for a stored media file (the pair was validated on upload)."""
    return _CONTENT_TYPES.get((media_type, media_format), "application/octet-stream")


def download_filename(recording_id: int, media_type: str, media_format: str) -> str:
    """`906238426347_audio.wav`, as Vexa names downloads."""
    return f"{recording_id}_{media_type}.{media_format}"


@functools.lru_cache(maxsize=4096)  # the same few names are asked for again with every seek
def content_disposition(disposition: str, filename: str) -> str:
    """`inline; filename="ascii"; filename*=UTF-8''encoded` (RFC 6266, RFC 8187).

    The quoted ASCII fallback drops anything that could break out of the quotes
    or the header line; the extended form carries the exact name.
    """
    fallback = "".join(
        c if 0x20 <= ord(c) < 0x7F and c not in '"\\%' else "_" for c in filename
    )
    encoded = quote(filename, safe="!#$&+-.^_`|~")
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


@dataclass(frozen=True, slots=True)
class WavInfo:
    """What a RIFF/WAVE header tells about the audio after it."""

    sample_rate: int
    channels: int
    bits_per_sample: int
    byte_rate: int
    data_offset: int
    data_size: int | None  # None when the header leaves it open (streamed WAV)

    def duration(self, file_size: int) -> float | None:
        available = max(file_size - self.data_offset, 0)
        size = available if self.data_size is None else min(self.data_size, available)
        if self.byte_rate <= 0:
            return None
        return round(size / self.byte_rate, 3)

    def metadata(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "bits_per_sample": self.bits_per_sample,
        }


WAV_HEADER_PROBE = 64 * 1024
"""How many leading bytes of an upload are kept to read its header."""


def parse_wav_header(head: bytes) -> WavInfo | None:
    """Parse the RIFF chunks at the start of a WAV file; None if they are not WAV."""
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return None
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(head):
        chunk_id = head[pos : pos + 4]
        (chunk_size,) = struct.unpack_from("<I", head, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt " and chunk_size >= 16 and body + 16 <= len(head):
            _, channels, rate, byte_rate, _, bits = struct.unpack_from("<HHIIHH", head, body)
            fmt = (channels, rate, byte_rate, bits)
        elif chunk_id == b"data":
            if fmt is None or fmt[1] == 0:
                return None
            channels, rate, byte_rate, bits = fmt
            open_size = chunk_size in (0, 0xFFFFFFFF)
            return WavInfo(rate, channels, bits, byte_rate, body, None if open_size else chunk_size)
        pos = body + chunk_size + (chunk_size & 1)  # chunks are word-aligned
    return None
