"""GET/HEAD /recordings/{id}/media/{media_id}/raw over real HTTP, byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import struct
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import MultipartReader
from yarl import URL

from gateway.http_range import format_http_date, parse_http_date
from gateway.settings import Settings
from tests.conftest import AiohttpClient, Gateway, local_only, s3_only, start_gateway

pytestmark = pytest.mark.usefixtures("gw")


@pytest.fixture
async def stored(gw: Gateway, blob: bytes) -> tuple[int, str]:
    """(recording id, raw path) of `blob` stored as an mp3 media file of alice."""
    recording_id, media_id = await gw.recording_with_media(blob, fmt="mp3")
    return recording_id, gw.raw_path(recording_id, media_id)


async def test_full_body_and_headers(gw: Gateway, blob: bytes, stored: tuple[int, str]) -> None:
    recording_id, path = stored
    async with gw.client.get(path, headers=gw.h()) as resp:
        assert resp.status == 200
        assert await resp.read() == blob
        headers = resp.headers
    assert headers["Content-Length"] == str(len(blob))
    assert headers["Content-Type"] == "audio/mpeg"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Cache-Control"] == "private"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert re.fullmatch(r'"[0-9A-Fa-fx-]+"', headers["ETag"])  # strong: no W/
    assert parse_http_date(headers["Last-Modified"]) is not None
    assert headers["Content-Disposition"] == (
        f"inline; filename=\"{recording_id}_audio.mp3\"; "
        f"filename*=UTF-8''{recording_id}_audio.mp3"
    )
    assert "Content-Range" not in headers


@pytest.mark.parametrize(("range_header", "start", "end"), [
    ("bytes=0-0", 0, 0),
    ("bytes=0-499", 0, 499),
    ("bytes=1000-", 1000, None),
    ("bytes=-500", -500, None),
    ("bytes=299000-999999", 299_000, None),  # end past EOF is clamped
    ("bytes=-999999", 0, None),  # suffix longer than the file: all of it
    ("bytes=0-", 0, None),  # whole file as a range stays 206 (Safari relies on it)
    ("BYTES=10-19", 10, 19),
    ("bytes=5-9, 7-12", 5, 12),  # overlapping ranges coalesce into one
])
async def test_single_range(
    gw: Gateway, blob: bytes, stored: tuple[int, str], range_header: str, start: int,
    end: int | None,
) -> None:
    expected = blob[start:] if end is None else blob[start:end + 1]
    first = start % len(blob)
    async with gw.client.get(stored[1], headers={**gw.h(), "Range": range_header}) as resp:
        assert resp.status == 206
        assert await resp.read() == expected
        assert resp.headers["Content-Range"] == (
            f"bytes {first}-{first + len(expected) - 1}/{len(blob)}")
        assert resp.headers["Content-Length"] == str(len(expected))
        assert resp.headers["Content-Type"] == "audio/mpeg"


@pytest.mark.parametrize("range_header", ["bytes=300000-", "bytes=400000-500000", "bytes=-0"])
async def test_unsatisfiable_range(
    gw: Gateway, blob: bytes, stored: tuple[int, str], range_header: str
) -> None:
    async with gw.client.get(stored[1], headers={**gw.h(), "Range": range_header}) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == f"bytes */{len(blob)}"
        assert (await resp.json())["detail"] == "Requested range not satisfiable"


@pytest.mark.parametrize("range_header", [
    "bytes=9-1", "items=0-1", "bytes=abc", "bytes 0-1", "bytes=0-1;x",
    "bytes=" + ",".join(["0-1"] * 17),  # more than GATEWAY_MAX_RANGES: ignored
])
async def test_invalid_range_is_ignored(
    gw: Gateway, blob: bytes, stored: tuple[int, str], range_header: str
) -> None:
    async with gw.client.get(stored[1], headers={**gw.h(), "Range": range_header}) as resp:
        assert resp.status == 200
        assert await resp.read() == blob


async def test_multiple_ranges_are_multipart(
    gw: Gateway, blob: bytes, stored: tuple[int, str]
) -> None:
    headers = {**gw.h(), "Range": "bytes=200000-200099, 0-9, -5"}
    parts: list[tuple[str, str, bytes]] = []
    async with gw.client.get(stored[1], headers=headers) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
        length = int(resp.headers["Content-Length"])
        reader = MultipartReader.from_response(resp)
        while (part := await reader.next()) is not None:
            assert not isinstance(part, MultipartReader)
            parts.append((part.headers["Content-Type"], part.headers["Content-Range"],
                          await part.read(decode=False)))
        assert resp.content.total_bytes == length
    size = len(blob)
    assert parts == [  # ascending order, each with its own Content-Range
        ("audio/mpeg", f"bytes 0-9/{size}", blob[0:10]),
        ("audio/mpeg", f"bytes 200000-200099/{size}", blob[200_000:200_100]),
        ("audio/mpeg", f"bytes {size - 5}-{size - 1}/{size}", blob[-5:]),
    ]


async def test_head_sends_get_headers_without_body(
    gw: Gateway, blob: bytes, stored: tuple[int, str]
) -> None:
    async with gw.client.get(stored[1], headers=gw.h()) as get:
        get_headers = get.headers
    for extra in ({}, {"Range": "bytes=0-1"}):  # §14.2: HEAD ignores Range
        async with gw.client.head(stored[1], headers={**gw.h(), **extra}) as head:
            assert head.status == 200
            assert await head.read() == b""
            for name in ("Content-Length", "Content-Type", "ETag", "Last-Modified",
                         "Accept-Ranges", "Content-Disposition", "Cache-Control"):
                assert head.headers[name] == get_headers[name], name


class TestConditionals:
    async def validators(self, gw: Gateway, path: str) -> tuple[str, str]:
        async with gw.client.head(path, headers=gw.h()) as resp:
            return resp.headers["ETag"], resp.headers["Last-Modified"]

    async def test_if_none_match_304(self, gw: Gateway, stored: tuple[int, str]) -> None:
        etag, last_modified = await self.validators(gw, stored[1])
        for method in ("GET", "HEAD"):
            async with gw.client.request(
                method, stored[1], headers={**gw.h(), "If-None-Match": f'"zzz", W/{etag}'}
            ) as resp:
                assert resp.status == 304
                assert await resp.read() == b""
                assert resp.headers["ETag"] == etag
                assert resp.headers["Last-Modified"] == last_modified
                assert resp.headers["Cache-Control"] == "private"
                assert "Content-Length" not in resp.headers

    async def test_if_modified_since(
        self, gw: Gateway, blob: bytes, stored: tuple[int, str]
    ) -> None:
        _, last_modified = await self.validators(gw, stored[1])
        async with gw.client.get(
            stored[1], headers={**gw.h(), "If-Modified-Since": last_modified}
        ) as resp:
            assert resp.status == 304
        earlier = format_http_date(parse_http_date(last_modified) - 1)  # type: ignore[operator]
        async with gw.client.get(
            stored[1], headers={**gw.h(), "If-Modified-Since": earlier}
        ) as resp:
            assert resp.status == 200
            assert await resp.read() == blob

    async def test_if_match_and_if_unmodified_since_412(
        self, gw: Gateway, stored: tuple[int, str]
    ) -> None:
        etag, last_modified = await self.validators(gw, stored[1])
        earlier = format_http_date(parse_http_date(last_modified) - 1)  # type: ignore[operator]
        for headers in ({"If-Match": '"nope"'}, {"If-Match": f"W/{etag}"},
                        {"If-Unmodified-Since": earlier}):
            async with gw.client.get(stored[1], headers={**gw.h(), **headers}) as resp:
                assert resp.status == 412, headers
                assert (await resp.json())["detail"] == "Precondition failed"
        async with gw.client.get(
            stored[1], headers={**gw.h(), "If-Match": etag, "Range": "bytes=0-3"}
        ) as resp:
            assert resp.status == 206

    async def test_if_range(self, gw: Gateway, blob: bytes, stored: tuple[int, str]) -> None:
        etag, last_modified = await self.validators(gw, stored[1])
        cases = [(etag, 206), (last_modified, 206), ('"stale"', 200), (f"W/{etag}", 200)]
        for if_range, status in cases:
            headers = {**gw.h(), "Range": "bytes=10-19", "If-Range": if_range}
            async with gw.client.get(stored[1], headers=headers) as resp:
                assert resp.status == status, if_range
                assert await resp.read() == (blob[10:20] if status == 206 else blob)


async def test_empty_media_is_refused(gw: Gateway) -> None:
    recording = await gw.create_recording()
    async with gw.client.post(f"/recordings/{recording['id']}/media?format=mp3", data=b"",
                              headers=gw.h()) as resp:
        assert resp.status == 422
        assert (await resp.json())["detail"] == "The upload is empty"


def _open_descriptors_of(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            continue
    return count


@local_only
async def test_client_disconnect_releases_the_file(gw: Gateway, tmp_path: Path) -> None:
    big = os.urandom(1024 * 1024) * 48  # larger than any socket buffer
    recording_id, media_id = await gw.recording_with_media(big, fmt="mp3")
    stored_file = next((gw.settings.local_storage_dir / "recordings").rglob("*.mp3"))
    assert _open_descriptors_of(stored_file) == 0
    host, port = gw.client.host, gw.client.port
    for _ in range(5):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"GET {gw.raw_path(recording_id, media_id)} HTTP/1.1\r\nHost: x\r\n"
            f"X-API-Key: {gw.keys['alice']}\r\n\r\n".encode()
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        await reader.readexactly(64 * 1024)
        assert _open_descriptors_of(stored_file) == 1  # mid-stream: the file is open
        writer.transport.abort()  # vanish without a FIN handshake
        await writer.wait_closed()
        for _ in range(200):
            if _open_descriptors_of(stored_file) == 0:
                break
            await asyncio.sleep(0.01)
        assert _open_descriptors_of(stored_file) == 0
    async with gw.client.get(gw.raw_path(recording_id, media_id), headers=gw.h()) as resp:
        assert resp.status == 200  # and the gateway still serves
        assert len(await resp.read()) == len(big)


async def test_access_log_counts_the_bytes_sent(
    gw: Gateway, blob: bytes, stored: tuple[int, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="aiohttp.access")
    # A new connection: aiohttp decides per connection whether access logging is on.
    async with aiohttp.ClientSession() as session, session.get(
        gw.client.make_url(stored[1]), headers={**gw.h(), "Range": "bytes=100-"}
    ) as resp:
        assert len(await resp.read()) == len(blob) - 100
    for _ in range(100):
        lines = [r.getMessage() for r in caplog.records if stored[1] in r.getMessage()]
        if lines:
            break
        await asyncio.sleep(0.01)
    # Common log format: ... "GET path HTTP/1.1" 206 <bytes> ...; headers plus the body.
    match = re.search(r'" 206 (\d+) ', lines[0])
    assert match is not None and int(match[1]) > len(blob) - 100


@pytest.mark.parametrize("cancel_on_disconnect", [False, True])
async def test_client_gone_before_the_answer_is_not_an_error(
    aiohttp_client: AiohttpClient, settings: Settings, blob: bytes,
    caplog: pytest.LogCaptureFixture, cancel_on_disconnect: bool,
) -> None:
    """Neither an error in the log nor a leaked file, whether or not the handler is
    cancelled when its client leaves (it is not in `gateway serve`; it is at shutdown)."""
    gw = await start_gateway(aiohttp_client, settings, cancel_on_disconnect=cancel_on_disconnect)
    stored = (0, gw.raw_path(*await gw.recording_with_media(blob, fmt="mp3")))
    caplog.set_level("DEBUG")
    for _ in range(30):
        _, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
        writer.write(f"GET {stored[1]} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-65535\r\n"
                     f"X-API-Key: {gw.keys['alice']}\r\n\r\n".encode())
        await writer.drain()
        writer.transport.abort()  # gone while the gateway opens the file
        await writer.wait_closed()
    await asyncio.sleep(0.2)
    async with gw.client.get(stored[1], headers=gw.h()) as resp:
        assert resp.status == 200
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert errors == []


def _connections_to(port: int) -> int:
    """Established TCP connections from anything on this host to `port`."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    count += 1
    return count


