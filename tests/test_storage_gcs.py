"""Google Cloud Storage: configuration, V4 signed URLs, the check, uploads, and what the
emulator could not show.

The media suite runs on GCS through the `backend` fixture; here are the parts that
belong to GCS alone. fake-gcs-server checks neither tokens nor URL signatures, so
tokens come from the tests' own OAuth endpoint (tests/gcs_emulator.py), which checks
the service account's JWT against its public key, and signed URLs are verified here
against the same public key.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import subprocess
import sys
import urllib.parse
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from yarl import URL

from gateway.errors import Conflict
from gateway.settings import Settings, SettingsError, load_settings
from gateway.storage.config import ConfigError, parse_config
from gateway.storage.factory import open_storages
from gateway.storage.gcs import GcsStorage
from tests.conftest import (
    AiohttpClient,
    Gateway,
    start_gateway,
)
from tests.fault_proxy import Fault, FaultProxy, http_answer
from tests.gcs_emulator import CLIENT_EMAIL, new_private_key, service_account
from tests.storage_probe import GcsProbe
from tests.test_settings_and_cli import _base_env


@pytest.fixture
def backend() -> str:
    """Every gateway here stores on GCS."""
    return "gcs"


def public_key_of(credentials: str) -> rsa.RSAPublicKey:
    pem = json.loads(credentials)["private_key"].encode()
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key()


def verify_v4_signature(url: URL, public_key: rsa.RSAPublicKey) -> None:
    """Rebuild the V4 string-to-sign of a GET URL (Google's documented algorithm) and check
    its X-Goog-Signature with the account's public key; raises if it does not match."""
    query = dict(url.query)
    signature = bytes.fromhex(query.pop("X-Goog-Signature"))
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}"
        for k, v in sorted(query.items()))
    assert query["X-Goog-SignedHeaders"] == "host"
    host = url.host if url.explicit_port is None else f"{url.host}:{url.port}"
    canonical = "\n".join(["GET", url.raw_path, canonical_query, f"host:{host}\n", "host",
                           "UNSIGNED-PAYLOAD"])
    scope = query["X-Goog-Credential"].split("/", 1)[1]
    to_sign = "\n".join(["GOOG4-RSA-SHA256", query["X-Goog-Date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    public_key.verify(signature, to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())


async def download_info(gw: Gateway, rid: int, mid: int) -> dict[str, Any]:
    async with gw.client.get(f"/recordings/{rid}/media/{mid}/download", headers=gw.h()) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


class TestSignedUrls:
    async def test_plain_client_gets_the_bytes_and_ranges(self, gw: Gateway,
                                                          blob: bytes) -> None:
        rid, mid = await gw.recording_with_media(blob, fmt="mp3")
        info = await download_info(gw, rid, mid)
        url = URL(info["download_url"], encoded=True)
        assert info["expires_in"] == gw.settings.presign_expiry
        async with aiohttp.ClientSession() as plain:  # no credentials of ours
            async with plain.get(url) as resp:
                assert resp.status == 200 and await resp.read() == blob
            async with plain.get(url, headers={"Range": "bytes=1000-1999"}) as resp:
                assert resp.status == 206
                assert resp.headers["Content-Range"] == f"bytes 1000-1999/{len(blob)}"
                assert await resp.read() == blob[1000:2000]
        async with gw.client.get(gw.raw_path(rid, mid), headers=gw.h()) as resp:
            raw_disposition = resp.headers["Content-Disposition"]
        # The overrides are signed into the URL: attachment, with raw's filenames.
        assert url.query["response-content-disposition"] == raw_disposition.replace(
            "inline", "attachment", 1)
        assert url.query["response-content-type"] == info["content_type"]
        assert url.query["X-Goog-Expires"] == str(gw.settings.presign_expiry)
        assert url.query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
        assert url.query["X-Goog-Credential"].startswith(f"{CLIENT_EMAIL}/")
        assert (url.scheme, url.host, url.port) == (
            "http", "127.0.0.1", URL(gw.settings.gcs_endpoint).port)
        assert url.path.startswith(f"/{gw.settings.gcs_bucket}/recordings/")

    async def test_signature_is_the_service_accounts(self, gw: Gateway, blob: bytes) -> None:
        rid, mid = await gw.recording_with_media(blob, fmt="mp3")
        url = URL((await download_info(gw, rid, mid))["download_url"], encoded=True)
        verify_v4_signature(url, public_key_of(gw.settings.gcs_credentials))
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        with pytest.raises(InvalidSignature):
            verify_v4_signature(url, other)
        tampered = url.update_query({"X-Goog-Expires": "604800"})
        with pytest.raises(InvalidSignature):
            verify_v4_signature(tampered, public_key_of(gw.settings.gcs_credentials))

    async def test_public_endpoint_is_the_signed_host(
        self, aiohttp_client: AiohttpClient, settings: Settings, blob: bytes
    ) -> None:
        gw = await start_gateway(aiohttp_client, settings.with_changes(
            gcs_public_endpoint="https://media.example.com"))
        rid, mid = await gw.recording_with_media(blob, fmt="mp3")
        url = URL((await download_info(gw, rid, mid))["download_url"], encoded=True)
        assert (url.scheme, url.host) == ("https", "media.example.com")
        verify_v4_signature(url, public_key_of(gw.settings.gcs_credentials))

    async def test_expired_url(self, aiohttp_client: AiohttpClient, settings: Settings,
                               blob: bytes) -> None:
        gw = await start_gateway(aiohttp_client, settings.with_changes(presign_expiry=1))
        rid, mid = await gw.recording_with_media(blob, fmt="mp3")
        url = URL((await download_info(gw, rid, mid))["download_url"], encoded=True)
        assert url.query["X-Goog-Expires"] == "1"
        await asyncio.sleep(2.1)  # X-Goog-Date has whole seconds
        async with aiohttp.ClientSession() as plain, plain.get(url) as resp:
            status = resp.status
        if status == 200:
            pytest.skip("fake-gcs-server does not enforce X-Goog-Expires: it served a URL "
                        "that expired a second ago (Google answers 400 ExpiredToken)")
        assert status in (400, 403)


class TestChecks:
    async def check(self, aiohttp_client: AiohttpClient, settings: Settings) -> tuple[int, Any]:
        gw = await start_gateway(aiohttp_client, settings)
        async with gw.client.post("/storage/default/check", headers=gw.h("admin")) as resp:
            return resp.status, await resp.json()

    async def test_check_passes_and_leaves_nothing(
        self, aiohttp_client: AiohttpClient, settings: Settings
    ) -> None:
        status, body = await self.check(aiohttp_client, settings)
        assert status == 200 and body["steps"] == ["write", "read", "delete"]
        assert body["object"].startswith("gateway-check-") and body["object"].endswith(".md")
        probe = GcsProbe(settings.gcs_endpoint, settings.gcs_bucket)
        assert probe.objects() == []

    async def test_wrong_bucket(self, aiohttp_client: AiohttpClient,
                                settings: Settings) -> None:
        status, body = await self.check(aiohttp_client,
                                        settings.with_changes(gcs_bucket="no-such-bucket"))
        assert status == 502
        assert body["detail"].startswith("Storage 'default' check failed at write: 404 ")

    async def test_key_that_is_not_the_accounts(
        self, aiohttp_client: AiohttpClient, settings: Settings, gcs_token_endpoint: Any
    ) -> None:
        wrong = service_account(new_private_key(), gcs_token_endpoint.url)
        status, body = await self.check(aiohttp_client,
                                        settings.with_changes(gcs_credentials=wrong.json))
        assert status == 502
        assert body["detail"] == (
            "Storage 'default' check failed at write: the service account was refused "
            "(invalid_grant: Invalid JWT Signature.)")
        assert wrong.info["private_key"].splitlines()[1] not in json.dumps(body)

    async def test_token_endpoint_unreachable(
        self, aiohttp_client: AiohttpClient, settings: Settings, gcs_service_key: str
    ) -> None:
        account = service_account(gcs_service_key, "http://127.0.0.1:9/token")
        status, body = await self.check(aiohttp_client,
                                        settings.with_changes(gcs_credentials=account.json))
        assert status == 502
        assert body["detail"].startswith("Storage 'default' check failed at write: Storage "
                                         "'default' is unreachable")

    def test_command(self, tmp_path: Path, gcs_endpoint: str, gcs_bucket: str,
                     gcs_credentials: str, gcs_token_endpoint: Any) -> None:
        key_file = tmp_path / "service-account.json"
        key_file.write_text(gcs_credentials)
        env = {**_base_env(), "GATEWAY_DATA_DIR": str(tmp_path / "data"),
               "STORAGE_BACKEND": "gcs", "GCS_ENDPOINT": gcs_endpoint,
               "GCS_BUCKET": gcs_bucket, "GCS_CREDENTIALS": str(key_file)}

        def run(**changes: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "gateway", "storage", "check", "default"],
                env={**env, **changes}, capture_output=True, text=True, timeout=60,
                stdin=subprocess.DEVNULL, check=False)

        ok = run()
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith(f"ok      default (gcs, bucket {gcs_bucket}")
        bad_bucket = run(GCS_BUCKET="missing-bucket")
        assert bad_bucket.returncode == 1
        assert "FAILED  default" in bad_bucket.stdout and "404" in bad_bucket.stdout
        wrong = service_account(new_private_key(), gcs_token_endpoint.url)
        key_file.write_text(wrong.json)
        bad_key = run()
        assert bad_key.returncode == 1
        assert "invalid_grant: Invalid JWT Signature." in bad_key.stdout
        assert wrong.info["private_key"].splitlines()[1] not in bad_key.stdout + bad_key.stderr


class TestConfiguration:
    def test_environment(self, tmp_path: Path, gcs_credentials: str) -> None:
        key_file = tmp_path / "key.json"
        key_file.write_text(gcs_credentials)
        for value in (gcs_credentials, str(key_file)):  # inline JSON, or a file's path
            settings = load_settings({"GATEWAY_DATA_DIR": str(tmp_path),
                                      "STORAGE_BACKEND": "gcs", "GCS_BUCKET": "recordings",
                                      "GCS_CREDENTIALS": value})
            storage = settings.env_storage()
            assert (storage.type, storage.bucket, storage.endpoint) == ("gcs", "recordings", "")
            private = json.loads(gcs_credentials)["private_key"].splitlines()[1]
            assert private not in repr(settings) and private not in repr(storage)

    @pytest.mark.parametrize(("values", "message"), [
        ({"STORAGE_BACKEND": "gcs"}, "GCS_BUCKET: is required when STORAGE_BACKEND=gcs"),
        ({"STORAGE_BACKEND": "gcs", "GCS_BUCKET": "recordings"},
         "GCS_CREDENTIALS: a service account JSON key (or its path) is required"),
        ({"STORAGE_BACKEND": "gcs", "GCS_BUCKET": "recordings",
          "GCS_CREDENTIALS": '{"type": "service_account", "private_key": "x"'},
         "GCS_CREDENTIALS: is not a service account JSON key (invalid JSON)"),
        ({"STORAGE_BACKEND": "gcs", "GCS_BUCKET": "recordings",
          "GCS_CREDENTIALS": '{"type": "authorized_user", "refresh_token": "x"}'},
         'GCS_CREDENTIALS: is not a service account JSON key (no "type": "service_account")'),
        ({"STORAGE_BACKEND": "gcs", "GCS_BUCKET": "recordings",
          "GCS_CREDENTIALS": '{"type": "service_account", "client_email": "a@b",'
                             ' "private_key": "secret-material"}'},
         "GCS_CREDENTIALS: the service account's private_key is not a PEM private key"),
        ({"STORAGE_BACKEND": "gcs", "GCS_BUCKET": "recordings",
          "GCS_CREDENTIALS": "/nonexistent/key.json"},
         "GCS_CREDENTIALS: cannot read the service account file '/nonexistent/key.json' "
         "(No such file or directory)"),
        ({"STORAGE_BACKEND": "gcs", "GCS_BUCKET": "Bad_Bucket", "GCS_ENDPOINT": "x:1"},
         "GCS_BUCKET: must be an S3 bucket name, got 'Bad_Bucket'"),
    ])
    def test_wrong_settings(self, tmp_path: Path, values: dict[str, str],
                            message: str) -> None:
        with pytest.raises(SettingsError) as caught:
            load_settings({"GATEWAY_DATA_DIR": str(tmp_path), **values})
        assert str(caught.value) == message
        assert "secret-material" not in str(caught.value)

    def test_named_storage(self, gcs_credentials: str) -> None:
        config = parse_config({"storages": {"gcp": {
            "type": "gcs", "bucket": "archive", "prefix": "meetings",
            "credentials": gcs_credentials}}})
        storage = config.storages[0]
        assert (storage.type, storage.bucket, storage.prefix) == ("gcs", "archive", "meetings/")
        assert "PRIVATE KEY" not in repr(config)
        with pytest.raises(ConfigError, match=r"storages\.gcp: unknown key\(s\) region"):
            parse_config({"storages": {"gcp": {"type": "gcs", "bucket": "archive",
                                               "region": "eu", "credentials": "{}"}}})
        with pytest.raises(ConfigError, match=r"storages\.gcp\.credentials: a service account"):
            parse_config({"storages": {"gcp": {"type": "gcs", "bucket": "archive"}}})

    async def test_named_storage_serves_from_its_prefix(
        self, aiohttp_client: AiohttpClient, settings: Settings, tmp_path: Path,
        gcs_endpoint: str, gcs_bucket: str, gcs_credentials: str, blob: bytes,
    ) -> None:
        config = parse_config({"storages": {"gcp": {
            "type": "gcs", "bucket": gcs_bucket, "prefix": "tenant-data/",
            "endpoint": gcs_endpoint, "credentials": gcs_credentials}}})
        local = Settings(data_dir=tmp_path / "other", signing_keys=settings.signing_keys,
                         local_storage_fsync=False, auth_failure_burst=100_000)
        gw = await start_gateway(aiohttp_client, local.with_changes(
            extra_storages=config.storages))
        recording = await gw.create_recording(storage="gcp")
        media = await gw.upload(recording["id"], blob, fmt="mp3")
        assert media["storage_backend"] == "gcs"
        objects = GcsProbe(gcs_endpoint, gcs_bucket).objects()
        assert len(objects) == 1 and objects[0].startswith("tenant-data/recordings/1/")
        async with gw.client.get(gw.raw_path(recording["id"], media["id"]), headers=gw.h(),
                                 ) as resp:
            assert resp.status == 200 and await resp.read() == blob
        async with gw.client.get("/storage", headers=gw.h("admin")) as resp:
            text = await resp.text()
        assert {"name": "gcp", "type": "gcs", "bucket": gcs_bucket, "prefix": "tenant-data/",
                "endpoint": gcs_endpoint, "default": False} in json.loads(text)["storages"]
        assert "PRIVATE" not in text and CLIENT_EMAIL not in text


async def open_gcs(settings: Settings, stack: AsyncExitStack) -> GcsStorage:
    storages = await open_storages(settings, stack)
    storage = storages["default"]
    assert isinstance(storage, GcsStorage)
    return storage


class TestWrites:
    async def test_failed_upload_of_several_chunks_leaves_nothing(
        self, settings: Settings, caplog: pytest.LogCaptureFixture
    ) -> None:
        probe = GcsProbe(settings.gcs_endpoint, settings.gcs_bucket)
        key = "recordings/1/2/abc.mp3"

        async def broken_body() -> Any:
            for _ in range(12):  # 12 MiB: two 5 MiB chunks go to the store
                yield b"x" * (1024 * 1024)
            raise ConnectionResetError("the client went away")

        async with AsyncExitStack() as stack:
            storage = await open_gcs(settings, stack)
            with caplog.at_level(logging.ERROR, logger="gateway.storage.gcs"), \
                    pytest.raises(ConnectionResetError):
                await storage.write(key, broken_body())
            assert probe.objects() == []
            assert not [r for r in caplog.records if "could not cancel" in r.getMessage()]

            async def body() -> Any:
                for index in range(11):  # 11 MiB: chunks of 5, 5 and 1 MiB
                    yield bytes([index]) * (1024 * 1024)

            assert await storage.write(key, body()) == 11 * 1024 * 1024
            assert probe.get(key) == b"".join(bytes([i]) * (1024 * 1024) for i in range(11))

    @pytest.mark.parametrize("size", [1000, 6 * 1024 * 1024], ids=["at-once", "resumable"])
    async def test_existing_object_is_never_replaced(self, settings: Settings,
                                                     size: int) -> None:
        probe = GcsProbe(settings.gcs_endpoint, settings.gcs_bucket)
        key = "recordings/1/2/abc.mp3"
        probe.put(key, b"the first writer's bytes")

        async def body() -> Any:
            yield b"w" * size

        async with AsyncExitStack() as stack:
            storage = await open_gcs(settings, stack)
            try:
                await storage.write(key, body())
            except Conflict:
                assert probe.get(key) == b"the first writer's bytes"
                return
        assert probe.get(key) == b"w" * size
        pytest.skip("fake-gcs-server ignores ifGenerationMatch=0 on resumable uploads: it "
                    "replaced the object (Google answers 412, which the gateway maps to 409)")

    async def test_one_token_for_many_requests(
        self, gw: Gateway, blob: bytes, gcs_token_endpoint: Any
    ) -> None:
        before = len(gcs_token_endpoint.issued)
        rid, mid = await gw.recording_with_media(blob, fmt="mp3")
        for start in range(0, 20_000, 1000):
            async with gw.client.get(gw.raw_path(rid, mid), headers={
                    **gw.h(), "Range": f"bytes={start}-{start + 99}"}) as resp:
                assert resp.status == 206 and await resp.read() == blob[start:start + 100]
        assert len(gcs_token_endpoint.issued) - before <= 1


async def test_changed_object_under_cached_validators(
    aiohttp_client: AiohttpClient, settings: Settings, blob: bytes
) -> None:
    """A GET carries ifGenerationMatch: bytes of another generation are never served
    under the validators announced (Google answers 412 → 503 with Retry-After: 0)."""
    gw = await start_gateway(aiohttp_client, settings.with_changes(cache_ttl=60))
    rid, mid = await gw.recording_with_media(blob, fmt="mp3")
    async with gw.client.get(gw.raw_path(rid, mid), headers=gw.h()) as resp:
        etag = resp.headers["ETag"]
        assert await resp.read() == blob
    key = gw.probe.objects()[0]
    gw.probe.remove_all()
    gw.probe.put(key, blob[::-1])  # another generation under the same name
    async with gw.client.get(gw.raw_path(rid, mid), headers={
            **gw.h(), "Range": "bytes=0-99"}) as resp:
        status, body = resp.status, await resp.read()
    if status == 206:
        assert resp.headers["ETag"] == etag
        assert body == blob[::-1][:100]
        pytest.skip("fake-gcs-server ignores ifGenerationMatch on reads: it served the new "
                    "generation's bytes under the old validators")
    assert status == 503 and resp.headers["Retry-After"] == "0"


class TestS3Interoperability:
    """GCS's XML API speaks S3 with HMAC keys: an `s3` storage on storage.googleapis.com.

    Nothing here reaches Google: the first test only builds a signed URL (botocore's
    presigner, no request), the second runs the same configuration against moto as a
    stand-in endpoint. That GCS accepts these requests is Google's documented
    interoperability, assumed here, not observed.
    """

    HMAC_ID = "GOOG1EXAMPLEHMACACCESSIDFORTESTS00000000000000000000000000000"
    HMAC_SECRET = "bGoa+V7g/yqDXvKRqq+JTFn4uQZbPiQJo4pf9RzJ"

    def storage_table(self, endpoint: str, bucket: str) -> dict[str, Any]:
        return {"type": "s3", "endpoint": endpoint, "region": "auto", "bucket": bucket,
                "prefix": "gateway/", "access_key": self.HMAC_ID,
                "secret_key": self.HMAC_SECRET}

    async def test_signed_url_for_google(self, settings: Settings) -> None:
        config = parse_config({"storages": {"gcs-hmac": self.storage_table(
            "https://storage.googleapis.com", "recordings-archive")}})
        assert self.HMAC_SECRET not in repr(config)
        async with AsyncExitStack() as stack:
            storages = await open_storages(settings.with_changes(
                extra_storages=config.storages), stack)
            signed = await storages["gcs-hmac"].presigned_url(
                "recordings/1/2/abc.mp3", filename="Team call.mp3",
                content_type="audio/mpeg", expires_in=900)
        assert signed is not None
        url = URL(signed, encoded=True)
        # Path-style, on Google's host: the bucket is the first path segment.
        assert (url.scheme, url.host) == ("https", "storage.googleapis.com")
        assert url.path == "/recordings-archive/gateway/recordings/1/2/abc.mp3"
        credential = url.query["X-Amz-Credential"].split("/")
        assert credential[0] == self.HMAC_ID
        assert credential[2:] == ["auto", "s3", "aws4_request"]
        assert url.query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
        assert url.query["X-Amz-Expires"] == "900"
        assert url.query["response-content-disposition"].startswith("attachment;")
        assert url.query["response-content-type"] == "audio/mpeg"
        assert self.HMAC_SECRET not in str(url)

    async def test_same_configuration_against_a_stand_in(
        self, aiohttp_client: AiohttpClient, settings: Settings, moto_endpoint: str,
        s3_bucket: str, tmp_path: Path, blob: bytes,
    ) -> None:
        config = parse_config({"storages": {"gcs-hmac": self.storage_table(
            moto_endpoint, s3_bucket)}})
        local = Settings(data_dir=tmp_path / "other", signing_keys=settings.signing_keys,
                         local_storage_fsync=False, auth_failure_burst=100_000)
        gw = await start_gateway(aiohttp_client, local.with_changes(
            extra_storages=config.storages))
        recording = await gw.create_recording(storage="gcs-hmac")
        media = await gw.upload(recording["id"], blob, fmt="mp3")
        async with gw.client.get(gw.raw_path(recording["id"], media["id"]), headers={
                **gw.h(), "Range": "bytes=100-199"}) as resp:
            assert resp.status == 206 and await resp.read() == blob[100:200]
        async with gw.client.get(f"/recordings/{recording['id']}/media/{media['id']}/download",
                                 headers=gw.h()) as resp:
            url = URL((await resp.json())["download_url"], encoded=True)
        assert url.query["X-Amz-Credential"].startswith(f"{self.HMAC_ID}/")
        async with aiohttp.ClientSession() as plain, plain.get(
                url, headers={"Range": "bytes=0-9"}) as resp:
            assert resp.status == 206 and await resp.read() == blob[:10]
        async with gw.client.post("/storage/gcs-hmac/check", headers=gw.h("admin")) as resp:
            assert resp.status == 200


class TestStoreFaults:
    """GCS's answers and failures, injected by a proxy in front of the emulator, map to
    the table of docs/storage.md: never a 500, always a JSON detail."""

    @pytest.fixture
    async def faulty(self, aiohttp_client: AiohttpClient, settings: Settings,
                     blob: bytes) -> Any:
        port = URL(settings.gcs_endpoint).port
        assert port is not None
        proxy = await FaultProxy.start("127.0.0.1", port)
        gw = await start_gateway(aiohttp_client, settings.with_changes(
            gcs_endpoint=proxy.url, storage_timeout=0.5, cache_ttl=60))
        rid, mid = await gw.recording_with_media(blob, fmt="mp3")
        yield gw, proxy, gw.raw_path(rid, mid), GcsProbe(settings.gcs_endpoint,
                                                         settings.gcs_bucket)
        await proxy.close()

    @pytest.mark.parametrize(("status", "reason", "expected", "retry_after"), [
        (429, "rateLimitExceeded", 503, "1"),
        (503, "backendError", 503, "1"),
        (412, "conditionNotMet", 503, "0"),
        (401, "authError", 502, None),
        (403, "forbidden", 502, None),
        (500, "internalError", 502, None),
        (404, "notFound", 404, None),
    ])
    async def test_error_answers_of_a_read(
        self, faulty: Any, status: int, reason: str, expected: int, retry_after: str | None
    ) -> None:
        gw, proxy, path, _ = faulty
        body = json.dumps({"error": {"code": status, "message": f"said {reason}",
                                     "errors": [{"reason": reason}]}}).encode()
        proxy.add(Fault.ANSWER, method="GET", path="alt=media", times=1,
                  answer=http_answer(status, body))
        async with gw.client.get(path, headers={**gw.h(), "Range": "bytes=0-99"}) as resp:
            assert resp.status == expected
            detail = (await resp.json())["detail"]
            assert resp.headers.get("Retry-After") == retry_after
        if expected == 502:
            assert detail == f"Storage 'default' answered {status} {reason}: said {reason}"

    async def test_silent_and_resetting_store(self, faulty: Any) -> None:
        gw, proxy, path, _ = faulty
        proxy.add(Fault.HANG, method="GET", path="alt=media", times=1)
        async with gw.client.get(path, headers=gw.h()) as resp:
            assert resp.status == 504
            assert (await resp.json())["detail"] == "Storage 'default' did not answer in time"
        proxy.add(Fault.RESET, method="GET", path="alt=media", times=2)
        async with gw.client.get(path, headers=gw.h()) as resp:
            assert resp.status == 502
            assert "is unreachable" in (await resp.json())["detail"]

    async def test_failed_chunk_fails_the_upload_cleanly(self, faulty: Any) -> None:
        gw, proxy, _, probe = faulty
        proxy.add(Fault.ANSWER, method="PUT", path="upload_id=", times=1,
                  answer=http_answer(503, b'{"error": {"code": 503, "message": "busy"}}'))
        rid = (await gw.create_recording())["id"]
        async with gw.client.post(f"/recordings/{rid}/media", params={"format": "wav"},
                                  data=io.BytesIO(b"\0" * (6 * 1024 * 1024)),
                                  headers=gw.h()) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        # Straight to the emulator: the proxy runs on this event loop, urllib would block it.
        assert [o for o in probe.objects() if o.endswith(".wav")] == []
        # The one chunk was refused, and the session was then cancelled.
        assert [m for m, t in proxy.requests if "upload_id=" in t] == ["PUT", "DELETE"]


async def test_emulator_without_a_service_account(
    aiohttp_client: AiohttpClient, settings: Settings, blob: bytes, gcs_token_endpoint: Any
) -> None:
    """With an endpoint and no key, requests carry no token and downloads are the
    gateway's own signed raw paths (nothing to sign a GCS URL with)."""
    issued = len(gcs_token_endpoint.issued)
    gw = await start_gateway(aiohttp_client, settings.with_changes(gcs_credentials=""))
    rid, mid = await gw.recording_with_media(blob, fmt="mp3")
    async with gw.client.get(gw.raw_path(rid, mid), headers={
            **gw.h(), "Range": "bytes=10-19"}) as resp:
        assert resp.status == 206 and await resp.read() == blob[10:20]
    url = URL((await download_info(gw, rid, mid))["download_url"])
    assert url.path == gw.raw_path(rid, mid) and "signature" in url.query
    async with gw.client.get(url.path_qs) as resp:  # no credentials
        assert resp.status == 200 and await resp.read() == blob
    assert len(gcs_token_endpoint.issued) == issued
