"""Object storage configuration, named storages, the storage check, and storage faults."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.models import Role
from gateway.settings import Settings, SettingsError, load_settings
from gateway.storage.config import StorageConfig, TenantConfig
from tests.conftest import (
    AiohttpClient,
    Gateway,
    s3_settings,
    start_gateway,
)
from tests.storage_probe import S3Probe, s3_client
from tests.test_settings_and_cli import _base_env


class TestEnvironment:
    def env(self, tmp_path: Path, **values: str) -> dict[str, str]:
        return {"GATEWAY_DATA_DIR": str(tmp_path), **values}

    def test_minio_as_vexa_documents_it(self, tmp_path: Path) -> None:
        settings = load_settings(self.env(
            tmp_path, STORAGE_BACKEND="minio", MINIO_ENDPOINT="minio:9000",
            MINIO_ACCESS_KEY="vexa-access-key", MINIO_SECRET_KEY="vexa-secret-key",
            MINIO_BUCKET="vexa-recordings", MINIO_SECURE="false",
            MINIO_PUBLIC_ENDPOINT="media.example.com", GATEWAY_S3_PART_SIZE="16M"))
        storage = settings.env_storage()
        assert (storage.type, storage.endpoint, storage.bucket) == (
            "minio", "http://minio:9000", "vexa-recordings")
        assert storage.public_endpoint == "http://media.example.com"
        assert settings.s3_part_size == 16 * 1024 * 1024
        assert "vexa-secret-key" not in repr(settings) and "vexa-access-key" not in repr(storage)

    def test_s3_without_keys_uses_the_credential_chain(self, tmp_path: Path) -> None:
        settings = load_settings(self.env(tmp_path, STORAGE_BACKEND="s3",
                                          S3_BUCKET="vexa-recordings", AWS_REGION="eu-west-1"))
        storage = settings.env_storage()
        assert (storage.endpoint, storage.region, storage.access_key) == ("", "eu-west-1", "")

    @pytest.mark.parametrize(("values", "message"), [
        ({"STORAGE_BACKEND": "minio", "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b",
          "MINIO_BUCKET": "bucket"}, "MINIO_ENDPOINT: is required when STORAGE_BACKEND=minio"),
        ({"STORAGE_BACKEND": "s3"}, "S3_BUCKET: is required when STORAGE_BACKEND=s3"),
        ({"STORAGE_BACKEND": "s3", "S3_BUCKET": "Bad_Bucket"},
         "S3_BUCKET: must be an S3 bucket name, got 'Bad_Bucket'"),
        ({"STORAGE_BACKEND": "s3", "S3_BUCKET": "ok-bucket", "AWS_ACCESS_KEY_ID": "x"},
         "AWS_SECRET_ACCESS_KEY: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set "
         "together, or neither"),
        ({"STORAGE_BACKEND": "s3", "S3_BUCKET": "ok-bucket", "S3_ENDPOINT": "ftp://x"},
         "S3_ENDPOINT: must be a host[:port] or an http(s) URL, got 'ftp://x'"),
        ({"GATEWAY_S3_PART_SIZE": "1M"}, "GATEWAY_S3_PART_SIZE: must be at least 5M (the S3 "
                                         "minimum)"),
        ({"GATEWAY_STORAGE_TIMEOUT": "never"},
         "GATEWAY_STORAGE_TIMEOUT: must be a number from 0.1 to 600, got 'never'"),
    ])
    def test_wrong_storage_settings(
        self, tmp_path: Path, values: dict[str, str], message: str
    ) -> None:
        with pytest.raises(SettingsError) as caught:
            load_settings(self.env(tmp_path, **values))
        assert str(caught.value) == message


class TestConfigFile:
    def load(self, tmp_path: Path, text: str) -> Settings:
        path = tmp_path / "gateway.toml"
        path.write_text(text)
        return load_settings({"GATEWAY_DATA_DIR": str(tmp_path / "d"),
                              "GATEWAY_CONFIG": str(path)})

    def test_example_file_parses(self, tmp_path: Path) -> None:
        example = Path(__file__).parent.parent / "config" / "gateway.toml"
        text = example.read_text().replace("/data/recordings-nas", str(tmp_path / "nas"))
        settings = self.load(tmp_path, text)
        names = [s.name for s in settings.storage_configs()]
        assert names[0] == "default" and len(names) >= 3
        assert settings.tenant_storage("acme") == "archive"

    def test_named_storages_and_tenants(self, tmp_path: Path) -> None:
        settings = self.load(tmp_path, f"""
