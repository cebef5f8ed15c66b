"""Peaks of WAV samples: every format against a plain reading, resampling, the cache format."""

from __future__ import annotations

import math
import random
import struct
from array import array
from collections.abc import AsyncIterator

import pytest

from gateway.peaks import FINE_BUCKETS, CachedPeaks, Peaks, decode, encode, peaks_key, scan
from gateway.storage import ObjectInfo
from gateway.storage.base import KEY_RE
from gateway.wav import MalformedWav
from tests.wav_files import (
    FLOAT,
    FORMATS,
    PCM,
    chunk,
    decode_samples,
    expected_peaks,
    fmt_body,
    riff,
    wav,
)

TOLERANCE = 1.5e-4  # answers are rounded to 4 decimals and kept as float32


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start: start + size]


async def peaks_of(data: bytes, size: int = 4096) -> Peaks:
    return await scan(pieces(data, size), len(data))


def close_to(actual: list[list[float]], expected: list[tuple[float, float]]) -> bool:
    return len(actual) == len(expected) and all(
        abs(a - b) <= TOLERANCE for pair, want in zip(actual, expected, strict=True)
        for a, b in zip(pair, want, strict=True))


def noise(count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(-1.0, 1.0) for _ in range(count)]


@pytest.mark.parametrize(("name", "tag", "width"), FORMATS)
@pytest.mark.parametrize("extensible", [False, True])
async def test_every_format_matches_a_plain_reading(
    name: str, tag: int, width: int, extensible: bool
) -> None:
    channels, frames = 2, 3001
    data = wav(noise(channels * frames, seed=width), tag=tag, width=width,
               channels=channels, rate=22_050, extensible=extensible,
               before_data=[chunk(b"LIST", b"INFOodd")])
    samples = decode_samples(data[-channels * frames * width:], tag, width)
    peaks = await peaks_of(data, 1000)  # frames split across pieces
    assert (peaks.channels, peaks.sample_rate, peaks.frames) == (2, 22_050, frames)
    assert peaks.duration == frames / 22_050
    for n in (1, 7, 1000, 3001, 5000):  # fewer frames than FINE_BUCKETS: exact at any width
        got = peaks.resample(n)
        assert close_to(got, expected_peaks(samples, channels, n, FINE_BUCKETS)), (name, n)


async def test_channels_are_mixed_into_one_pair() -> None:
    frames = 400
    left = [0.5 if i % 2 else 0.1 for i in range(frames)]
    right = [-0.25 if i % 2 else -0.05 for i in range(frames)]
    data = wav([v for pair in zip(left, right, strict=True) for v in pair], channels=2)
    peaks = await peaks_of(data)
    assert close_to(peaks.resample(4), [(-0.25, 0.5)] * 4)


async def test_long_file_is_shared_out_over_the_fine_buckets() -> None:
    frames = 3 * FINE_BUCKETS + 123
    values = noise(frames, seed=7)
    data = wav(values, width=2)
    samples = decode_samples(data[-frames * 2:], PCM, 2)
    peaks = await peaks_of(data, 65_536)
    assert len(peaks.lows) == FINE_BUCKETS
    for n in (8192, 1024, 1000, 333, 1):
        assert close_to(peaks.resample(n), expected_peaks(samples, 1, n, FINE_BUCKETS)), n


