"""Object storage that fails: moto's S3 behind a proxy that breaks exchanges on purpose.

Before the status line is sent, a store failure is a JSON error (502, 503, 504).
After it, the only signal left is to cut the client's connection: the client sees a
short body, never a hang, and the failure is logged. Every bound on time here is
relative to GATEWAY_STORAGE_TIMEOUT (`TIMEOUT`), plus an allowance for a loaded
machine: a few seconds, and ten times a healthy read measured in the same test. Lower
bounds show that the gateway did wait for the store.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.settings import Settings
from tests.conftest import AiohttpClient, Gateway, s3_only, s3_settings, start_gateway
from tests.fault_proxy import Fault, FaultProxy, http_answer, until
from tests.storage_probe import S3Probe

pytestmark = s3_only

TIMEOUT = 1.0
"""GATEWAY_STORAGE_TIMEOUT in these tests: each connect, and each wait for data."""
ATTEMPTS = 2
"""botocore's tries per call (standard mode); its backoff before the second is < 1 s."""
BACKOFF = 1.0
SLACK = 4.0
"""Seconds allowed for a loaded machine on top of what the timeouts account for."""
KEY_PART = "/recordings/"
"""A substring of every object request's target (and of no bucket request)."""
STREAM_FAILED = "failed after the headers were sent"
MIB = 1024 * 1024


@dataclass
class Stored:
    gw: Gateway
    proxy: FaultProxy
    path: str
    data: bytes
    baseline: float  # seconds a healthy read of `data` took

    def record(self, name: str, value: float) -> None:
        """A figure for docs/reliability.md: `pytest -rP` shows it with the test's name."""
        print(f"{name}={value:.3f}")

    def within(self, waits: float) -> float:
        """An upper bound: `waits` seconds of timeouts, plus the loaded machine's share."""
        return waits + SLACK + 10 * self.baseline


@dataclass
class Outcome:
    """What a client saw: status, headers, the body it got, and how the body ended."""

    status: int
    headers: dict[str, str]
    body: bytes
    error: BaseException | None
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


async def fetch(gw: Gateway, path: str, **headers: str) -> Outcome:
    """GET as a player would, reading the body to its end or to the connection's end."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = bytearray()
    error: BaseException | None = None
    async with gw.client.get(path, headers={**gw.h(), **headers}) as resp:
        try:
            async for piece in resp.content.iter_any():
                body += piece
        except aiohttp.ClientError as exc:
            error = exc
        return Outcome(resp.status, dict(resp.headers), bytes(body), error,
                       loop.time() - started)


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[FaultProxy]:
    url = URL(moto_endpoint)
    assert url.host is not None and url.port is not None
    proxy = await FaultProxy.start(url.host, url.port)
    yield proxy
    await proxy.close()


@pytest.fixture
async def stored(aiohttp_client: AiohttpClient, settings: Settings, proxy: FaultProxy,
                 moto_endpoint: str, s3_bucket: str, blob: bytes) -> Stored:
    """An mp3 of alice's, uploaded through the proxy, HEAD and GET asked on every read."""
    configured = s3_settings(settings, proxy.url, s3_bucket).with_changes(
        storage_timeout=TIMEOUT, cache_ttl=0)
    gw = await start_gateway(aiohttp_client, configured)
    # The probe (a blocking boto3 client) must not go through the proxy, which runs on
    # this very event loop.
    gw.probe = S3Probe(moto_endpoint, s3_bucket)
    rid, mid = await gw.recording_with_media(blob, fmt="mp3")
    healthy = await fetch(gw, gw.raw_path(rid, mid))
    assert healthy.status == 200 and healthy.body == blob and healthy.error is None
    stored = Stored(gw, proxy, gw.raw_path(rid, mid), blob, healthy.seconds)
    stored.record("healthy_seconds", healthy.seconds)
    return stored


def stream_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "gateway.streaming" and STREAM_FAILED in r.getMessage()]


