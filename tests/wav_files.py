"""WAV files built byte by byte for tests, and a plain reading of their samples.

The builders write what the RIFF and WAVE documents specify, independently of
gateway/wav.py; `decode_samples` reads samples back with `struct`, one by one, so
that the tests compare the gateway's scan with an obviously correct one.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

PCM, FLOAT, EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
SUBFORMAT_TAIL = bytes.fromhex("000000001000800000aa00389b71")

# (name, format tag, bytes per sample)
FORMATS = [
    ("pcm8", PCM, 1),
    ("pcm16", PCM, 2),
    ("pcm24", PCM, 3),
    ("pcm32", PCM, 4),
    ("float32", FLOAT, 4),
    ("float64", FLOAT, 8),
]


def chunk(chunk_id: bytes, body: bytes, *, pad: bool = True) -> bytes:
    """One RIFF chunk; an odd body is followed by a pad byte, as RIFF requires."""
    return chunk_id + len(body).to_bytes(4, "little") + body + (b"\0" if pad and len(body) % 2
                                                               else b"")


def fmt_body(tag: int, channels: int, rate: int, width: int, *, bits: int | None = None,
             block_align: int | None = None, extensible: bool = False,
             subformat: bytes | None = None) -> bytes:
    bits = width * 8 if bits is None else bits
    align = channels * width if block_align is None else block_align
    head_tag = EXTENSIBLE if extensible else tag
    body = struct.pack("<HHIIHH", head_tag, channels, rate, rate * align, align, bits)
    if extensible:
        guid = subformat if subformat is not None else tag.to_bytes(2, "little") + SUBFORMAT_TAIL
        body += struct.pack("<HHI", 22, bits, 0x3) + guid
    return body


def riff(*chunks: bytes, riff_size: int | None = None, magic: bytes = b"RIFF",
         form: bytes = b"WAVE") -> bytes:
    body = form + b"".join(chunks)
    size = len(body) if riff_size is None else riff_size
    return magic + size.to_bytes(4, "little") + body


def encode_samples(values: Sequence[float], tag: int, width: int) -> bytes:
    """Interleaved samples in [-1.0, 1.0] (floats may be anything) → the data chunk's bytes."""
    out = bytearray()
    for value in values:
        if tag == FLOAT:
            out += struct.pack("<f" if width == 4 else "<d", value)
        elif width == 1:
            out.append(max(0, min(255, round(value * 128) + 128)))
        else:
            top = 2 ** (width * 8 - 1)
            out += max(-top, min(top - 1, round(value * top))).to_bytes(width, "little",
                                                                        signed=True)
    return bytes(out)


def decode_samples(data: bytes, tag: int, width: int) -> list[float]:
    """The data chunk's bytes → samples scaled to [-1.0, 1.0], one at a time."""
    values: list[float] = []
    for offset in range(0, len(data) - width + 1, width):
        raw = data[offset: offset + width]
        if tag == FLOAT:
            value = struct.unpack("<f" if width == 4 else "<d", raw)[0]
            value = 0.0 if math.isnan(value) else max(-1.0, min(1.0, value))
        elif width == 1:
            value = (raw[0] - 128) / 128
        else:
            value = int.from_bytes(raw, "little", signed=True) / 2 ** (width * 8 - 1)
        values.append(value)
    return values


def wav(values: Sequence[float], *, tag: int = PCM, width: int = 2, channels: int = 1,
        rate: int = 8000, extensible: bool = False, before_data: Sequence[bytes] = (),
        after_data: Sequence[bytes] = ()) -> bytes:
    """A whole WAV file of interleaved `values`, with extra chunks where asked."""
    fmt = chunk(b"fmt ", fmt_body(tag, channels, rate, width, extensible=extensible))
    data = chunk(b"data", encode_samples(values, tag, width))
    return riff(fmt, *before_data, data, *after_data)


def expected_peaks(samples: Sequence[float], channels: int, width: int,
                   fine: int) -> list[tuple[float, float]]:
    """What the peaks endpoint documents, computed the slow way from plain samples.

    Frames go into min(fine, frames) fine buckets, bucket i holding frames
    [i*F//n, (i+1)*F//n); output bucket j takes fine buckets [j*n//width,
    max(that + 1, (j+1)*n//width)); channels are mixed (min of all, max of all).
    """
    frames = len(samples) // channels
    count = min(fine, frames)
    if count == 0:
        return [(0.0, 0.0)] * width
    bounds = [i * frames // count for i in range(count + 1)]
    pairs = []
    for j in range(width):
        first = j * count // width
        last = max(first + 1, (j + 1) * count // width)
        window = samples[bounds[first] * channels: bounds[last] * channels]
        pairs.append((min(window), max(window)))
    return pairs
