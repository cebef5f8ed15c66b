"""The streaming RIFF/WAVE reader: formats, chunk walking, and every way a header can be wrong."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pytest

from gateway.wav import (
    ByteReader,
    MalformedWav,
    SampleEncoding,
    UnsupportedWav,
    WavLayout,
    read_layout,
)
from tests.wav_files import FLOAT, FORMATS, PCM, chunk, fmt_body, riff, wav


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start: start + size]


async def layout_of(data: bytes, size: int = 4096) -> WavLayout:
    return await read_layout(ByteReader(pieces(data, size)))


@pytest.mark.parametrize(("name", "tag", "width"), FORMATS)
@pytest.mark.parametrize("extensible", [False, True])
async def test_every_supported_format(name: str, tag: int, width: int, extensible: bool) -> None:
    data = wav([0.0] * 12, tag=tag, width=width, channels=3, rate=44_100,
               extensible=extensible)
    layout = await layout_of(data)
    expected = (SampleEncoding.FLOAT if tag == FLOAT else
                SampleEncoding.UNSIGNED if width == 1 else SampleEncoding.SIGNED)
    assert (layout.format.channels, layout.format.sample_rate) == (3, 44_100)
    assert (layout.format.sample_width, layout.format.block_align) == (width, 3 * width)
    assert layout.format.encoding is expected
    fmt_size = 40 if extensible else 16
    assert layout.data_offset == 12 + 8 + fmt_size + 8
    assert layout.data_size == 12 * width
    assert layout.frames(len(data)) == 4


async def test_list_and_odd_sized_chunks_before_data_are_skipped() -> None:
    samples = [0.5, -0.5, 0.25]
    data = wav(samples, before_data=[
        chunk(b"LIST", b"INFOINAM\x05\x00\x00\x00Talk\x00\x00"),  # odd sub-chunk inside
        chunk(b"junk", b"abc"),  # three bytes, then a pad byte
        chunk(b"fact", struct.pack("<I", 3)),
    ])
    layout = await layout_of(data)
    assert data[layout.data_offset - 8: layout.data_offset - 4] == b"data"
    assert layout.data_size == 6 and layout.frames(len(data)) == 3


async def test_chunks_after_data_are_not_part_of_the_samples() -> None:
    data = wav([0.1] * 10, after_data=[chunk(b"LIST", b"INFO" + b"x" * 30)])
    layout = await layout_of(data)
    assert layout.data_size == 20 and layout.frames(len(data)) == 10


@pytest.mark.parametrize("size", [1, 2, 3, 7, 13])
async def test_any_split_of_the_stream_reads_the_same(size: int) -> None:
    data = wav([0.0] * 50, tag=PCM, width=3, channels=2, extensible=True,
               before_data=[chunk(b"LIST", b"INFOodd"), chunk(b"bext", b"\x01" * 9)])
    assert await layout_of(data, size) == await layout_of(data)


async def test_the_reader_is_left_at_the_first_sample() -> None:
    data = wav([0.5, -0.5], before_data=[chunk(b"junk", b"z")])
    reader = ByteReader(pieces(data, 5))
    layout = await read_layout(reader)
    assert reader.position == layout.data_offset
    assert b"".join([piece async for piece in reader.rest()]) == data[layout.data_offset:]


async def test_truncated_data_counts_only_whole_frames_present() -> None:
    data = wav([0.0] * 100, width=2, channels=2)[:-7]  # 50 frames declared, cut mid-frame
    layout = await layout_of(data)
    assert layout.data_size == 200
    assert layout.frames(len(data)) == (200 - 7) // 4


async def test_empty_data_chunk() -> None:
    data = wav([])
    layout = await layout_of(data)
    assert layout.data_size == 0 and layout.frames(len(data)) == 0


async def test_streamed_file_whose_sizes_were_never_written() -> None:
    fmt = chunk(b"fmt ", fmt_body(PCM, 1, 8000, 2))
    samples = b"\x01\x00" * 30
    for size in (0, 0xFFFFFFFF):
        data = riff(fmt, b"data" + size.to_bytes(4, "little") + samples, riff_size=size)
        layout = await layout_of(data)
        assert layout.data_size is None and layout.frames(len(data)) == 30


async def test_a_zero_data_size_in_a_finished_file_means_zero() -> None:
    fmt = chunk(b"fmt ", fmt_body(PCM, 1, 8000, 2))
    data = riff(fmt, b"data" + (0).to_bytes(4, "little") + b"\x01\x00" * 30)
    layout = await layout_of(data)
    assert layout.data_size == 0 and layout.frames(len(data)) == 0


async def test_rf64_takes_the_data_size_from_ds64() -> None:
    ds64 = chunk(b"ds64", struct.pack("<QQQI", 0, 40, 20, 0))
    fmt = chunk(b"fmt ", fmt_body(PCM, 1, 8000, 2))
    data = riff(ds64, fmt, b"data" + b"\xff\xff\xff\xff" + b"\x00\x01" * 30,
                magic=b"RF64", riff_size=0xFFFFFFFF)
    layout = await layout_of(data)
    assert layout.data_size == 40 and layout.frames(len(data)) == 20


FMT16 = chunk(b"fmt ", fmt_body(PCM, 1, 8000, 2))
DATA = chunk(b"data", b"\x00\x00" * 4)


@pytest.mark.parametrize(("data", "detail"), [
    (b"", "too short to be WAV"),
    (b"RIFF\x00\x00", "too short to be WAV"),
    (b"OggS" + b"\x00" * 60, "not RIFF/WAVE"),
    (riff(FMT16, DATA, form=b"AVI "), "not RIFF/WAVE"),
    (riff(FMT16), "no data chunk"),
    (riff(FMT16, chunk(b"LIST", b"x" * 10)), "no data chunk"),
    (riff(DATA, FMT16), "data chunk comes before the fmt chunk"),
    (riff(chunk(b"fmt ", b"\x01\x00\x01\x00")), "at least 16 are needed"),
    (riff(b"fmt " + (10**6).to_bytes(4, "little") + b"\x00" * 16), "fmt chunk claims"),
    (riff(b"fmt " + (16).to_bytes(4, "little") + b"\x01\x00\x01\x00"), "ends inside its fmt"),
    (riff(FMT16, b"LIST" + (1000).to_bytes(4, "little") + b"x" * 10), "ends before its data"),
    (riff(chunk(b"fmt ", fmt_body(PCM, 1, 8000, 2, extensible=True)[:30]), DATA),
     "shorter than 40 bytes"),
    (riff(chunk(b"fmt ", fmt_body(PCM, 0, 8000, 2, block_align=2)), DATA), "zero channels"),
    (riff(chunk(b"fmt ", fmt_body(PCM, 1, 0, 2)), DATA), "zero channels, sample rate"),
    (riff(chunk(b"fmt ", fmt_body(PCM, 1, 8000, 2, block_align=0)), DATA), "block size"),
    (riff(chunk(b"fmt ", fmt_body(PCM, 2, 8000, 2, block_align=3)), DATA),
     "does not divide into 2 channels"),
    (riff(chunk(b"fmt ", fmt_body(PCM, 1, 8000, 2, bits=24)), DATA), "24 bits per sample"),
    (riff(chunk(b"fmt ", fmt_body(PCM, 1, 8000, 2, bits=0)), DATA), "0 bits per sample"),
])
async def test_malformed_headers_are_422(data: bytes, detail: str) -> None:
    with pytest.raises(MalformedWav) as caught:
        await layout_of(data, 3)
    assert caught.value.status == 422
    assert detail in caught.value.detail


@pytest.mark.parametrize(("data", "detail"), [
    (b"RIFX" + b"\x00\x00\x00\x24WAVE" + FMT16 + DATA, "big-endian RIFX"),
    (riff(chunk(b"fmt ", fmt_body(0x0002, 1, 8000, 2, bits=4)), DATA), "Microsoft ADPCM"),
    (riff(chunk(b"fmt ", fmt_body(0x0007, 1, 8000, 1)), DATA), "mu-law (format tag 0x0007)"),
    (riff(chunk(b"fmt ", fmt_body(0x0055, 1, 8000, 1)), DATA), "MPEG Layer III"),
    (riff(chunk(b"fmt ", fmt_body(0x1234, 1, 8000, 2)), DATA), "another codec"),
    (riff(chunk(b"fmt ", fmt_body(PCM, 1, 8000, 2, extensible=True,
                                  subformat=b"\x01\x00" + b"\x11" * 14)), DATA),
     "extensible subformat"),
    (riff(chunk(b"fmt ", fmt_body(0x0007, 1, 8000, 1, extensible=True)), DATA), "mu-law"),
    (riff(chunk(b"fmt ", fmt_body(FLOAT, 1, 8000, 2)), DATA), "16-bit float"),
    (riff(chunk(b"fmt ", fmt_body(PCM, 1, 8000, 8)), DATA), "64-bit integer"),
])
async def test_well_formed_but_not_pcm_is_404(data: bytes, detail: str) -> None:
    with pytest.raises(UnsupportedWav) as caught:
        await layout_of(data)
    assert caught.value.status == 404
    assert caught.value.detail.startswith("Peaks are available for WAV PCM")
    assert detail in caught.value.detail