async def assert_recovers(s: Stored) -> None:
    """With the fault gone, the same request works, and no connection to the store stays busy."""
    s.proxy.clear()
    again = await fetch(s.gw, s.path)
    assert again.status == 200 and again.body == s.data and again.error is None
    assert await until(lambda: s.proxy.open_connections == 0), (
        f"{s.proxy.open_connections} connections to the store still open")


async def spliced_bytes(gw: Gateway) -> float:
    """Media bytes the gateway relayed by splice(2) (gateway/storage/splice.py)."""
    async with gw.client.get("/metrics") as resp:
        text = await resp.text()
    return sum(float(row.rsplit(" ", 1)[1]) for row in text.splitlines()
               if row.startswith("gateway_media_spliced_bytes_total{")
               and 'storage="default"' in row)


async def broken_streams(gw: Gateway) -> float:
    """The gateway's own count of bodies that broke while sent (gateway/metrics.py)."""
    async with gw.client.get("/metrics") as resp:
        text = await resp.text()
    return sum(float(row.rsplit(" ", 1)[1]) for row in text.splitlines()
               if row.startswith("gateway_storage_errors_total{")
               and 'storage="default"' in row and 'operation="stream"' in row)


class TestWhatTheStoreIsAsked:
    """One GET per read, for exactly the bytes to send, tied to the announced validators."""

    def last_get(self, stored: Stored) -> dict[str, str]:
        gets = [h for h in stored.proxy.heads
                if h.start.startswith("GET ") and KEY_PART in h.start]
        return gets[-1].headers

    @pytest.mark.parametrize(("client_range", "store_range"), [
        (None, None),  # the whole object: a plain GET, as a download is
        ("bytes=0-", None),  # a 206 to the client (Safari needs it), still all of it
        ("bytes=10-4009", "bytes=10-4009"),
        ("bytes=-1000", "bytes=299000-299999"),  # normalized to the object's size
    ])
    async def test_the_range_and_if_match(
        self, stored: Stored, client_range: str | None, store_range: str | None
    ) -> None:
        seen = await fetch(stored.gw, stored.path,
                           **({"Range": client_range} if client_range else {}))
        assert seen.error is None and seen.status == (206 if client_range else 200)
        asked = self.last_get(stored)
        assert asked.get("range") == store_range
        etag = {k.lower(): v for k, v in seen.headers.items()}["etag"]
        assert asked.get("if-match") == etag
        first, last = (0, len(stored.data) - 1) if store_range is None else map(
            int, store_range.removeprefix("bytes=").split("-"))
        assert seen.body == stored.data[first:last + 1]


