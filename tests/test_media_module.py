"""Content types, Content-Disposition and WAV headers."""

from __future__ import annotations

import pytest

from gateway.demo import tone_wav
from gateway.media import content_disposition, content_type, parse_wav_header


@pytest.mark.parametrize(("media_type", "fmt", "mime"), [
    ("audio", "wav", "audio/wav"), ("audio", "webm", "audio/webm"),
    ("video", "webm", "video/webm"), ("audio", "ogg", "audio/ogg"),
    ("audio", "opus", "audio/ogg"), ("audio", "mp3", "audio/mpeg"),
    ("audio", "m4a", "audio/mp4"), ("video", "mp4", "video/mp4"),
])
def test_content_types(media_type: str, fmt: str, mime: str) -> None:
    assert content_type(media_type, fmt) == mime


@pytest.mark.parametrize(("name", "header"), [
    ("42_audio.wav", "inline; filename=\"42_audio.wav\"; filename*=UTF-8''42_audio.wav"),
    ("Réunion été.wav",
     "inline; filename=\"R_union _t_.wav\"; filename*=UTF-8''R%C3%A9union%20%C3%A9t%C3%A9.wav"),
    ('a"b\\c.wav', "inline; filename=\"a_b_c.wav\"; filename*=UTF-8''a%22b%5Cc.wav"),
    ("x\r\nSet-Cookie: y.wav",
     "inline; filename=\"x__Set-Cookie: y.wav\"; filename*=UTF-8''x%0D%0ASet-Cookie%3A%20y.wav"),
    ("100%.wav", "inline; filename=\"100_.wav\"; filename*=UTF-8''100%25.wav"),
])
def test_content_disposition_is_safe(name: str, header: str) -> None:
    assert content_disposition("inline", name) == header
    assert "\r" not in header and "\n" not in header and header.isascii()


def test_wav_header() -> None:
    data = tone_wav(seconds=2.5, sample_rate=16000)
    info = parse_wav_header(data[:1024])
    assert info is not None
    assert (info.sample_rate, info.channels, info.bits_per_sample) == (16000, 1, 16)
    assert info.data_offset == 44
    assert info.duration(len(data)) == 2.5
    assert info.metadata() == {"sample_rate": 16000, "channels": 1, "bits_per_sample": 16}


def test_streamed_wav_with_open_data_size() -> None:
    data = bytearray(tone_wav(seconds=1.0, sample_rate=8000))
    data[40:44] = b"\xff\xff\xff\xff"  # writers that stream set the size afterwards, or never
    info = parse_wav_header(bytes(data[:100]))
    assert info is not None and info.data_size is None
    assert info.duration(len(data)) == 1.0


def test_wav_with_extra_chunks_before_data() -> None:
    data = tone_wav(seconds=1.0, sample_rate=8000)
    extra = b"LIST" + (5).to_bytes(4, "little") + b"hello" + b"\x00"  # odd size: padded
    patched = data[:36] + extra + data[36:]
    info = parse_wav_header(patched)
    assert info is not None and info.data_offset == 44 + len(extra)


@pytest.mark.parametrize("head", [b"", b"RIFF", b"RIFF\x00\x00\x00\x00AVI ", b"x" * 100,
                                  b"RIFF\x24\x00\x00\x00WAVEdata\x00\x00\x00\x00"])
def test_not_wav(head: bytes) -> None:
    assert parse_wav_header(head) is None
