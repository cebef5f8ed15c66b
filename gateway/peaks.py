"""Waveform peaks of WAV media files: one streaming pass, then a cache beside the file.

Why one fixed resolution rather than a cache per width: a scan reads the whole
recording (an hour of 16 kHz audio is 115 MB and seconds of CPU in pure Python), and
every browser window asks for its own width. So a file is scanned once, into
FINE_BUCKETS (min, max) pairs, stored beside it as `<media key>.peaks`; every width
from 1 to MAX_WIDTH is then cut from those in microseconds. Each fine bucket goes to
exactly one output bucket, so a width that divides FINE_BUCKETS (or any width of a
file shorter than FINE_BUCKETS frames) is exact, and any other width is off by at
most one fine bucket at a bucket's edges (a fifth of a second for an hour). The
cache records the ETag and size of the file it was made from, and one that does not
match is made again; writes never replace an object, so a stale one is deleted first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sys
from array import array
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from gateway.cache import TtlCache
from gateway.errors import Conflict, GatewayError
from gateway.storage import ObjectInfo, ObjectNotFound, Storage
from gateway.wav import ByteReader, MalformedWav, SampleEncoding, WavFormat, read_layout

log = logging.getLogger(__name__)

DEFAULT_WIDTH = 1000
MAX_WIDTH = 8192
FINE_BUCKETS = 2 * MAX_WIDTH
"""Pairs kept per file: twice the widest request, 128 KiB as float32."""
PEAKS_SUFFIX = ".peaks"
MEMORY_ENTRIES = 64
"""Files whose peaks stay in memory for the cache TTL (each at most 128 KiB)."""
SCANS_AT_ONCE = 2
"""Scans share the event loop's CPU with every stream: at most this many per process."""
_MAGIC = b"GWPEAKS1"
_MAX_CACHE_BYTES = len(_MAGIC) + 4 + 4096 + FINE_BUCKETS * 8
_DECIMALS = 4  # 1e-4 of full scale is -80 dB: finer than any screen shows
# The typecode of a 4-byte integer array: C sizes vary by platform, so look it up once.
_INT32 = next(code for code in "ilq" if array(code).itemsize == 4)
_LITTLE_ENDIAN_HOST = sys.byteorder == "little"


def peaks_key(media_key: str) -> str:
    """Where a media file's peaks are cached: beside it, in the same storage."""
    return media_key + PEAKS_SUFFIX