@s3_only
async def test_client_disconnect_returns_the_storage_connection(gw: Gateway) -> None:
    big = os.urandom(1024 * 1024) * 12  # several MiB: the store cannot push it all at once
    recording_id, media_id = await gw.recording_with_media(big, fmt="mp3")
    moto_port = URL(gw.settings.s3_endpoint).port
    assert moto_port is not None
    host, port = gw.client.host, gw.client.port
    request = (f"GET {gw.raw_path(recording_id, media_id)} HTTP/1.1\r\nHost: x\r\n"
               f"X-API-Key: {gw.keys['alice']}\r\n\r\n").encode()
    before = _connections_to(moto_port)
    for _ in range(200):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        await reader.readexactly(32 * 1024)
        writer.transport.abort()
        await writer.wait_closed()
    for _ in range(300):
        if _connections_to(moto_port) <= before + 2:
            break
        await asyncio.sleep(0.02)
    # Every aborted stream gave its storage connection back (closed, not leaked).
    assert _connections_to(moto_port) <= before + 2
    async with gw.client.get(gw.raw_path(recording_id, media_id), headers=gw.h()) as resp:
        assert await resp.read() == big


def _data_segments_received(sock: socket.socket) -> int:
    """TCP_INFO's tcpi_data_segs_in (Linux 4.6): segments that carried data to `sock`."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    (segments,) = struct.unpack_from("=I", info, 152)
    return int(segments)


@s3_only
@pytest.mark.skipif(sys.platform != "linux", reason="counts segments with Linux's TCP_INFO")
async def test_a_small_range_leaves_in_one_packet_with_its_head(
        gw: Gateway, blob: bytes, stored: tuple[int, str]) -> None:
    """The status line and headers wait for the body's first bytes and go out with them:
    a small range reaches the client in one segment, which wakes it once, not twice."""
    _, path = stored
    loop = asyncio.get_running_loop()
    with socket.create_connection((gw.client.host, gw.client.port)) as sock:
        sock.setblocking(False)
        await loop.sock_sendall(sock, (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {gw.keys['alice']}\r\n"
            "Range: bytes=1000-1999\r\n\r\n").encode())
        answer = b""
        while not answer.endswith(blob[1000:2000]):
            piece = await loop.sock_recv(sock, 65536)
            assert piece, f"connection closed after {answer!r}"
            answer += piece
        assert answer.startswith(b"HTTP/1.1 206 ")
        assert b"\r\nContent-Range: bytes 1000-1999/300000\r\n" in answer
        assert _data_segments_received(sock) == 1
