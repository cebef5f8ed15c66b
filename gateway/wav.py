"""RIFF/WAVE read as its bytes arrive: the sample format, and where the samples are.

Follows the RIFF layout (chunks of a four-byte id, a little-endian size and a body
padded to an even length) and the WAVE `fmt ` chunk, WAVE_FORMAT_EXTENSIBLE
included, as Microsoft's multimedia documentation describes them. Only what the
waveform needs is accepted: integer PCM of 8, 16, 24 or 32 bits, and IEEE float of
32 or 64 bits. Nothing here does I/O of its own: the bytes come from any async
iterator, so the same code reads local files, S3 bodies and test data.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from enum import Enum

from gateway.errors import NotFound, Unprocessable

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT are {0000000X-0000-0010-8000-00aa00389b71}:
# the format tag in the first two bytes, then always this.
_SUBFORMAT_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10", 0x0050: "MPEG", 0x0055: "MPEG Layer III", 0x00FF: "AAC",
    0x1610: "HE-AAC", 0xF1AC: "FLAC",
}
_OPEN_SIZES = (0, 0xFFFFFFFF)
"""Sizes a streaming writer leaves when it never comes back to patch the header."""
MAX_FMT_SIZE = 64 * 1024
"""A `fmt ` chunk is 16 to 40 bytes; anything far larger is not a WAV header."""
PCM_ONLY = "Peaks are available for WAV PCM (integer or float samples) only"


class MalformedWav(Unprocessable):
    """The file says it is WAV, but its chunks do not add up."""

    default_detail = "The WAV file is malformed"


class UnsupportedWav(NotFound):
    """A well-formed WAV file whose samples are not PCM (ADPCM, mu-law, MP3 in WAV, ...)."""

    default_detail = PCM_ONLY


class SampleEncoding(Enum):
    """How one sample of one channel is stored."""

    UNSIGNED = "unsigned"  # 8-bit PCM: 0..255, silence at 128
    SIGNED = "signed"  # 16/24/32-bit PCM: two's complement, little-endian
    FLOAT = "float"  # IEEE 754, little-endian, nominally within [-1.0, 1.0]


@dataclass(frozen=True, slots=True)
class WavFormat:
    """What the `fmt ` chunk says about the samples."""

    channels: int
    sample_rate: int
    block_align: int  # bytes per frame: one sample of every channel
    sample_width: int  # bytes per sample of one channel (the container, not the valid bits)
    encoding: SampleEncoding


@dataclass(frozen=True, slots=True)
class WavLayout:
    """The format and where the `data` chunk's samples lie in the file."""

    format: WavFormat
    data_offset: int
    data_size: int | None  # None: open-ended, the samples run to the end of the file

    def frames(self, file_size: int) -> int:
        """Whole frames present: the data chunk's, cut short where the file is."""
        available = max(file_size - self.data_offset, 0)
        size = available if self.data_size is None else min(self.data_size, available)
        return size // self.format.block_align


def parse_fmt(body: bytes) -> WavFormat:
    """The `fmt ` chunk's body → WavFormat; MalformedWav or UnsupportedWav otherwise."""
    if len(body) < 16:
        raise MalformedWav(f"The WAV fmt chunk has {len(body)} bytes; at least 16 are needed")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise MalformedWav("The WAV fmt chunk is WAVE_FORMAT_EXTENSIBLE but shorter than "
                               "40 bytes")
        subformat = body[24:40]
        if subformat[2:] != _SUBFORMAT_TAIL:
            raise UnsupportedWav(f"{PCM_ONLY}; this file's extensible subformat is "
                                 f"{subformat.hex()}")
        (tag,) = struct.unpack_from("<H", subformat)
    if tag not in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT):
        name = _FORMAT_NAMES.get(tag, "another codec")
        raise UnsupportedWav(f"{PCM_ONLY}; this file is {name} (format tag 0x{tag:04x})")
    if channels == 0 or rate == 0 or block_align == 0:
        raise MalformedWav("The WAV fmt chunk gives zero channels, sample rate or block size")
    if block_align % channels:
        raise MalformedWav(f"The WAV block size {block_align} does not divide into "
                           f"{channels} channels")
    width = block_align // channels
    if not 0 < bits <= width * 8:
        raise MalformedWav(f"The WAV file has {bits} bits per sample in {width}-byte samples")
    if tag == WAVE_FORMAT_IEEE_FLOAT:
        if width not in (4, 8):
            raise UnsupportedWav(f"{PCM_ONLY}; this file has {width * 8}-bit float samples")
        return WavFormat(channels, rate, block_align, width, SampleEncoding.FLOAT)
    if width > 4:
        raise UnsupportedWav(f"{PCM_ONLY}; this file has {width * 8}-bit integer samples")
    encoding = SampleEncoding.UNSIGNED if width == 1 else SampleEncoding.SIGNED
    return WavFormat(channels, rate, block_align, width, encoding)


