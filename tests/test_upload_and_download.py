"""Ingest (streamed, atomic, bounded) and download links (signed, time-limited)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.auth import UrlSigner
from gateway.links import MediaLocation, signed_raw_url
from gateway.settings import Settings
from tests.conftest import (
    SIGNING_KEY,
    AiohttpClient,
    Gateway,
    local_only,
    s3_only,
    start_gateway,
)
from tests.storage_probe import AzureProbe


async def media_count(gw: Gateway, recording_id: int) -> int:
    async with gw.client.get(f"/recordings/{recording_id}", headers=gw.h()) as resp:
        return len((await resp.json())["media_files"])


class TestUploadValidation:
    @pytest.mark.parametrize(("query", "status"), [
        ("type=audio&format=flac", 422),
        ("type=video&format=mp3", 422),
        ("type=document&format=wav", 422),
        ("type=audio", 422),  # format is required
        ("type=audio&format=../../../etc/passwd", 422),
        ("type=audio&format=wav%2F..%2F..%2Fx", 422),
        ("type=..%2F..&format=wav", 422),
        ("type=audio&format=WAV", 422),
        ("type=audio&format=wav&format=mp3", 422),
    ])
    async def test_bad_type_or_format(
        self, gw: Gateway, wav_bytes: bytes, query: str, status: int
    ) -> None:
        rid = (await gw.create_recording())["id"]
        url = URL(f"/recordings/{rid}/media?{query}", encoded=True)
        async with gw.client.post(url, data=wav_bytes, headers=gw.h()) as resp:
            assert resp.status == status
            assert set(await resp.json()) == {"detail"}
        assert gw.probe.objects() == []
        assert await media_count(gw, rid) == 0

    async def test_not_a_wav_is_refused_and_removed(self, gw: Gateway) -> None:
        rid = (await gw.create_recording())["id"]
        async with gw.client.post(f"/recordings/{rid}/media?format=wav", data=b"x" * 5000,
                                  headers=gw.h()) as resp:
            assert resp.status == 422
            assert "not a WAV file" in (await resp.json())["detail"]
        assert gw.probe.objects() == []
        assert await media_count(gw, rid) == 0

    async def test_second_file_of_a_format_is_409(self, gw: Gateway, wav_bytes: bytes) -> None:
        rid, _ = await gw.recording_with_media(wav_bytes)
        async with gw.client.post(f"/recordings/{rid}/media?format=wav",
                                  data=io.BytesIO(wav_bytes), headers=gw.h()) as resp:
            assert resp.status == 409
        await gw.upload(rid, b"\x1a\x45\xdf\xa3" + bytes(1000), fmt="webm", media_type="video")
        assert await media_count(gw, rid) == 2
        assert len(gw.probe.objects()) == 2

    async def test_viewer_cannot_ingest_or_delete(self, gw: Gateway, wav_bytes: bytes) -> None:
        async with gw.client.post("/recordings", json={}, headers=gw.h("viewer")) as resp:
            assert resp.status == 403
            assert await resp.json() == {"detail": "This action needs the recorder role"}
        rid = (await gw.create_recording(who="admin", user_id=3))["id"]  # the viewer's own
        async with gw.client.get(f"/recordings/{rid}", headers=gw.h("viewer")) as resp:
            assert resp.status == 200
        for method, path in (("DELETE", f"/recordings/{rid}"),
                             ("POST", f"/recordings/{rid}/complete"),
                             ("POST", f"/recordings/{rid}/media?format=wav")):
            async with gw.client.request(method, path, headers=gw.h("viewer")) as resp:
                assert resp.status == 403, path
        async with gw.client.get(f"/recordings/{rid}", headers=gw.h("viewer")) as resp:
            assert (await resp.json())["status"] == "in_progress"

    async def test_recorder_cannot_file_for_another_user(self, gw: Gateway) -> None:
        async with gw.client.post("/recordings", json={"user_id": 2}, headers=gw.h()) as resp:
            assert resp.status == 403
        async with gw.client.post("/recordings", json={"user_id": 2},
                                  headers=gw.h("admin")) as resp:
            assert resp.status == 201
            assert (await resp.json())["user_id"] == 2


class TestUploadLimits:
    @pytest.fixture
    async def small(self, aiohttp_client: AiohttpClient, settings: Settings) -> Gateway:
        limited = settings.with_changes(max_upload_bytes=100_000)
        return await start_gateway(aiohttp_client, limited)

    async def test_declared_length_over_limit_is_413(self, small: Gateway) -> None:
        rid = (await small.create_recording())["id"]
        async with small.client.post(f"/recordings/{rid}/media?format=mp3",
                                     data=b"x" * 100_001, headers=small.h()) as resp:
            assert resp.status == 413
        assert small.probe.objects() == []

    async def test_streamed_body_over_limit_is_413_and_nothing_kept(self, small: Gateway) -> None:
        rid = (await small.create_recording())["id"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):  # chunked: no Content-Length to refuse up front
                yield b"y" * 10_000

        async with small.client.post(f"/recordings/{rid}/media?format=mp3", data=chunks(),
                                     headers=small.h()) as resp:
            assert resp.status == 413
            assert "nothing was kept" in (await resp.json())["detail"]
        assert small.probe.objects() == []
        assert await media_count(small, rid) == 0
        # At the limit exactly is fine.
        await small.upload(rid, b"z" * 100_000, fmt="mp3")


def unfinished(gw: Gateway) -> list[str]:
    """What an upload in progress has stored: a temporary file, an unfinished multipart
    upload, or on Azure a name holding uncommitted blocks (which is no blob)."""
    if isinstance(gw.probe, AzureProbe):
        return [f"{name} (uncommitted blocks)" for name in gw.probe.uncommitted()]
    return gw.probe.objects()


async def test_killed_upload_leaves_nothing_visible(gw: Gateway) -> None:
    rid = (await gw.create_recording())["id"]
    _, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    writer.write(
        f"POST /recordings/{rid}/media?format=mp3 HTTP/1.1\r\nHost: x\r\n"
        f"X-API-Key: {gw.keys['alice']}\r\nContent-Length: 50000000\r\n\r\n".encode()
    )
    # More than one S3 part (5 MiB in the tests), far less than declared.
    writer.write(b"a" * 7_000_000)
    await writer.drain()
    if gw.backend == "gcs":
        # GCS lists no upload sessions: the first chunk goes in, and nothing shows.
        await asyncio.sleep(1)
        assert gw.probe.objects() == []
    else:
        for _ in range(300):  # until a temporary file or an unfinished upload exists
            if unfinished(gw):
                break
            await asyncio.sleep(0.01)
        in_progress = unfinished(gw)
        assert len(in_progress) == 1
        # nothing under its name
        assert in_progress[0].endswith((".part", "(unfinished upload)", "(uncommitted blocks)"))
        assert gw.probe.backend != "azure" or gw.probe.objects() == []
    writer.transport.abort()
    await writer.wait_closed()
    for _ in range(300):
        if not gw.probe.objects() and (gw.probe.backend == "azure" or not unfinished(gw)):
            break
        await asyncio.sleep(0.01)
    assert gw.probe.objects() == []
    # Azure has no call that drops uncommitted blocks: they stay invisible until the
    # service discards them (after a week); no reader can see them meanwhile.
    assert gw.probe.backend == "azure" or unfinished(gw) == []
    assert await media_count(gw, rid) == 0
    await gw.upload(rid, b"b" * 1000, fmt="mp3")  # and the slot is free for a real upload
    assert await media_count(gw, rid) == 1
    assert len(gw.probe.objects()) == 1


class TestAuth:
    @pytest.mark.parametrize("headers", [
        {}, {"X-API-Key": ""}, {"X-API-Key": "gw_wrong"}, {"X-API-Key": "ключ"},
        {"X-API-Key": "x" * 1000}, {"Authorization": "Basic d2hvOmV2ZXI="},
    ])
    async def test_missing_and_wrong_keys_look_the_same(
        self, gw: Gateway, headers: dict[str, str]
    ) -> None:
        for method, path in (("GET", "/recordings"), ("POST", "/recordings"),
                             ("GET", "/recordings/1/media/2/raw"),
                             ("GET", "/recordings/1/media/2/download")):
            async with gw.client.request(method, path, headers=headers) as resp:
                assert resp.status == 401
                assert await resp.json() == {"detail": "Invalid or missing API key"}
                assert resp.headers["WWW-Authenticate"] == 'APIKey realm="recordings"'


class TestDownload:
    async def session_uid(self, gw: Gateway, rid: int) -> str:
        async with gw.client.get(f"/recordings/{rid}", headers=gw.h()) as resp:
            uid: str = (await resp.json())["session_uid"]
            return uid

    async def download(self, gw: Gateway, rid: int, mid: int) -> dict[str, Any]:
        async with gw.client.get(f"/recordings/{rid}/media/{mid}/download",
                                 headers=gw.h()) as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body

    @local_only
    async def test_signed_url_works_without_headers(self, gw: Gateway, wav_bytes: bytes) -> None:
        rid, mid = await gw.recording_with_media(wav_bytes)
        info = await self.download(gw, rid, mid)
        assert set(info) == {"download_url", "filename", "content_type", "file_size_bytes",
                             "expires_in"}
        assert info["filename"] == f"{rid}_audio.wav"
        assert info["content_type"] == "audio/wav"
        assert info["file_size_bytes"] == len(wav_bytes)
        assert info["expires_in"] == 3600
        url = URL(info["download_url"])
        assert url.path == gw.raw_path(rid, mid)
        assert set(url.query) == {"expires", "signature", "disposition", "by", "loc"}
        assert url.query["by"] == "1"  # who asked for it: alice
        assert url.query["loc"] == f"default.local.1.{await self.session_uid(gw, rid)}.audio.wav"
        async with gw.client.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == wav_bytes
            assert resp.headers["Content-Disposition"].startswith(
                f'attachment; filename="{rid}_audio.wav"')
        async with gw.client.get(url, headers={"Range": "bytes=44-99"}) as resp:
            assert resp.status == 206
            assert await resp.read() == wav_bytes[44:100]
        async with gw.client.head(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(len(wav_bytes))

    @local_only
    async def test_tampered_signed_urls_are_refused(self, gw: Gateway, wav_bytes: bytes) -> None:
        rid, mid = await gw.recording_with_media(wav_bytes)
        other_rid, other_mid = await gw.recording_with_media(wav_bytes, who="bob")
        url = URL((await self.download(gw, rid, mid))["download_url"])
        query = dict(url.query)
        signature = query["signature"]
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        attempts = [
            url.with_query({**query, "signature": flipped}),
            url.with_query({**query, "signature": ""}),
            url.with_query({**query, "signature": "é" * 43}),
            url.with_query({**query, "expires": str(int(query["expires"]) + 1)}),
            url.with_query({**query, "expires": "abc"}),
            url.with_query({**query, "disposition": "inline"}),
            url.with_query({k: v for k, v in query.items() if k != "disposition"}),
            url.with_query({k: v for k, v in query.items() if k != "expires"}),
            # where the bytes are: another user, another file, another storage
            url.with_query({**query, "loc": query["loc"].replace(".1.", ".2.", 1)}),
            url.with_query({**query, "loc": query["loc"].replace(".wav", ".mp3")}),
            url.with_query({**query, "loc": "other" + query["loc"][len("default"):]}),
            url.with_query({**query, "loc": "../../etc/passwd"}),
            url.with_query({k: v for k, v in query.items() if k != "loc"}),
            url.with_path(gw.raw_path(other_rid, other_mid)).with_query(query),  # not ours
        ]
        for attempt in attempts:
            async with gw.client.get(attempt) as resp:
                assert resp.status == 401, attempt
                assert await resp.json() == {"detail": "Invalid signed URL"}
        # A signature authorizes its raw path only, not the rest of the API.
        download = url.with_path(f"/recordings/{rid}/media/{mid}/download").with_query(query)
        async with gw.client.get(download) as r:
            assert r.status == 401

    @local_only
    async def test_expired_signed_url_is_refused(self, gw: Gateway, wav_bytes: bytes) -> None:
        rid, mid = await gw.recording_with_media(wav_bytes)
        path = gw.raw_path(rid, mid)
        location = MediaLocation("default", "local", 1, await self.session_uid(gw, rid),
                                 "audio", "wav")
        two_hours_ago = UrlSigner((SIGNING_KEY,), clock=lambda: time.time() - 7200)
        expired = signed_raw_url(two_hours_ago, path, location, expires_in=3600,
                                 disposition="inline", by="1")
        async with gw.client.get(expired) as resp:
            assert resp.status == 401
            assert await resp.json() == {"detail": "Signed URL has expired"}
        fresh = signed_raw_url(UrlSigner((SIGNING_KEY,)), path, location, expires_in=60,
                               disposition="inline", by="1")
        async with gw.client.get(fresh) as resp:
            assert resp.status == 200  # the same link, in time, works
        other_key = UrlSigner((b"another-key-that-is-long-enough-to-use-1234",))
        forged = signed_raw_url(other_key, path, location, expires_in=3600,
                                disposition="inline", by="1")
        async with gw.client.get(forged) as resp:
            assert resp.status == 401

    @local_only
    async def test_rotated_keys_still_verify(
        self, aiohttp_client: AiohttpClient, settings: Settings, wav_bytes: bytes
    ) -> None:
        new_key = b"a-new-signing-key-0123456789abcdefghijklmnop"
        rotated = await start_gateway(
            aiohttp_client, settings.with_changes(signing_keys=(new_key, SIGNING_KEY)))
        rid, mid = await rotated.recording_with_media(wav_bytes)
        location = MediaLocation("default", "local", 1, await self.session_uid(rotated, rid),
                                 "audio", "wav")
        # Signed before the rotation:
        old = signed_raw_url(UrlSigner((SIGNING_KEY,)), rotated.raw_path(rid, mid), location,
                             expires_in=60, disposition="inline", by="1")
        async with rotated.client.get(old) as resp:
            assert resp.status == 200

    @local_only
    async def test_public_url_prefixes_download_url(
        self, aiohttp_client: AiohttpClient, settings: Settings, wav_bytes: bytes
    ) -> None:
        proxied = await start_gateway(
            aiohttp_client, settings.with_changes(public_url="https://media.example.com/api"))
        rid, mid = await proxied.recording_with_media(wav_bytes)
        url = (await self.download(proxied, rid, mid))["download_url"]
        assert url.startswith(f"https://media.example.com/api/recordings/{rid}/media/{mid}/raw?")


@s3_only
class TestPresignedDownload:
    async def download(self, gw: Gateway, rid: int, mid: int) -> dict[str, Any]:
        async with gw.client.get(f"/recordings/{rid}/media/{mid}/download",
                                 headers=gw.h()) as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body

    async def test_presigned_url_fetched_by_a_plain_client(
        self, gw: Gateway, wav_bytes: bytes
    ) -> None:
        rid, mid = await gw.recording_with_media(wav_bytes)
        info = await self.download(gw, rid, mid)
        assert info["filename"] == f"{rid}_audio.wav" and info["expires_in"] == 3600
        assert info["file_size_bytes"] == len(wav_bytes)
        url = URL(info["download_url"])
        assert url.host == "127.0.0.1" and url.port == URL(gw.settings.s3_endpoint).port
        # SigV4 query signing, expiry as configured (the signature covers it).
        assert url.query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
        assert url.query["X-Amz-Expires"] == "3600"
        async with aiohttp.ClientSession() as plain:
            async with plain.get(info["download_url"]) as resp:
                assert resp.status == 200
                assert await resp.read() == wav_bytes
                assert resp.headers["Content-Type"] == "audio/wav"
                assert resp.headers["Content-Disposition"] == (
                    f"attachment; filename=\"{rid}_audio.wav\"; "
                    f"filename*=UTF-8''{rid}_audio.wav")
            async with plain.get(info["download_url"], headers={"Range": "bytes=4-11"}) as resp:
                assert resp.status == 206
                assert await resp.read() == wav_bytes[4:12]
        # The store, not the gateway, must refuse an expired URL. moto's server does not
        # check presigned expiry (its auth layer reads only the Authorization header), so
        # here we can only show that the expiry is inside what the signature covers.
        assert "X-Amz-Expires" in url.query and "X-Amz-Signature" in url.query

    async def test_public_endpoint_is_the_host_of_presigned_urls(
        self, aiohttp_client: AiohttpClient, settings: Settings, wav_bytes: bytes
    ) -> None:
        public = await start_gateway(aiohttp_client, settings.with_changes(
            s3_public_endpoint="https://media.example.com"))
        rid, mid = await public.recording_with_media(wav_bytes)
        url = URL((await self.download(public, rid, mid))["download_url"])
        assert (url.scheme, url.host) == ("https", "media.example.com")
        assert url.path == f"/{settings.s3_bucket}/recordings/1/{rid}/" + url.path.rsplit("/", 1)[1]


async def test_playback_url_plays_through_the_gateway_on_any_storage(
    gw: Gateway, wav_bytes: bytes
) -> None:
    rid, mid = await gw.recording_with_media(wav_bytes)
    async with gw.client.get(f"/recordings/{rid}/media/{mid}/playback-url",
                             headers=gw.h()) as resp:
        assert resp.status == 200
        info = await resp.json()
    assert info["expires_in"] == 3600
    url = URL(info["playback_url"])
    assert url.path == gw.raw_path(rid, mid) and url.query["disposition"] == "inline"
    async with aiohttp.ClientSession() as plain, plain.get(  # no credentials at all
        gw.client.make_url(str(url)), headers={"Range": "bytes=44-1043"}
    ) as r:
        assert r.status == 206
        assert await r.read() == wav_bytes[44:1044]
        assert r.headers["Content-Disposition"].startswith("inline;")
    for headers in ({}, gw.h("bob")):
        async with gw.client.get(f"/recordings/{rid}/media/{mid}/playback-url",
                                 headers=headers) as resp:
            assert resp.status in (401, 404)