class TestAfterTheHeaders:
    """The status line is out: the client must see the body end early, at once."""

    @pytest.mark.parametrize("fault", [Fault.CUT_BODY, Fault.RESET_BODY])
    async def test_store_drops_the_connection_mid_body(
        self, stored: Stored, caplog: pytest.LogCaptureFixture, fault: Fault
    ) -> None:
        stored.proxy.add(fault, method="GET", path=KEY_PART, after=100_000)
        seen = await fetch(stored.gw, stored.path)
        stored.record("seconds", seen.seconds)
        assert stored.proxy.faults == [(fault, "GET", stored.proxy.requests[-1][1])]
        assert seen.status == 200
        assert int(seen.headers["Content-Length"]) == len(stored.data)
        assert isinstance(seen.error, aiohttp.ClientPayloadError)  # short body, not a hang
        assert 0 < len(seen.body) < len(stored.data)
        assert seen.body == stored.data[: len(seen.body)]  # what came is right
        # Nothing to wait for: the store is gone, so is the client's connection.
        assert seen.seconds < stored.within(TIMEOUT)
        assert len(stream_failures(caplog)) == 1
        assert stream_failures(caplog)[0].levelno == logging.ERROR
        assert await broken_streams(stored.gw) == 1  # and counted
        await assert_recovers(stored)

    async def test_store_sends_more_than_the_range(
        self, stored: Stored, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A store (or a cache before it) whose body runs past the range it announced:
        nothing past the range reaches the client, whose connection is cut instead."""
        stored.proxy.add(Fault.LONG_BODY, method="GET", path=KEY_PART, after=1000)
        seen = await fetch(stored.gw, stored.path, Range="bytes=10-4009")
        assert stored.proxy.faults == [(Fault.LONG_BODY, "GET", stored.proxy.requests[-1][1])]
        assert seen.status == 206
        assert int(seen.headers["Content-Length"]) == 4000
        assert isinstance(seen.error, aiohttp.ClientPayloadError)
        assert seen.body == stored.data[10:10 + len(seen.body)]
        assert len(stream_failures(caplog)) == 1
        await assert_recovers(stored)

    async def test_store_stalls_mid_body(
        self, stored: Stored, caplog: pytest.LogCaptureFixture
    ) -> None:
        stored.proxy.add(Fault.STALL_BODY, method="GET", path=KEY_PART, after=100_000)
        seen = await fetch(stored.gw, stored.path)
        stored.record("seconds", seen.seconds)
        assert seen.status == 200
        assert isinstance(seen.error, aiohttp.ClientPayloadError)
        assert 0 < len(seen.body) < len(stored.data)
        assert seen.body == stored.data[: len(seen.body)]
        # Cut after one storage timeout of silence: not before, and not much after.
        assert TIMEOUT * 0.9 <= seen.seconds < stored.within(TIMEOUT)
        assert len(stream_failures(caplog)) == 1
        await assert_recovers(stored)

    async def test_second_part_of_a_multipart_answer_fails(
        self, stored: Stored, caplog: pytest.LogCaptureFixture
    ) -> None:
        # Each part is its own GET from the store; the first passes, the second fails
        # after the 206 and the first part have gone out.
        stored.proxy.add(Fault.PASS, method="GET", path=KEY_PART, times=1)
        stored.proxy.add(Fault.REFUSE_ANSWER, method="GET", path=KEY_PART)
        seen = await fetch(stored.gw, stored.path, Range="bytes=0-9, 200000-200009")
        stored.record("seconds", seen.seconds)
        assert seen.status == 206
        assert seen.headers["Content-Type"].startswith("multipart/byteranges")
        assert isinstance(seen.error, aiohttp.ClientPayloadError)
        assert stored.data[:10] in seen.body and stored.data[200_000:200_010] not in seen.body
        assert seen.seconds < stored.within(TIMEOUT)
        assert len(stream_failures(caplog)) == 1
        await assert_recovers(stored)


class TestDuringTheZeroCopyRelay:
    """The same faults while a large range goes from the store's socket to the client's
    by splice(2) (gateway/storage/splice.py), past the gateway's own buffers."""

    @pytest.fixture
    def blob(self) -> bytes:
        return os.urandom(3 * MIB)  # past the first socket read, 1 MiB or more remains

    async def test_whole_objects_and_ranges_go_by_splice_and_arrive_whole(
            self, stored: Stored) -> None:
        spliced_before = await spliced_bytes(stored.gw)
        assert spliced_before > 0  # the fixture's healthy read
        for first, last in ((0, len(stored.data) - 1), (1, 2 * MIB + 7), (MIB // 3, None)):
            spec = f"bytes={first}-{'' if last is None else last}"
            seen = await fetch(stored.gw, stored.path, Range=spec)
            end = len(stored.data) if last is None else last + 1
            assert seen.status == 206 and seen.error is None, spec
            assert seen.body == stored.data[first:end], spec
        # Two large parts of a multipart answer, each its own GET and relay, between
        # part heads written the ordinary way.
        seen = await fetch(stored.gw, stored.path, Range=f"bytes=5-{MIB + 300_000},"
                                                         f"{MIB + 400_000}-")
        assert seen.status == 206 and seen.error is None
        boundary = seen.headers["Content-Type"].split("boundary=", 1)[1]
        parts = seen.body.split(f"--{boundary}".encode())
        assert len(parts) == 4 and parts[3] == b"--\r\n"
        assert parts[1].endswith(b"\r\n\r\n" + stored.data[5:MIB + 300_001] + b"\r\n")
        assert parts[2].endswith(b"\r\n\r\n" + stored.data[MIB + 400_000:] + b"\r\n")
        assert await spliced_bytes(stored.gw) > spliced_before + 6 * MIB
        assert await until(lambda: stored.proxy.open_connections == 0)

    @pytest.mark.parametrize("fault", [Fault.CUT_BODY, Fault.RESET_BODY])
    async def test_store_drops_the_connection_mid_relay(
        self, stored: Stored, caplog: pytest.LogCaptureFixture, fault: Fault
    ) -> None:
        stored.proxy.add(fault, method="GET", path=KEY_PART, after=2 * MIB)
        spliced_before = await spliced_bytes(stored.gw)
        seen = await fetch(stored.gw, stored.path)
        assert seen.status == 200
        assert isinstance(seen.error, aiohttp.ClientPayloadError)
        assert MIB < len(seen.body) < len(stored.data)
        assert seen.body == stored.data[: len(seen.body)]
        assert seen.seconds < stored.within(TIMEOUT)
        assert len(stream_failures(caplog)) == 1
        assert stream_failures(caplog)[0].levelno == logging.ERROR
        assert await broken_streams(stored.gw) == 1
        assert await spliced_bytes(stored.gw) > spliced_before
        await assert_recovers(stored)

    async def test_store_stalls_mid_relay(
        self, stored: Stored, caplog: pytest.LogCaptureFixture
    ) -> None:
        stored.proxy.add(Fault.STALL_BODY, method="GET", path=KEY_PART, after=2 * MIB)
        seen = await fetch(stored.gw, stored.path)
        assert seen.status == 200
        assert isinstance(seen.error, aiohttp.ClientPayloadError)
        assert MIB < len(seen.body) < len(stored.data)
        assert seen.body == stored.data[: len(seen.body)]
        assert TIMEOUT * 0.9 <= seen.seconds < stored.within(TIMEOUT)
        assert len(stream_failures(caplog)) == 1
        await assert_recovers(stored)

    async def test_client_that_vanishes_mid_relay_frees_the_store_connection(
            self, stored: Stored) -> None:
        stored.proxy.add(Fault.TRICKLE, method="GET", path=KEY_PART, piece=256 * 1024,
                         delay=0.05)  # still sending when the client goes
        for _ in range(5):
            reader, writer = await asyncio.open_connection(stored.gw.client.host,
                                                           stored.gw.client.port)
            writer.write(f"GET {stored.path} HTTP/1.1\r\nHost: x\r\n"
                         f"X-API-Key: {stored.gw.keys['alice']}\r\n\r\n".encode())
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            await reader.readexactly(MIB)
            writer.transport.abort()
            await writer.wait_closed()
        assert await until(lambda: stored.proxy.open_connections == 0), (
            f"{stored.proxy.open_connections} connections to the store still open")
        assert await broken_streams(stored.gw) == 0  # the client left: not a store failure
        await assert_recovers(stored)


class TestBeforeTheFirstByte:
    """Every failure before the status line is a JSON error with the right status."""

    async def test_store_never_answers_the_get(self, stored: Stored) -> None:
        stored.proxy.add(Fault.HANG, method="GET", path=KEY_PART)
        seen = await fetch(stored.gw, stored.path)
        stored.record("seconds", seen.seconds)
        assert seen.status == 504
        assert seen.json() == {"detail": "Storage 'default' did not answer in time"}
        # One ranged GET, no retry: one timeout.
        assert TIMEOUT * 0.9 <= seen.seconds < stored.within(TIMEOUT)
        await assert_recovers(stored)

    async def test_store_never_answers_the_head(self, stored: Stored) -> None:
        stored.proxy.add(Fault.HANG, method="HEAD", path=KEY_PART)
        seen = await fetch(stored.gw, stored.path)
        stored.record("seconds", seen.seconds)
        assert seen.status == 504
        assert seen.json() == {"detail": "Storage 'default' did not answer in time"}
        assert TIMEOUT * 0.9 <= seen.seconds < stored.within(ATTEMPTS * TIMEOUT + BACKOFF)
        assert [f[0] for f in stored.proxy.faults] == [Fault.HANG] * ATTEMPTS
        await assert_recovers(stored)

    @pytest.mark.parametrize("fault", [Fault.REFUSE_ANSWER, Fault.RESET])
    async def test_store_drops_the_get_before_answering(self, stored: Stored,
                                                        fault: Fault) -> None:
        stored.proxy.add(fault, method="GET", path=KEY_PART)
        seen = await fetch(stored.gw, stored.path)
        stored.record("seconds", seen.seconds)
        assert seen.status == 502
        detail = seen.json()["detail"]
        assert detail.startswith("Storage 'default' is unreachable (")
        assert seen.seconds < stored.within(TIMEOUT)
        await assert_recovers(stored)

    @pytest.mark.parametrize(("code", "status", "detail"), [
        (500, 502, "Storage 'default' answered InternalError: HTTP 500"),
        (503, 503, "Storage 'default' is throttling requests; retry"),
    ])
    async def test_store_answers_an_error(self, stored: Stored, code: int, status: int,
                                          detail: str) -> None:
        xml = {500: b"<Error><Code>InternalError</Code><Message>boom</Message></Error>",
               503: b"<Error><Code>SlowDown</Code><Message>slow</Message></Error>"}[code]
        stored.proxy.add(Fault.ANSWER, method="GET", path=KEY_PART,
                         answer=http_answer(code, xml, content_type="application/xml"))
        seen = await fetch(stored.gw, stored.path)
        stored.record("seconds", seen.seconds)
        assert seen.status == status
        assert seen.json() == {"detail": detail}
        await assert_recovers(stored)

    async def test_store_answers_another_range_than_asked(self, stored: Stored) -> None:
        # A store, or a cache in front of it, that ignores the range it was asked for
        # and answers another one of the same length: the bytes would be wrong under the
        # right headers. It is a broken answer: 502.
        wrong = stored.data[:100]
        stored.proxy.add(Fault.ANSWER, method="GET", path=KEY_PART, answer=(
            b"HTTP/1.1 206 Partial Content\r\nContent-Type: audio/mpeg\r\n"
            b"Content-Range: bytes 0-99/%d\r\nContent-Length: 100\r\n"
            b"Connection: close\r\n\r\n" % len(stored.data) + wrong))
        seen = await fetch(stored.gw, stored.path, Range="bytes=1000-1099")
        stored.record("seconds", seen.seconds)
        assert seen.status == 502
        assert seen.json() == {
            "detail": "Storage 'default' answered another range than the one asked for"}
        await assert_recovers(stored)

    async def test_store_refuses_connections_then_comes_back(self, stored: Stored) -> None:
        await stored.proxy.refuse()
        seen = await fetch(stored.gw, stored.path)
        stored.record("seconds", seen.seconds)
        assert seen.status == 502
        assert seen.json()["detail"].startswith("Storage 'default' is unreachable (")
        # Refused at once, tried twice: the backoff, not the timeout, bounds it.
        assert seen.seconds < stored.within(ATTEMPTS * TIMEOUT + BACKOFF)
        async with stored.gw.client.get("/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["checks"]["storage:default"] == "unavailable"
        await stored.proxy.listen()
        await assert_recovers(stored)
        async with stored.gw.client.get("/readyz") as resp:
            assert resp.status == 200


class TestSlowButInTime:
    async def test_slow_answers_within_the_timeout_play_whole(self, stored: Stored) -> None:
        # Each wait is shorter than the timeout, the whole read much longer: the timeout
        # bounds silence, not the length of a stream (a film takes hours to play).
        stored.proxy.add(Fault.DELAY, method="HEAD", path=KEY_PART, delay=TIMEOUT / 2)
        stored.proxy.add(Fault.TRICKLE, method="GET", path=KEY_PART, piece=32 * 1024,
                         delay=TIMEOUT / 4)
        seen = await fetch(stored.gw, stored.path)
        stored.record("seconds", seen.seconds)
        assert seen.status == 200 and seen.error is None
        assert seen.body == stored.data
        assert seen.seconds > TIMEOUT  # the store took longer than one timeout in all
        await assert_recovers(stored)


class TestUploads:
    """A store that fails during an upload: the answer is an error, and nothing is kept;
    a store that did its part but whose answer was lost: the upload counts."""

    async def media_files(self, s: Stored, rid: int) -> list[dict[str, Any]]:
        async with s.gw.client.get(f"/recordings/{rid}", headers=s.gw.h()) as resp:
            files: list[dict[str, Any]] = (await resp.json())["media_files"]
            return files

    async def upload(self, s: Stored, rid: int, data: bytes) -> tuple[int, dict[str, Any]]:
        async with s.gw.client.post(f"/recordings/{rid}/media", params={"format": "mp3"},
                                    data=io.BytesIO(data), headers=s.gw.h()) as resp:
            body: dict[str, Any] = await resp.json()
            return resp.status, body

    async def assert_nothing_kept(self, s: Stored, rid: int) -> None:
        kept = [o for o in s.gw.probe.objects() if f"/{rid}/" in o]
        assert kept == []  # unfinished multipart uploads included
        assert await self.media_files(s, rid) == []

    @pytest.mark.parametrize(("size", "method", "path"), [
        (100_000, "PUT", KEY_PART),  # one PUT
        (6 * 1024 * 1024, "POST", "uploadId="),  # the multipart upload's completion
    ])
    async def test_lost_answer_after_the_store_kept_the_object(
        self, stored: Stored, size: int, method: str, path: str
    ) -> None:
        # The store keeps the object and the answer never arrives; botocore tries again
        # and meets the object its first try wrote (412 under If-None-Match). That is
        # this upload's own object: 201, not "already exists", and nothing orphaned.
        rid = (await stored.gw.create_recording())["id"]
        data = bytes(range(256)) * (size // 256)
        stored.proxy.add(Fault.DROP_ANSWER, method=method, path=path, times=1)
        status, body = await self.upload(stored, rid, data)
        assert [f[0] for f in stored.proxy.faults] == [Fault.DROP_ANSWER]
        assert status == 201, body
        assert body["file_size_bytes"] == len(data)
        assert [m["id"] for m in await self.media_files(stored, rid)] == [body["id"]]
        async with stored.gw.client.get(stored.gw.raw_path(rid, body["id"]),
                                        headers=stored.gw.h()) as resp:
            assert await resp.read() == data
        # An object some other writer put under a recording's key is still a conflict
        # (412 from the store, and not this upload's own): 409, and it stays.
        stored.proxy.clear()
        other = await stored.gw.create_recording()
        key = f"recordings/1/{other['id']}/{other['session_uid']}.mp3"
        stored.gw.probe.put(key, b"theirs")
        status, body = await self.upload(stored, other["id"], data[:1000])
        assert status == 409
        assert key in stored.gw.probe.objects()

    @pytest.mark.parametrize(("size", "path"), [
        (100_000, KEY_PART),  # one PUT
        (11 * 1024 * 1024, "partNumber=2"),  # the second part of three
    ])
    async def test_store_resets_the_upload(self, stored: Stored, size: int, path: str) -> None:
        rid = (await stored.gw.create_recording())["id"]
        stored.proxy.add(Fault.RESET, method="PUT", path=path)
        status, body = await self.upload(stored, rid, b"u" * size)
        assert status == 502
        assert body["detail"].startswith("Storage 'default' is unreachable (")
        # Tried again, but not forever: aiohttp repeats an idempotent request once on a
        # reset connection, within each of botocore's attempts.
        assert ATTEMPTS <= len(stored.proxy.faults) <= 2 * ATTEMPTS
        await self.assert_nothing_kept(stored, rid)

    @pytest.mark.parametrize(("size", "path"), [
        (100_000, KEY_PART),
        (6 * 1024 * 1024, "partNumber=1"),
    ])
    async def test_store_takes_the_upload_and_never_answers(
        self, stored: Stored, size: int, path: str
    ) -> None:
        rid = (await stored.gw.create_recording())["id"]
        stored.proxy.add(Fault.HANG, method="PUT", path=path)
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, body = await self.upload(stored, rid, b"u" * size)
        seconds = loop.time() - started
        stored.record("seconds", seconds)
        assert status == 504
        assert body == {"detail": "Storage 'default' did not answer in time"}
        # Each try sends its body, then waits one timeout for the answer.
        assert TIMEOUT * 0.9 <= seconds < stored.within(ATTEMPTS * TIMEOUT + BACKOFF)
        await self.assert_nothing_kept(stored, rid)
        stored.proxy.clear()
        status, body = await self.upload(stored, rid, b"u" * 100_000)
        assert status == 201  # the slot is free

    async def test_store_stops_taking_bytes(
        self, aiohttp_client: AiohttpClient, settings: Settings, moto_endpoint: str,
        s3_bucket: str
    ) -> None:
        # A dead network path: the store reads nothing more, so the gateway's writes
        # stall once the socket buffers are full (aiohttp times reads, not writes). A
        # part has a deadline: the timeout once per try, plus once per MiB. The part is
        # made larger than what the kernel may buffer for the sender, and the proxy's
        # receive window small, so that the writes do stall.
        timeout, mib = 0.5, 1024 * 1024
        part = max(5 * mib, _send_buffer_max() + mib)
        url = URL(moto_endpoint)
        assert url.host is not None and url.port is not None
        deaf = await FaultProxy.start(url.host, url.port, receive_buffer=16 * 1024)
        try:
            gw = await start_gateway(aiohttp_client, s3_settings(
                settings, deaf.url, s3_bucket).with_changes(
                storage_timeout=timeout, s3_part_size=part))
            gw.probe = S3Probe(moto_endpoint, s3_bucket)
            rid = (await gw.create_recording())["id"]
            deaf.add(Fault.DEAF, method="PUT", path="partNumber=1")
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with gw.client.post(f"/recordings/{rid}/media", params={"format": "mp3"},
                                      data=io.BytesIO(b"u" * (part + mib)),
                                      headers=gw.h()) as resp:
                assert resp.status == 504
                assert await resp.json() == {
                    "detail": "Storage 'default' did not answer in time"}
            seconds = loop.time() - started
            print(f"seconds={seconds:.3f}")
            deadline = ATTEMPTS * timeout * (1 + part / mib) + BACKOFF
            # Ended by the deadline (a read timeout would have ended it much sooner),
            # and not much later.
            assert deadline - BACKOFF <= seconds < deadline + SLACK
            assert [o for o in gw.probe.objects() if f"/{rid}/" in o] == []
            await deaf.drop_connections()  # reading nothing, it cannot see the gateway leave
            deaf.clear()
            await gw.upload(rid, b"u" * 100_000, fmt="mp3")  # the slot is free
        finally:
            await deaf.close()


def _send_buffer_max() -> int:
    """The most a TCP sender's kernel buffer may grow to (Linux), else 4 MiB."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 * 1024 * 1024