async def test_widths_that_divide_the_fine_buckets_are_exact_frame_buckets() -> None:
    frames = 2 * FINE_BUCKETS
    data = wav([(i % 97) / 100 for i in range(frames)], width=2)
    samples = decode_samples(data[-frames * 2:], PCM, 2)
    peaks = await peaks_of(data)
    exact = [(min(samples[j * frames // 64: (j + 1) * frames // 64]),
              max(samples[j * frames // 64: (j + 1) * frames // 64])) for j in range(64)]
    assert close_to(peaks.resample(64), exact)


@pytest.mark.parametrize("size", [1, 3, 5, 4096])
async def test_the_split_of_the_stream_does_not_matter(size: int) -> None:
    data = wav(noise(2 * 700, seed=3), width=3, channels=2, extensible=True)
    whole = await peaks_of(data, len(data))
    split = await peaks_of(data, size)
    assert split.resample(700) == whole.resample(700)


async def test_known_shape_quiet_then_loud() -> None:
    rate = 8000
    quiet = [0.2 * math.sin(2 * math.pi * 440 * n / rate) for n in range(rate)]
    loud = [0.8 * math.sin(2 * math.pi * 440 * n / rate) for n in range(rate)]
    peaks = await peaks_of(wav(quiet + loud, rate=rate))
    assert peaks.duration == 2.0
    first, second = peaks.resample(2)
    assert first == pytest.approx([-0.2, 0.2], abs=1e-3)
    assert second == pytest.approx([-0.8, 0.8], abs=1e-3)


async def test_zero_length_data() -> None:
    peaks = await peaks_of(wav([], channels=2))
    assert (peaks.frames, peaks.duration, len(peaks.lows)) == (0, 0.0, 0)
    assert peaks.resample(3) == [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]


async def test_truncated_data_uses_the_frames_that_are_there() -> None:
    full = wav([0.1] * 50 + [0.9] * 50, width=2)
    cut = full[:-103]  # 48 frames and a half missing: the half frame is dropped too
    peaks = await peaks_of(cut)
    assert peaks.frames == 48
    assert peaks.duration == 48 / 8000
    assert close_to(peaks.resample(1), [(0.1, 0.1)])


async def test_a_stream_shorter_than_its_object_is_malformed() -> None:
    data = wav([0.3] * 100)
    with pytest.raises(MalformedWav, match="ended after"):
        await scan(pieces(data[:-50], 16), len(data))


@pytest.mark.parametrize(("width", "raw", "value"), [
    (1, b"\x00", -1.0), (1, b"\xff", 0.9922), (1, b"\x80", 0.0),
    (2, b"\x00\x80", -1.0), (2, b"\xff\x7f", 1.0), (2, b"\x00\x00", 0.0),
    (3, b"\x00\x00\x80", -1.0), (3, b"\xff\xff\x7f", 1.0), (3, b"\x00\x00\x40", 0.5),
    (4, b"\x00\x00\x00\x80", -1.0), (4, b"\x00\x00\x00\xc0", -0.5),
])
async def test_integer_extremes_scale_to_full_range(width: int, raw: bytes, value: float) -> None:
    data = riff(chunk(b"fmt ", fmt_body(PCM, 1, 8000, width)), chunk(b"data", raw))
    (pair,) = (await peaks_of(data)).resample(1)
    assert pair == [value, value]


async def test_float_samples_outside_the_range_nan_and_infinity() -> None:
    fmt = chunk(b"fmt ", fmt_body(FLOAT, 1, 8000, 4))
    values = [math.nan, 0.25, -0.5, math.nan, 3.0, -math.inf, 0.1, math.nan]
    data = riff(fmt, chunk(b"data", struct.pack(f"<{len(values)}f", *values)))
    peaks = await peaks_of(data)
    # One frame per fine bucket: NaN alone counts as silence; beyond ±1 is clipped.
    assert peaks.resample(8) == [[0.0, 0.0], [0.25, 0.25], [-0.5, -0.5], [0.0, 0.0],
                                 [1.0, 1.0], [-1.0, -1.0], [0.1, 0.1], [0.0, 0.0]]
    assert peaks.resample(2) == [[-0.5, 0.25], [-1.0, 1.0]]


async def test_a_nan_first_in_a_bucket_does_not_hide_the_rest() -> None:
    fmt = chunk(b"fmt ", fmt_body(FLOAT, 1, 8000, 4))
    values = [math.nan, 0.5, -0.25, math.nan] * FINE_BUCKETS  # four frames per fine bucket
    data = riff(fmt, chunk(b"data", struct.pack(f"<{len(values)}f", *values)))
    peaks = await peaks_of(data, 4000)
    assert peaks.resample(FINE_BUCKETS) == [[-0.25, 0.5]] * FINE_BUCKETS


def test_the_cache_key_sits_beside_the_media_key() -> None:
    key = "recordings/1/42/d6e337d6-92cd.wav"
    assert peaks_key(key) == key + ".peaks"
    assert KEY_RE.fullmatch(peaks_key(key))
    assert not KEY_RE.fullmatch(key + ".peaks.peaks")
    assert not KEY_RE.fullmatch(key + ".other")


async def test_cache_format_round_trip() -> None:
    peaks = await peaks_of(wav(noise(20_000, seed=11), rate=16_000))
    info = ObjectInfo(size=40_044, etag='"abc-123"', last_modified=1_700_000_000)
    cached = decode(encode(peaks, info))
    assert isinstance(cached, CachedPeaks)
    assert cached.made_from(info)
    assert not cached.made_from(ObjectInfo(40_044, '"other"', 1_700_000_000))
    assert not cached.made_from(ObjectInfo(40_045, '"abc-123"', 1_700_000_000))
    assert cached.peaks == peaks
    assert cached.peaks.resample(999) == peaks.resample(999)


async def test_damaged_cache_objects_are_not_used() -> None:
    peaks = await peaks_of(wav(noise(100, seed=5)))
    blob = encode(peaks, ObjectInfo(244, '"e"', 0))
    nan_lows = array("f", [math.nan] * len(peaks.lows)).tobytes()
    damaged = [
        b"", b"GWPEAKS1", b"something else entirely", blob[:-1], blob + b"\0",
        blob.replace(b"GWPEAKS1", b"GWPEAKS9", 1), blob.replace(b'"buckets"', b'"bucket5"', 1),
        blob[: len(blob) - 2 * len(nan_lows)] + nan_lows + nan_lows,
    ]
    for data in damaged:
        assert decode(data) is None, data[:40]