class ByteReader:
    """Exact reads and skips over a stream of chunks, holding little more than one chunk."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self._ended = False
        self.position = 0  # offset in the stream of the next byte to come out

    async def _fill(self) -> bool:
        if self._ended:
            return False
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._ended = True
            return False
        self._buffer += chunk
        return True

    async def read(self, size: int) -> bytes:
        """`size` bytes, or fewer only where the stream ends."""
        while len(self._buffer) < size and await self._fill():
            pass
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self.position += len(data)
        return data

    async def skip(self, size: int) -> int:
        """Pass over `size` bytes without keeping them; returns how many there were."""
        skipped = 0
        while skipped < size and (self._buffer or await self._fill()):
            take = min(size - skipped, len(self._buffer))
            del self._buffer[:take]
            skipped += take
        self.position += skipped
        return skipped

    async def rest(self) -> AsyncGenerator[bytes, None]:
        """Everything not read yet, as it arrives."""
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            self.position += len(data)
            yield data
        while await self._fill():
            data = bytes(self._buffer)
            self._buffer.clear()
            self.position += len(data)
            yield data


async def read_layout(reader: ByteReader) -> WavLayout:
    """Walk the chunks up to the start of `data`; the reader is left at its first sample.

    Chunks other than `fmt `, `ds64` and `data` (LIST, fact, cue, bext, junk...) are
    skipped, whatever their size, odd sizes padded as RIFF requires. An RF64 file's
    `ds64` chunk gives the real size of a data chunk larger than 4 GiB.
    """
    header = await reader.read(12)
    if len(header) < 12:
        raise MalformedWav("The file is too short to be WAV")
    riff, riff_size, form = struct.unpack("<4sI4s", header)
    if riff == b"RIFX":
        raise UnsupportedWav(f"{PCM_ONLY}; big-endian RIFX files are not read")
    if riff not in (b"RIFF", b"RF64") or form != b"WAVE":
        raise MalformedWav("The file is not RIFF/WAVE (its first 12 bytes say otherwise)")
    fmt: WavFormat | None = None
    ds64_data_size: int | None = None
    while True:
        chunk_header = await reader.read(8)
        if len(chunk_header) < 8:
            raise MalformedWav("The WAV file has no data chunk")
        chunk_id, size = struct.unpack("<4sI", chunk_header)
        if chunk_id == b"data":
            if fmt is None:
                raise MalformedWav("The WAV data chunk comes before the fmt chunk")
            if size == 0xFFFFFFFF and ds64_data_size is not None:
                data_size: int | None = ds64_data_size
            elif size in _OPEN_SIZES and riff_size in _OPEN_SIZES:
                data_size = None  # a streamed file whose header was never finished
            else:
                data_size = size
            return WavLayout(fmt, reader.position, data_size)
        if chunk_id == b"fmt " and fmt is None:
            if size > MAX_FMT_SIZE:
                raise MalformedWav(f"The WAV fmt chunk claims {size} bytes")
            body = await reader.read(size)
            if len(body) < size:
                raise MalformedWav("The WAV file ends inside its fmt chunk")
            fmt = parse_fmt(body)
            await reader.skip(size & 1)
            continue
        if chunk_id == b"ds64" and riff == b"RF64" and size >= 16:
            body = await reader.read(16)
            (_, ds64_data_size) = struct.unpack("<QQ", body) if len(body) == 16 else (0, None)
            size -= len(body)
        padded = size + (size & 1)  # chunks are word-aligned
        if await reader.skip(padded) < padded:
            raise MalformedWav("The WAV file ends before its data chunk")
