"""Sidecar mode: the gateway in front of a real (test) meeting API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from gateway.app import create_app
from gateway.settings import Settings, SettingsError, load_settings
from tests.conftest import AiohttpClient, ProductionServer, local_only
from tests.fake_upstream import CHUNK, FakeMeetingApi
from tests.storage_probe import StorageProbe, default_probe
from tests.test_bounded_memory import MIB, PeakRss

AiohttpServer = Callable[..., Awaitable[TestServer]]
ALICE = {"X-API-Key": "key-alice"}
BOB = {"X-API-Key": "key-bob"}
RECORDING, MEDIA, SESSION = 906238426347, 906238426348, "d6e337d6-92cd-452f-b003-23c5498091ef"


@dataclass
class Sidecar:
    client: TestClient[Any, Any]
    api: FakeMeetingApi
    probe: StorageProbe
    settings: Settings

    @property
    def raw(self) -> str:
        return f"/recordings/{RECORDING}/media/{MEDIA}/raw"


async def start_sidecar(aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer,
                        settings: Settings, api: FakeMeetingApi | None = None,
                        upstream_url: str | None = None, **changes: Any) -> Sidecar:
    api = api or FakeMeetingApi()
    if upstream_url is None:
        upstream_url = str((await aiohttp_server(api.app)).make_url("")).rstrip("/")
    configured = settings.with_changes(catalog="upstream", upstream_url=upstream_url,
                                       **changes)
    client = await aiohttp_client(ProductionServer(create_app(configured)))
    return Sidecar(client, api, default_probe(configured), configured)


@pytest.fixture
async def sidecar(aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer,
                  settings: Settings, backend: str, blob: bytes) -> Sidecar:
    side = await start_sidecar(aiohttp_client, aiohttp_server, settings)
    side.api.add_recording(RECORDING, 1, SESSION, [(MEDIA, "audio", "wav", backend)])
    # The meeting bot wrote the file where the key says: recordings/<user>/<id>/<uid>.<ext>
    side.probe.put(f"recordings/1/{RECORDING}/{SESSION}.wav", blob)
    return side


class TestOwnedRoutes:
    async def test_raw_with_the_upstreams_key(self, sidecar: Sidecar, blob: bytes) -> None:
        async with sidecar.client.get(sidecar.raw, headers={**ALICE, "Range": "bytes=5-9"}) as r:
            assert r.status == 206
            assert await r.read() == blob[5:10]
            assert r.headers["Content-Range"] == f"bytes 5-9/{len(blob)}"
            assert r.headers["Content-Type"] == "audio/wav"
        async with sidecar.client.get(sidecar.raw, headers={"Authorization": "Bearer key-alice"}
                                      ) as r:
            assert r.status == 200 and await r.read() == blob

    async def test_download_link_plays_without_credentials(
        self, sidecar: Sidecar, blob: bytes
    ) -> None:
        async with sidecar.client.get(f"/recordings/{RECORDING}/media/{MEDIA}/download",
                                      headers=ALICE) as r:
            assert r.status == 200
            info = await r.json()
        assert info["filename"] == f"{RECORDING}_audio.wav"
        url = info["download_url"]
        # The blob service documents no suffix ranges (Azurite answers them 500): the
        # same last four bytes, asked for by offset there.
        tail = f"bytes={len(blob) - 4}-" if sidecar.probe.backend == "azure" else "bytes=-4"
        async with aiohttp.ClientSession() as plain:
            target = url if url.startswith("http") else sidecar.client.make_url(url)
            async with plain.get(target, headers={"Range": tail}) as r:
                assert r.status == 206 and await r.read() == blob[-4:]
        assert sidecar.api.calls[f"GET /recordings/{RECORDING}"] == 1  # the link needed none

    @pytest.mark.parametrize(("headers", "status"), [
        (BOB, 404), ({}, 401), ({"X-API-Key": "wrong"}, 401),
    ])
    async def test_other_users_and_bad_keys(
        self, sidecar: Sidecar, headers: dict[str, str], status: int
    ) -> None:
        for path in (sidecar.raw, f"/recordings/{RECORDING}/media/{MEDIA}/download"):
            async with sidecar.client.get(path, headers=headers) as r:
                assert r.status == status
                assert set(await r.json()) == {"detail"}

    async def test_fifty_concurrent_seeks_one_upstream_call(
        self, sidecar: Sidecar, blob: bytes
    ) -> None:
        async def seek(offset: int) -> bytes:
            headers = {**ALICE, "Range": f"bytes={offset}-{offset + 99}"}
            async with sidecar.client.get(sidecar.raw, headers=headers) as r:
                assert r.status == 206
                return await r.read()

        offsets = [i * 5000 for i in range(50)]
        bodies = await asyncio.gather(*(seek(o) for o in offsets))
        assert bodies == [blob[o:o + 100] for o in offsets]
        assert sidecar.api.calls[f"GET /recordings/{RECORDING}"] == 1
        await seek(123)  # still within the TTL
        assert sidecar.api.calls[f"GET /recordings/{RECORDING}"] == 1
        async with sidecar.client.get(sidecar.raw, headers={**BOB, "Range": "bytes=0-1"}) as r:
            assert r.status == 404  # one user's entry never serves another
        assert sidecar.api.calls[f"GET /recordings/{RECORDING}"] == 2

    async def test_delete_removes_bytes_then_asks_upstream(self, sidecar: Sidecar) -> None:
        async with sidecar.client.delete(f"/recordings/{RECORDING}", headers=BOB) as r:
            assert r.status == 404
        assert len(sidecar.probe.objects()) == 1
        async with sidecar.client.delete(f"/recordings/{RECORDING}", headers=ALICE) as r:
            assert r.status == 200
            assert await r.json() == {"status": "deleted", "recording_id": RECORDING}
        assert sidecar.probe.objects() == [] and sidecar.api.deleted == [RECORDING]


class TestFilteredJson:
    async def test_storage_paths_never_reach_a_client(self, sidecar: Sidecar) -> None:
        for path in ("/recordings?limit=10", f"/recordings/{RECORDING}",
                     "/transcripts/google_meet/abc-defg-hij"):
            async with sidecar.client.get(path, headers=ALICE) as r:
                assert r.status == 200
                text = await r.text()
            assert "storage_path" not in text and "/var/lib" not in text, path
            assert "object_key" not in text and "vexa-recordings" not in text, path
            assert "storage_backend" in text  # documented fields stay
        async with sidecar.client.get(f"/recordings/{RECORDING}", headers=ALICE) as r:
            body = await r.json()
        assert body["id"] == RECORDING and body["media_files"][0]["metadata"] == {
            "sample_rate": 16000}
        async with sidecar.client.get("/transcripts/google_meet/abc-defg-hij",
                                      headers=ALICE) as r:
            transcript = await r.json()
        assert transcript["segments"][0]["text"] == "Hello"

    async def test_large_answers_arrive_whole(self, sidecar: Sidecar) -> None:
        for i in range(3000):  # a few MB of JSON: many TCP segments
            sidecar.api.add_recording(10**9 + i, 1, f"s{i}", [(10**10 + i, "audio", "wav",
                                                                 "local")])
        async with sidecar.client.get("/recordings?limit=200", headers=ALICE) as r:
            assert r.status == 200
            assert len((await r.json())["recordings"]) == 200
        sidecar.api.recordings[RECORDING]["media_files"][0]["metadata"] = {
            "notes": "x" * 3_000_000}
        async with sidecar.client.get(sidecar.raw, headers=ALICE) as r:
            assert r.status == 200  # the recording's JSON was read whole to find the media

    async def test_upstream_statuses_pass_through(self, sidecar: Sidecar) -> None:
        async with sidecar.client.get("/recordings?limit=0", headers=ALICE) as r:
            assert r.status == 422 and await r.json() == {"detail": "limit must be 1..200"}
        async with sidecar.client.get("/recordings", headers={"X-API-Key": "nope"}) as r:
            assert r.status == 401
        async with sidecar.client.get(f"/recordings/{RECORDING}", headers=BOB) as r:
            assert r.status == 404


@local_only  # the proxy path does not touch storage
class TestProxy:
    @pytest.fixture
    async def side(self, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer,
                   settings: Settings) -> Sidecar:
        return await start_sidecar(aiohttp_client, aiohttp_server, settings)

    async def test_method_path_query_and_headers(self, side: Sidecar) -> None:
        async with side.client.request(
            "PATCH", URL("/headers?a=1&b=%2F&a=2", encoded=True), data=b"{}",
            headers={"Connection": "keep-alive, X-Hop", "X-Hop": "secret", "TE": "trailers",
                     "X-Forwarded-For": "203.0.113.7", "X-Custom": "kept",
                     "Content-Type": "application/json"},
        ) as r:
            assert r.status == 200
            seen = await r.json()
        assert seen["method"] == "PATCH" and seen["raw_path"] == "/headers?a=1&b=%2F&a=2"
        headers = {k.lower(): v for k, v in seen["headers"].items()}
        assert "x-hop" not in headers and "te" not in headers
        assert headers["x-custom"] == "kept"
        assert headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-host"] == f"127.0.0.1:{side.client.port}"

    async def test_range_answer_is_untouched(self, side: Sidecar) -> None:
        async with side.client.get("/ranged", headers={"Range": "bytes=100-199"}) as r:
            assert r.status == 206
            assert await r.read() == CHUNK[100:200]
            assert r.headers["Content-Range"] == "bytes 100-199/10000"
            assert r.headers["Content-Length"] == "100"
            assert r.headers["Accept-Ranges"] == "bytes"
            assert r.headers["Content-Disposition"] == 'inline; filename="meeting.wav"'

    async def test_no_decompression_on_the_way(self, side: Sidecar) -> None:
        async with aiohttp.ClientSession(auto_decompress=False) as raw, \
                raw.get(side.client.make_url("/gzip"), headers={"Accept-Encoding": "gzip"}) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            assert json.loads(gzip.decompress(await r.read())) == {"compressed": True}

    async def test_one_gib_response_streams_with_flat_memory(self, side: Sidecar) -> None:
        size = 1024 * MIB
        peak = PeakRss()
        sampler = asyncio.create_task(peak.sample())
        received = 0
        try:
            async with side.client.get(f"/big?size={size}") as r:
                assert r.status == 200 and r.headers["Content-Length"] == str(size)
                async for part in r.content.iter_chunked(MIB):
                    received += len(part)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        assert received == size
        assert peak.growth < 64 * MIB, f"RSS grew by {peak.growth / MIB:.0f} MiB"

    async def test_request_body_streams_to_the_upstream(self, side: Sidecar) -> None:
        size = 256 * MIB

        async def body() -> AsyncIterator[bytes]:
            for _ in range(size // len(CHUNK)):
                yield CHUNK

        peak = PeakRss()
        sampler = asyncio.create_task(peak.sample())
        try:
            async with side.client.post("/echo?x=1", data=body()) as r:
                assert r.status == 201
                answer = await r.json()
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        assert answer["received"] == size and answer["query"] == {"x": "1"}
        assert answer["chunks"] > 100  # it arrived as a stream, not as one piece
        assert peak.growth < 64 * MIB, f"RSS grew by {peak.growth / MIB:.0f} MiB"
        async with side.client.post("/echo", data=io.BytesIO(b"x" * 5000)) as r:
            assert (await r.json())["content_length"] == "5000"


@local_only
class TestUpstreamFaults:
    async def test_upstream_down_is_502_and_not_ready(
        self, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, settings: Settings
    ) -> None:
        side = await start_sidecar(aiohttp_client, aiohttp_server, settings,
                                   upstream_url=f"http://127.0.0.1:{_closed_port()}")
        for path, headers in (("/bots", {}), (side.raw, ALICE), ("/recordings", ALICE)):
            async with side.client.get(path, headers=headers) as r:
                assert r.status == 502
                assert await r.json() == {"detail": "The upstream meeting API is unreachable"}
        async with side.client.get("/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"]["upstream"] == "unavailable"
        async with side.client.get("/healthz") as r:
            assert r.status == 200  # the gateway itself stays up

    async def test_upstream_timeout_is_504_in_time(
        self, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, settings: Settings
    ) -> None:
        side = await start_sidecar(aiohttp_client, aiohttp_server, settings,
                                   upstream_timeout=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with side.client.get("/slow") as r:
            assert r.status == 504
            assert await r.json() == {"detail": "The upstream meeting API did not answer in time"}
        assert loop.time() - started < 3


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@local_only
class TestCors:
    async def test_preflight_and_exposed_headers(
        self, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, settings: Settings,
        blob: bytes,
    ) -> None:
        side = await start_sidecar(aiohttp_client, aiohttp_server, settings,
                                   cors_origins=("https://app.example.com",))
        side.api.add_recording(RECORDING, 1, SESSION, [(MEDIA, "audio", "wav", "local")])
        side.probe.put(f"recordings/1/{RECORDING}/{SESSION}.wav", blob)
        origin = {"Origin": "https://app.example.com"}
        async with side.client.options(side.raw, headers={
            **origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range, x-api-key"}) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            allowed = r.headers["Access-Control-Allow-Headers"].lower()
            assert {"range", "x-api-key", "authorization"} <= {
                h.strip() for h in allowed.split(",")}
        assert side.api.calls == {}  # answered here, not forwarded
        async with side.client.get(side.raw, headers={**origin, **ALICE,
                                                      "Range": "bytes=0-9"}) as r:
            assert r.status == 206
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            exposed = {h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
            assert {"Content-Range", "Accept-Ranges", "Content-Length",
                    "Content-Disposition"} <= exposed
        async with side.client.options(side.raw, headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}) as r:
            assert r.status == 403
        async with side.client.get("/headers", headers={"Origin": "https://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers

    async def test_off_by_default(self, sidecar: Sidecar) -> None:
        async with sidecar.client.get(sidecar.raw, headers={
                **ALICE, "Origin": "https://app.example.com"}) as r:
            assert r.status == 200
            assert "Access-Control-Allow-Origin" not in r.headers


def test_settings_need_an_upstream_url(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_CATALOG": "upstream"})
    assert str(caught.value) == "GATEWAY_UPSTREAM_URL: is required when GATEWAY_CATALOG=upstream"
    with pytest.raises(SettingsError, match=r"^GATEWAY_CORS_ORIGINS: each origin"):
        load_settings({"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_CORS_ORIGINS": "example.com"})