@dataclass(frozen=True, slots=True)
class Peaks:
    """(min, max) per fine bucket of a whole file, in [-1.0, 1.0], channels mixed."""

    channels: int
    sample_rate: int
    frames: int
    lows: array[float]
    highs: array[float]

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def resample(self, width: int) -> list[list[float]]:
        """Exactly `width` [min, max] pairs; fine buckets are shared out, none counted twice.

        With fewer fine buckets than `width` (a short file), neighbours repeat one.
        """
        count = len(self.lows)
        if count == 0:
            return [[0.0, 0.0] for _ in range(width)]
        lows, highs, pairs = self.lows, self.highs, []
        for j in range(width):
            first = j * count // width
            last = max(first + 1, (j + 1) * count // width)
            # (+ 0.0 turns a rounded -0.0 into 0.0)
            pairs.append([round(min(lows[first:last]), _DECIMALS) + 0.0,
                          round(max(highs[first:last]), _DECIMALS) + 0.0])
        return pairs


def _decoder(fmt: WavFormat) -> tuple[Callable[[bytes], array[int] | array[float]], float, float]:
    """A function from whole frames' bytes to samples, and the offset and scale to [-1, 1]."""
    width = fmt.sample_width

    def load(code: str, data: bytes) -> array[int] | array[float]:
        samples: array[int] | array[float] = array(code)
        samples.frombytes(data)
        if not _LITTLE_ENDIAN_HOST:
            samples.byteswap()
        return samples

    if fmt.encoding is SampleEncoding.FLOAT:
        code = "f" if width == 4 else "d"
        return (lambda data: load(code, data)), 0.0, 1.0
    if width == 1:
        return (lambda data: load("B", data)), 128.0, 128.0
    if width == 2:
        return (lambda data: load("h", data)), 0.0, 32768.0
    if width == 3:
        def widen(data: bytes) -> array[int] | array[float]:
            # Each 3-byte sample becomes the top of a 4-byte one (low byte zero), by
            # strided slices that run in C: no per-sample Python code.
            wide = bytearray(len(data) // 3 * 4)
            wide[1::4], wide[2::4], wide[3::4] = data[0::3], data[1::3], data[2::3]
            return load(_INT32, bytes(wide))

        return widen, 0.0, 2.0**31
    return (lambda data: load(_INT32, data)), 0.0, 2.0**31


def _extremes(samples: array[int] | array[float]) -> tuple[float, float]:
    low, high = min(samples), max(samples)
    if low != low or high != high:
        # min() and max() return NaN only when the first sample is NaN (no comparison
        # with NaN is true): look again without the NaNs, which count as nothing.
        finite = [value for value in samples if value == value]
        low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    return low, high


class PeakScanner:
    """Min and max per bucket of a WAV file's samples, fed in order, in bounded memory.

    `frames` (known from the header and the file size) fixes the buckets before the
    first sample: bucket i covers frames [i*frames//n, (i+1)*frames//n), where n is
    `buckets` or `frames` if smaller, so that no bucket is empty.
    """

    def __init__(self, fmt: WavFormat, frames: int, buckets: int = FINE_BUCKETS) -> None:
        self.format = fmt
        self.frames = frames
        self._buckets = min(buckets, frames)
        self._decode, self._offset, self._scale = _decoder(fmt)
        self._carry = b""  # the start of a frame split between two chunks
        self._position = 0  # frames seen
        self._bucket = 0
        self._boundary = frames // self._buckets if self._buckets else 0
        self._low = math.inf
        self._high = -math.inf
        self._lows: array[float] = array("f")
        self._highs: array[float] = array("f")

    @property
    def done(self) -> bool:
        return self._position >= self.frames

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the data chunk; bytes past the last frame are ignored."""
        if self.done:
            return
        align, channels = self.format.block_align, self.format.channels
        if self._carry:
            data = self._carry + data
        whole = min(len(data) // align, self.frames - self._position)
        self._carry = data[whole * align:] if whole * align < len(data) else b""
        if whole == 0:
            return
        samples = self._decode(data[: whole * align])
        start = 0
        while start < whole:
            stop = min(whole, start + self._boundary - self._position)
            low, high = _extremes(samples[start * channels: stop * channels])
            self._low, self._high = min(self._low, low), max(self._high, high)
            self._position += stop - start
            start = stop
            if self._position == self._boundary:
                self._close_bucket()

    def _close_bucket(self) -> None:
        self._lows.append(self._normalize(self._low))
        self._highs.append(self._normalize(self._high))
        self._low, self._high = math.inf, -math.inf
        self._bucket += 1
        self._boundary = (self._bucket + 1) * self.frames // self._buckets

    def _normalize(self, value: float) -> float:
        return max(-1.0, min(1.0, (value - self._offset) / self._scale))

    def result(self) -> Peaks:
        if not self.done:
            raise MalformedWav(f"The WAV data ended after {self._position} of {self.frames} "
                               "frames")
        return Peaks(self.format.channels, self.format.sample_rate, self.frames,
                     self._lows, self._highs)


async def scan(chunks: AsyncIterator[bytes], file_size: int) -> Peaks:
    """Peaks of a whole WAV file, streamed once from its first byte (`file_size` long)."""
    reader = ByteReader(chunks)
    layout = await read_layout(reader)
    scanner = PeakScanner(layout.format, layout.frames(file_size))
    if not scanner.done:
        async with contextlib.aclosing(reader.rest()) as rest:
            async for chunk in rest:
                scanner.feed(chunk)
                if scanner.done:
                    break
    return scanner.result()


def encode(peaks: Peaks, source: ObjectInfo) -> bytes:
    """The cache object: magic, JSON about the file it was made from, then float32 pairs."""
    about = json.dumps({
        "etag": source.etag, "size": source.size, "channels": peaks.channels,
        "sample_rate": peaks.sample_rate, "frames": peaks.frames, "buckets": len(peaks.lows),
    }).encode()
    lows, highs = array("f", peaks.lows), array("f", peaks.highs)
    if not _LITTLE_ENDIAN_HOST:
        lows.byteswap()
        highs.byteswap()
    return b"".join((_MAGIC, len(about).to_bytes(4, "little"), about, lows.tobytes(),
                     highs.tobytes()))


@dataclass(frozen=True, slots=True)
class CachedPeaks:
    peaks: Peaks
    etag: str
    size: int

    def made_from(self, info: ObjectInfo) -> bool:
        return self.etag == info.etag and self.size == info.size


def decode(blob: bytes) -> CachedPeaks | None:
    """A cache object back to peaks; None for anything that is not one, or damaged."""
    head = len(_MAGIC) + 4
    if len(blob) < head or not blob.startswith(_MAGIC):
        return None
    length = int.from_bytes(blob[len(_MAGIC):head], "little")
    try:
        about = json.loads(blob[head: head + length])
        buckets, channels = int(about["buckets"]), int(about["channels"])
        rate, frames = int(about["sample_rate"]), int(about["frames"])
        etag, size = str(about["etag"]), int(about["size"])
    except (ValueError, KeyError, TypeError):
        return None
    body = blob[head + length:]
    if (buckets != min(FINE_BUCKETS, frames) or len(body) != buckets * 8 or channels < 1
            or rate < 1):
        return None
    lows, highs = array("f"), array("f")
    lows.frombytes(body[: buckets * 4])
    highs.frombytes(body[buckets * 4:])
    if not _LITTLE_ENDIAN_HOST:
        lows.byteswap()
        highs.byteswap()
    if not all(-1.0 <= v <= 1.0 for v in (*lows, *highs)):
        return None
    return CachedPeaks(Peaks(channels, rate, frames, lows, highs), etag, size)


class Waveforms:
    """Peaks of WAV media files: from memory, else their cache object, else one scan."""

    def __init__(self, cache_ttl: float) -> None:
        # Single flight as well: many players opening one file cause one scan.
        self._memory: TtlCache[tuple[str, str, str, int], Peaks] = TtlCache(
            cache_ttl, max_entries=MEMORY_ENTRIES)
        self._scans = asyncio.Semaphore(SCANS_AT_ONCE)

    async def peaks(self, storage: Storage, key: str) -> Peaks:
        """The peaks of the WAV file at `key`; ObjectNotFound, MalformedWav, UnsupportedWav."""
        source = await storage.open(key)
        info = source.info
        await source.close()
        found = await self._memory.get((storage.name, key, info.etag, info.size),
                                       lambda: self._load(storage, key, info))
        assert found is not None  # _load raises rather than return None
        return found

    async def _load(self, storage: Storage, key: str, info: ObjectInfo) -> Peaks:
        cache_key = peaks_key(key)
        exists, cached = await _read_cache(storage, cache_key)
        if cached is not None and cached.made_from(info):
            return cached.peaks
        async with self._scans:
            peaks, scanned = await _scan_object(storage, key)
        await self._store(storage, key, encode(peaks, scanned), replace=exists)
        return peaks

    async def _store(self, storage: Storage, key: str, blob: bytes, *, replace: bool) -> None:
        """Write the cache object; a failure only costs a scan next time."""
        cache_key = peaks_key(key)
        try:
            if replace:
                await storage.delete(cache_key)
            await storage.write(cache_key, _once(blob))
        except Conflict:
            return  # another request or worker stored it first
        except GatewayError as exc:  # e.g. a storage the gateway may read but not write
            log.warning("could not cache the peaks of %s: %s", key, exc.detail)
            return
        # A delete of the recording may have removed the file (and looked for its peaks)
        # while we scanned: deletes take the file first, so look for it again now.
        try:
            await _touch(storage, key)
        except GatewayError:
            with contextlib.suppress(GatewayError):
                await storage.delete(cache_key)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _read_cache(storage: Storage, cache_key: str) -> tuple[bool, CachedPeaks | None]:
    """(whether a cache object exists, its peaks if it is a usable one)."""
    try:
        obj = await storage.open(cache_key)
    except ObjectNotFound:
        return False, None
    except GatewayError as exc:
        log.warning("could not read cached peaks %s: %s", cache_key, exc.detail)
        return False, None
    try:
        size = obj.info.size
        if not 0 < size <= _MAX_CACHE_BYTES:
            return True, None
        source = await obj.read(0, size)
        try:
            blob = b"".join([chunk async for chunk in source.chunks()])
        finally:
            await source.close()
    except GatewayError as exc:
        log.warning("could not read cached peaks %s: %s", cache_key, exc.detail)
        return True, None
    finally:
        await obj.close()
    return True, decode(blob)


async def _scan_object(storage: Storage, key: str) -> tuple[Peaks, ObjectInfo]:
    """Stream the whole file once (one ranged read) through the scanner."""
    obj = await storage.open(key)
    try:
        info = obj.info
        if info.size < 12:
            raise MalformedWav("The file is too short to be WAV")
        source = await obj.read(0, info.size)
        try:
            async with contextlib.aclosing(source.chunks()) as chunks:
                return await scan(chunks, info.size), info
        finally:
            await source.close()
    finally:
        await obj.close()


async def _touch(storage: Storage, key: str) -> None:
    """Read one byte of the object, past any cached metadata: raises if it is gone."""
    obj = await storage.open(key)
    try:
        source = await obj.read(0, 1)
        await source.close()
    finally:
        await obj.close()
