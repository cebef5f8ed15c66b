"""GET and HEAD .../raw over real HTTP, on each storage, for any range or conditional headers.

One gateway per storage serves every example: a worker thread sends each request on a
fresh socket, exactly as generated (repeated fields, odd spellings, obs-text bytes),
reads the answer to EOF and checks it against tests/rfc9110.py: never a 5xx, a status
and headers RFC 9110 allows, a Content-Length equal to the body, and every body byte
equal to the file's byte at that offset (multipart/byteranges parts included).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections import Counter
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Gateway
from tests.header_strategies import field_lines, property_settings
from tests.rfc9110 import (
    Reading,
    Resource,
    combine,
    content_range,
    date_readings,
    parse_byteranges,
    partial_problems,
    readings,
)

# An odd size, so that the last word is cut short; every aligned 4-byte word differs
# from every other, so a body read from the wrong offset cannot pass.
SIZE = 20_011
EXAMPLES = 250
RANGE_EXAMPLES = 250
# aiohttp's default limit on one field value, which `gateway serve` keeps.
MAX_FIELD_SIZE = 8190


def pattern(size: int) -> bytes:
    words = b"".join(struct.pack(">I", i * 2_654_435_761 % 2**32) for i in range(size // 4 + 1))
    return words[:size]


@dataclass
class RawResponse:
    status: int
    headers: dict[str, list[str]]  # lowercase names, every line kept
    body: bytes  # everything after the header section, up to the end of the connection

    def header(self, name: str) -> str | None:
        values = self.headers.get(name, [])
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


def exchange(host: str, port: int, request: bytes) -> RawResponse:
    """One request on its own connection (Connection: close); the answer read to EOF."""
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, f"no end of the header section in {data[:200]!r}"
    status_line, *field_lines_ = head.decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version in ("HTTP/1.1", "HTTP/1.0"), status_line
    headers: dict[str, list[str]] = {}
    for line in field_lines_:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip(" \t"))
    return RawResponse(int(status), headers, body)


def build_request(method: str, path: str, api_key: str, lines: list[tuple[str, str]]) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: gateway\r\nX-API-Key: {api_key}\r\n"
    fields = b"".join(f"{name}: ".encode() + value.encode() + b"\r\n" for name, value in lines)
    return head.encode() + fields + b"Connection: close\r\n\r\n"


def check_response(
    method: str, lines: list[tuple[str, str]], resp: RawResponse, res: Resource,
    content: bytes, content_type: str, max_ranges: int,
) -> str:
    """Assert that `resp` is an answer RFC 9110 allows; return a label for statistics."""
    assert resp.status < 500, (resp.status, resp.body[:300])
    # The gateway sees the bytes; the oracle reads them as octets (obs-text stays opaque).
    wire = [(name, value.encode().decode("latin-1")) for name, value in lines]
    longest = max((len(value.encode().strip(b" \t")) for _, value in lines), default=0)
    if longest > MAX_FIELD_SIZE:
        # aiohttp refuses the request before the gateway sees it.
        assert resp.status in (400, 431), resp.status
        return "field too large"
    allowed = readings(method, combine(wire), res, max_ranges=max_ranges)
    assert resp.status in {r.status for r in allowed}, (
        f"{resp.status} where RFC 9110 allows {sorted(r.status for r in allowed)}")
    assert resp.header("date") is not None  # §6.6.1: an origin server with a clock
    length = resp.header("content-length")
    if method == "HEAD" or resp.status == 304:
        assert resp.body == b""  # §9.3.2 and §15.4.5: no content
    else:
        assert resp.header("transfer-encoding") is None
        assert length is not None and int(length) == len(resp.body)
    if resp.status in (200, 206, 304):
        # §15.3.7, §15.4.5: the validators and Cache-Control of the 200 go out again.
        assert resp.header("etag") == res.etag
        assert resp.header("cache-control") == "private"
    if resp.status == 200:
        assert length == str(res.size)  # HEAD: the length GET would send (§9.3.2)
        assert resp.header("accept-ranges") == "bytes"
        assert resp.header("content-type") == content_type
        assert resp.header("content-range") is None
        assert method == "HEAD" or resp.body == content
        return "200"
    if resp.status == 206:
        return _check_partial(resp, allowed, res, content, content_type)
    if resp.status == 304:
        assert length in (None, str(res.size))  # §8.6: if sent, the 200's length
        return "304"
    assert resp.header("content-type") == "application/json; charset=utf-8"
    if method != "HEAD":
        assert isinstance(json.loads(resp.body)["detail"], str)
    if resp.status == 416:
        assert resp.header("content-range") == f"bytes */{res.size}"  # §14.4
    return str(resp.status)


def _check_partial(resp: RawResponse, allowed: set[Reading], res: Resource, content: bytes,
                   content_type: str) -> str:
    assert resp.header("accept-ranges") == "bytes"
    media_type = resp.header("content-type") or ""
    parts: list[tuple[int, int]] = []
    if media_type.startswith("multipart/byteranges"):
        # §15.3.7.2: no Content-Range in the header section; one in each part.
        assert resp.header("content-range") is None
        boundary = media_type.partition("boundary=")[2].strip('"')
        assert boundary, media_type
        for part in parse_byteranges(resp.body, boundary):
            first, last, size = content_range(part.headers["content-range"])
            assert size == res.size
            assert part.headers.get("content-type") == content_type
            assert part.data == content[first:last + 1], f"part {first}-{last}: wrong bytes"
            parts.append((first, last))
        label = "206 multipart"
    else:
        assert media_type == content_type
        first, last, size = content_range(resp.header("content-range") or "")
        assert size == res.size
        assert resp.body == content[first:last + 1], f"{first}-{last}: wrong bytes"
        parts.append((first, last))
        label = "206"
    multipart = label == "206 multipart"
    problems = [partial_problems(parts, multipart, r, res.size)
                for r in allowed if r.status == 206]
    assert any(not p for p in problems), problems
    return label


async def test_raw_answers_only_what_rfc9110_allows(gw: Gateway) -> None:
    content = pattern(SIZE)
    recording_id, media_id = await gw.recording_with_media(content, fmt="mp3")
    path = gw.raw_path(recording_id, media_id)
    async with gw.client.get(path, headers=gw.h()) as resp:
        assert resp.status == 200
        assert await resp.read() == content
        etag, content_type = resp.headers["ETag"], resp.headers["Content-Type"]
        (last_modified,) = date_readings(resp.headers["Last-Modified"])
    assert last_modified is not None
    res = Resource(SIZE, etag, last_modified)
    host, port, api_key = gw.client.host, gw.client.port, gw.keys["alice"]
    assert port is not None
    seen: Counter[str] = Counter()

    def one_request(method: str, lines: list[tuple[str, str]]) -> None:
        response = exchange(host, port, build_request(method, path, api_key, lines))
        seen[check_response(method, lines, response, res, content, content_type,
                            gw.settings.max_ranges)] += 1

    methods = st.sampled_from(["GET", "GET", "GET", "HEAD"])
    every_field = property_settings(EXAMPLES)(
        given(method=methods, lines=field_lines(res, wire=True))(one_request))
    # Range alone, the request every player sends, gets examples of its own.
    range_alone = property_settings(RANGE_EXAMPLES)(
        given(method=st.just("GET"), lines=field_lines(res, wire=True, only=("range",)))(
            one_request))
    await asyncio.to_thread(every_field)
    await asyncio.to_thread(range_alone)
    # The examples reached every kind of answer, not only the easy ones.
    assert {"200", "206", "206 multipart", "304", "412", "416"} <= set(seen), seen
    print(f"{gw.backend}: {sum(seen.values())} requests, {dict(seen)}")