default_storage = "archive"

[storages.archive]
type = "s3"
bucket = "recordings-archive"
prefix = "gateway"
region = "eu-west-1"
access_key = "AKIAEXAMPLE"
secret_key = "very-secret"

[storages.nas]
type = "local"
path = "{tmp_path / 'nas'}"

[tenants.acme]
storage = "nas"
""")
        archive = settings.storage_configs()[1]
        assert (archive.name, archive.bucket, archive.prefix) == (
            "archive", "recordings-archive", "gateway/")
        assert settings.default_storage == "archive"
        assert settings.tenant_storage("acme") == "nas"
        assert settings.tenant_storage("other") is None
        assert "very-secret" not in repr(settings)

    @pytest.mark.parametrize(("text", "message"), [
        ("[storages.x]\ntype = 'ftp'",
         "storages.x.type: must be one of local, minio, s3, gcs, azure"),
        ("[storages.x]\ntype = 's3'", "storages.x.bucket: must be an S3 bucket name, got ''"),
        ("[storages.x]\ntype = 's3'\nbucket = 'b-1'\nregion = 3",
         "storages.x.region: must be a string"),
        ("[storages.x]\ntype = 's3'\nbucket = 'b-1'\naccess_key = 'a'",
         "storages.x: access_key and secret_key go together"),
        ("[storages.x]\ntype = 'minio'\nbucket = 'b-1'", "storages.x.endpoint: is required for "
                                                          "minio"),
        ("[storages.x]\ntype = 'local'\npath = 'relative'",
         "storages.x.path: must be an absolute directory path"),
        ("[storages.x]\ntype = 's3'\nbucket = 'b-1'\npassword = 'p'",
         "storages.x: unknown key(s) password"),
        ("[storages.default]\ntype = 's3'\nbucket = 'b-1'",
         "storages.default: the name is taken by the storage the environment describes"),
        ("default_storage = 'nowhere'", "default_storage: names no storage: 'nowhere'"),
        ("[tenants.acme]\nstorage = 'nowhere'", "tenants.acme.storage: names no storage: "
                                                "'nowhere'"),
        ("".join(f"[storages.s{i}]\ntype = 's3'\nbucket = 'b-{i}'\n" for i in range(10)),
         "storages: at most 10 storages, 'default' included"),
        ("verbose = true", "top level: unknown key(s) verbose"),
    ])
    def test_errors_name_the_key(self, tmp_path: Path, text: str, message: str) -> None:
        with pytest.raises(SettingsError) as caught:
            self.load(tmp_path, text)
        assert str(caught.value) == f"GATEWAY_CONFIG: gateway.toml: {message}"

    def test_unreadable_and_invalid_files(self, tmp_path: Path) -> None:
        with pytest.raises(SettingsError, match=r"^GATEWAY_CONFIG: cannot read"):
            load_settings({"GATEWAY_DATA_DIR": str(tmp_path),
                           "GATEWAY_CONFIG": str(tmp_path / "missing.toml")})
        with pytest.raises(SettingsError, match=r"^GATEWAY_CONFIG: .* is not valid TOML"):
            self.load(tmp_path, "[storages")


@pytest.fixture
def archive_bucket(moto_endpoint: str) -> str:
    name = f"archive-{uuid.uuid4().hex[:12]}"
    s3_client(moto_endpoint).create_bucket(Bucket=name)
    return name


def with_archive(settings: Settings, moto_endpoint: str, bucket: str, **changes: Any) -> Settings:
    archive = StorageConfig("archive", "s3", bucket=bucket, prefix="tenant-data/",
                            endpoint=moto_endpoint, access_key="testing",
                            secret_key="archive-secret")
    return settings.with_changes(extra_storages=(archive,),
                                 tenants=(TenantConfig("acme", "archive"),), **changes)


@pytest.fixture
def backend() -> str:
    return "local"  # the environment's storage is local; named ones are added per test


class TestNamedStorages:
    async def test_selection_order_request_tenant_default(
        self, aiohttp_client: AiohttpClient, settings: Settings, moto_endpoint: str,
        archive_bucket: str, blob: bytes,
    ) -> None:
        gw = await start_gateway(aiohttp_client,
                                 with_archive(settings, moto_endpoint, archive_bucket))
        await gw.add_key("acme-user", 10, Role.RECORDER, tenant="acme")
        archive = S3Probe(moto_endpoint, archive_bucket)
        # 1. named in the request
        rid, mid = await gw.recording_with_media(blob[:1000], fmt="mp3")
        rec = await gw.create_recording(storage="archive")
        await gw.upload(rec["id"], blob[:2000], fmt="mp3")
        # 2. the tenant's storage
        acme = await gw.create_recording(who="acme-user")
        await gw.upload(acme["id"], blob[:3000], fmt="mp3", who="acme-user")
        # 3. the default
        assert len(gw.probe.objects()) == 1  # only the first one is on local disk
        assert archive.objects() == sorted([
            f"tenant-data/recordings/1/{rec['id']}/{rec['session_uid']}.mp3",
            f"tenant-data/recordings/10/{acme['id']}/{acme['session_uid']}.mp3",
        ])
        for who, recording in (("alice", rec), ("acme-user", acme)):
            async with gw.client.get(f"/recordings/{recording['id']}", headers=gw.h(who)) as r:
                media = (await r.json())["media_files"][0]
                assert media["storage_backend"] == "s3"
            async with gw.client.get(gw.raw_path(recording["id"], media["id"]),
                                     headers={**gw.h(who), "Range": "bytes=10-19"}) as r:
                assert r.status == 206 and await r.read() == blob[10:20]
        async with gw.client.get(gw.raw_path(rid, mid), headers=gw.h()) as r:
            assert await r.read() == blob[:1000]

    async def test_recording_stays_on_its_storage_when_the_default_changes(
        self, aiohttp_client: AiohttpClient, settings: Settings, moto_endpoint: str,
        archive_bucket: str, wav_bytes: bytes,
    ) -> None:
        first = await start_gateway(aiohttp_client,
                                    with_archive(settings, moto_endpoint, archive_bucket))
        old_rid, old_mid = await first.recording_with_media(wav_bytes)
        # Same catalog and data dir, new default: a restart with default_storage changed.
        second = await start_gateway(aiohttp_client, with_archive(
            settings, moto_endpoint, archive_bucket, default_storage="archive"))
        second.keys = first.keys
        new_rid, _ = await second.recording_with_media(wav_bytes[:5000], fmt="mp3")
        assert len(S3Probe(moto_endpoint, archive_bucket).objects()) == 1
        async with second.client.get(second.raw_path(old_rid, old_mid), headers=second.h()) as r:
            assert r.status == 200 and await r.read() == wav_bytes
        assert new_rid != old_rid

    async def test_backend_changed_under_a_name_is_refused_clearly(
        self, aiohttp_client: AiohttpClient, settings: Settings, moto_endpoint: str,
        s3_bucket: str, wav_bytes: bytes,
    ) -> None:
        first = await start_gateway(aiohttp_client, settings)
        rid, mid = await first.recording_with_media(wav_bytes)
        moved = await start_gateway(aiohttp_client,
                                    s3_settings(settings, moto_endpoint, s3_bucket))
        moved.keys = first.keys
        async with moved.client.get(moved.raw_path(rid, mid), headers=moved.h()) as r:
            assert r.status == 502
            assert await r.json() == {"detail": (
                "Storage 'default' is now s3, but this file was stored on local; "
                "configure the old storage under its own name")}


class TestAdminEndpoints:
    @pytest.fixture
    async def gw(self, aiohttp_client: AiohttpClient, settings: Settings,
                 moto_endpoint: str, archive_bucket: str) -> Gateway:
        return await start_gateway(aiohttp_client,
                                   with_archive(settings, moto_endpoint, archive_bucket))

    async def test_list_has_no_secrets(self, gw: Gateway, archive_bucket: str,
                                       moto_endpoint: str) -> None:
        async with gw.client.get("/storage", headers=gw.h("admin")) as resp:
            assert resp.status == 200
            text = await resp.text()
            body = await resp.json()
        assert body == {"default": "default", "storages": [
            {"name": "default", "type": "local", "default": True},
            {"name": "archive", "type": "s3", "bucket": archive_bucket, "prefix": "tenant-data/",
             "endpoint": moto_endpoint, "default": False},
        ]}
        assert "archive-secret" not in text and "testing" not in text
        assert str(gw.settings.local_storage_dir) not in text
        for who in ("alice", "viewer"):
            async with gw.client.get("/storage", headers=gw.h(who)) as resp:
                assert resp.status == 403

    async def test_check_writes_reads_and_deletes(
        self, gw: Gateway, moto_endpoint: str, archive_bucket: str
    ) -> None:
        for name in ("default", "archive"):
            async with gw.client.post(f"/storage/{name}/check", headers=gw.h("admin")) as resp:
                assert resp.status == 200
                body = await resp.json()
            assert body["status"] == "ok" and body["steps"] == ["write", "read", "delete"]
            assert body["object"].rsplit("/", 1)[-1].startswith("gateway-check-")
            assert body["object"].endswith(".md")
        assert gw.probe.objects() == []
        assert S3Probe(moto_endpoint, archive_bucket).objects() == []
        async with gw.client.post("/storage/nowhere/check", headers=gw.h("admin")) as resp:
            assert resp.status == 404
        async with gw.client.post("/storage/archive/check", headers=gw.h("alice")) as resp:
            assert resp.status == 403


async def check_detail(aiohttp_client: AiohttpClient, settings: Settings) -> tuple[int, str]:
    gw = await start_gateway(aiohttp_client, settings)
    async with gw.client.post("/storage/default/check", headers=gw.h("admin")) as resp:
        return resp.status, (await resp.json())["detail"]


@pytest.fixture
def moto_auth(moto_endpoint: str) -> Iterator[None]:
    """Make the moto server check credentials (it accepts any by default)."""

    def reset(count: str) -> None:
        request = urllib.request.Request(
            f"{moto_endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
            headers={"Content-Type": "text/plain"})  # a form body would hide the count
        with urllib.request.urlopen(request, timeout=5):
            pass

    reset("0")
    try:
        yield
    finally:
        reset("inf")


class TestStorageFaults:
    async def test_wrong_bucket_fails_the_check(
        self, aiohttp_client: AiohttpClient, settings: Settings, moto_endpoint: str
    ) -> None:
        status, detail = await check_detail(
            aiohttp_client, s3_settings(settings, moto_endpoint, "no-such-bucket"))
        assert status == 502
        assert detail == ("Storage 'default' check failed at write: NoSuchBucket: "
                          "The specified bucket does not exist")

    async def test_wrong_keys_fail_the_check(
        self, aiohttp_client: AiohttpClient, settings: Settings, moto_endpoint: str,
        s3_bucket: str, moto_auth: None,
    ) -> None:
        status, detail = await check_detail(
            aiohttp_client, s3_settings(settings, moto_endpoint, s3_bucket))
        assert status == 502
        assert detail.startswith("Storage 'default' check failed at write: InvalidAccessKeyId:")
        assert "testing" not in detail

    async def test_unreachable_store(
        self, aiohttp_client: AiohttpClient, settings: Settings
    ) -> None:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        status, detail = await check_detail(
            aiohttp_client, s3_settings(settings, f"http://127.0.0.1:{port}", "bucket"))
        assert status == 502
        assert detail.startswith("Storage 'default' check failed at write: Storage 'default' "
                                 "is unreachable")

    async def test_reads_from_a_dead_or_silent_store(
        self, aiohttp_client: AiohttpClient, settings: Settings, moto_endpoint: str,
        s3_bucket: str, blob: bytes,
    ) -> None:
        working = s3_settings(settings, moto_endpoint, s3_bucket)
        first = await start_gateway(aiohttp_client, working)
        rid, mid = await first.recording_with_media(blob, fmt="mp3")
        async with silent_server() as silent_port:
            for endpoint, status in ((f"http://127.0.0.1:{silent_port}", 504),
                                     (f"http://127.0.0.1:{_closed_port()}", 502)):
                broken = await start_gateway(aiohttp_client, working.with_changes(
                    s3_endpoint=endpoint, storage_timeout=0.5, cache_ttl=0))
                broken.keys = first.keys
                started = asyncio.get_running_loop().time()
                async with broken.client.get(broken.raw_path(rid, mid),
                                             headers=broken.h()) as resp:
                    assert resp.status == status
                    assert set(await resp.json()) == {"detail"}
                # Two attempts of 0.5 s each, plus backoff: well within a few seconds.
                assert asyncio.get_running_loop().time() - started < 5
                async with broken.client.get("/readyz") as resp:
                    assert resp.status == 503


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class silent_server:
    """A TCP server that accepts connections and never answers."""

    async def __aenter__(self) -> int:
        self._held: list[asyncio.StreamWriter] = []

        async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._held.append(writer)

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._held:
            writer.close()
        self._server.close()
        await self._server.wait_closed()


class TestCommand:
    def run(self, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "storage", *args],
            env={**_base_env(), "GATEWAY_DATA_DIR": str(tmp_path), **env},
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)

    def test_check_all_and_one(self, tmp_path: Path, moto_endpoint: str, s3_bucket: str) -> None:
        env = {"STORAGE_BACKEND": "s3", "S3_ENDPOINT": moto_endpoint, "S3_BUCKET": s3_bucket,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        result = self.run(tmp_path, "check", **env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"ok      default (s3, bucket {s3_bucket}")
        assert "wrote, read back and deleted gateway-check-" in result.stdout
        listed = self.run(tmp_path, "list", **env)
        assert listed.returncode == 0 and "[default]" in listed.stdout
        bad = self.run(tmp_path, "check", "default", **{**env, "S3_BUCKET": "missing-bucket"})
        assert bad.returncode == 1
        assert "FAILED  default" in bad.stdout and "NoSuchBucket" in bad.stdout
        unknown = self.run(tmp_path, "check", "nowhere", **env)
        assert unknown.returncode == 1 and "no storage named 'nowhere'" in unknown.stderr


async def test_multipart_upload_of_several_parts(
    aiohttp_client: AiohttpClient, settings: Settings, moto_endpoint: str, s3_bucket: str
) -> None:
    gw = await start_gateway(aiohttp_client, s3_settings(settings, moto_endpoint, s3_bucket))
    data = bytes(range(256)) * (4096 * 13)  # 13 MiB: parts of 5, 5 and 3 MiB
    rid, mid = await gw.recording_with_media(data, fmt="mp3")
    async with gw.client.get(gw.raw_path(rid, mid), headers=gw.h()) as resp:
        assert await resp.read() == data
    head = s3_client(moto_endpoint).head_object(
        Bucket=s3_bucket, Key=gw.probe.objects()[0])
    assert head["ETag"].endswith('-3"')  # assembled from three parts
