"""What is particular to Azure Blob Storage, against Azurite on 127.0.0.1.

The media suite (every Range and precondition case, HEAD, uploads, disconnects) runs
on Azure through the `backend` fixture; here: the storage's configuration, its SAS
download URLs as a browser uses them, its check, its errors, and its block uploads.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from azure.storage.blob import BlobServiceClient
from yarl import URL

from gateway.settings import Settings, SettingsError, load_settings
from gateway.storage.config import ConfigError, storage_from_table
from tests.azurite import ACCOUNT, write_config
from tests.conftest import (
    AZURITE_KEY,
    AiohttpClient,
    Gateway,
    azure_config,
    azure_only,
    azure_settings,
    start_gateway,
)
from tests.storage_probe import AzureProbe
from tests.test_storages import _closed_port, silent_server

# --- configuration -----------------------------------------------------------------------

OTHER_KEY = "c2VjcmV0LWFjY291bnQta2V5LXRoYXQtbXVzdC1uZXZlci1iZS1zZWVu"  # base64


class TestConfig:
    def test_account_name_and_key(self) -> None:
        config = storage_from_table("blobs", {
            "type": "azure", "account_name": "recordings01", "account_key": OTHER_KEY,
            "container": "meeting-audio", "prefix": "gw"})
        assert (config.type, config.bucket, config.prefix) == ("azure", "meeting-audio", "gw/")
        assert config.endpoint == "https://recordings01.blob.core.windows.net"
        assert OTHER_KEY not in repr(config)

    @pytest.mark.parametrize(("connection", "endpoint"), [
        (f"DefaultEndpointsProtocol=https;AccountName=recordings01;AccountKey={OTHER_KEY};"
         "EndpointSuffix=core.chinacloudapi.cn", "https://recordings01.blob.core.chinacloudapi.cn"),
        (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={OTHER_KEY};"
         f"BlobEndpoint=http://127.0.0.1:10000/{ACCOUNT};",
         f"http://127.0.0.1:10000/{ACCOUNT}"),
    ])
    def test_connection_string(self, connection: str, endpoint: str) -> None:
        config = storage_from_table("blobs", {"type": "azure", "connection_string": connection,
                                              "container": "rec"})
        assert config.endpoint == endpoint
        assert config.account_key == OTHER_KEY
        assert OTHER_KEY not in repr(config) and connection not in repr(config)

    @pytest.mark.parametrize(("table", "message"), [
        ({"container": "rec"}, "storages.x: needs account_name and account_key, or "
                               "connection_string"),
        ({"container": "rec", "account_name": "acct01"},
         "storages.x: needs account_name and account_key, or connection_string"),
        ({"container": "rec", "account_name": "acct01", "account_key": "not base64!"},
         "storages.x.account_key: must be the base64 account key"),
        ({"container": "Rec_1", "account_name": "acct01", "account_key": OTHER_KEY},
         "storages.x.container: must be an Azure container name (3 to 63 lowercase letters, "
         "digits and single hyphens), got 'Rec_1'"),
        ({"container": "a--b", "account_name": "acct01", "account_key": OTHER_KEY},
         "storages.x.container: must be an Azure container name (3 to 63 lowercase letters, "
         "digits and single hyphens), got 'a--b'"),
        ({"container": "rec", "account_name": "Acct", "account_key": OTHER_KEY},
         "storages.x.account_name: must be 3 to 24 lowercase letters and digits, got 'Acct'"),
        ({"container": "rec", "connection_string": f"AccountName=acct01;SharedAccessSignature="
                                                   f"sv=2020&sig={OTHER_KEY}"},
         "storages.x.connection_string: must hold AccountName and AccountKey (download links "
         "are SAS URLs signed with the account key)"),
        ({"container": "rec", "connection_string": OTHER_KEY},
         "storages.x.connection_string: is not a connection string (Name=value pairs joined "
         "by ;)"),
        ({"container": "rec", "account_name": "acct01", "account_key": OTHER_KEY,
          "connection_string": f"AccountName=acct01;AccountKey={OTHER_KEY}"},
         "storages.x: give either connection_string or account_name and account_key, not both"),
        ({"container": "rec", "account_name": "acct01", "account_key": OTHER_KEY,
          "bucket": "rec"}, "storages.x: unknown key(s) bucket"),
    ])
    def test_mistakes_are_named_and_keep_the_secret(self, table: dict[str, Any],
                                                    message: str) -> None:
        with pytest.raises(ConfigError) as caught:
            storage_from_table("x", {"type": "azure", **table})
        assert str(caught.value) == message
        assert OTHER_KEY not in str(caught.value)

    def test_toml_file_declares_it(self, tmp_path: Path) -> None:
        config = tmp_path / "gateway.toml"
        config.write_text(f'default_storage = "blobs"\n[storages.blobs]\ntype = "azure"\n'
                          f'container = "rec"\naccount_name = "acct01"\n'
                          f'account_key = "{OTHER_KEY}"\n')
        settings = load_settings({"GATEWAY_DATA_DIR": str(tmp_path / "data"),
                                  "GATEWAY_CONFIG": str(config)})
        assert settings.default_storage == "blobs"
        assert [c.type for c in settings.storage_configs()] == ["local", "azure"]
        assert OTHER_KEY not in repr(settings)
        config.write_text(config.read_text().replace('"rec"', '"no_such"'))
        with pytest.raises(SettingsError) as caught:
            load_settings({"GATEWAY_DATA_DIR": str(tmp_path / "data"),
                           "GATEWAY_CONFIG": str(config)})
        assert "storages.blobs.container" in str(caught.value)
        assert OTHER_KEY not in str(caught.value)


def test_azure_is_a_named_storage_only(tmp_path: Path) -> None:
    """STORAGE_BACKEND keeps Vexa's values: Azure is declared in the TOML file."""
    with pytest.raises(SettingsError) as caught:
        load_settings({"GATEWAY_DATA_DIR": str(tmp_path), "STORAGE_BACKEND": "azure"})
    assert str(caught.value) == "STORAGE_BACKEND: must be one of local, minio, s3, gcs, got 'azure'"


def test_the_sdk_is_imported_only_for_azure_storages(tmp_path: Path) -> None:
    code = ("import asyncio, sys, contextlib\n"
            "from gateway.settings import load_settings\n"
            "from gateway.storage.factory import open_storages\n"
            "async def main():\n"
            "    async with contextlib.AsyncExitStack() as stack:\n"
            f"        await open_storages(load_settings({{'GATEWAY_DATA_DIR': {str(tmp_path)!r}}}),"
            " stack)\n"
            "asyncio.run(main())\n"
            "print('azure' in sys.modules, 'azure.storage.blob' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "False False"


# --- download links: SAS URLs ------------------------------------------------------------

async def download(gw: Gateway, rid: int, mid: int) -> dict[str, Any]:
    async with gw.client.get(f"/recordings/{rid}/media/{mid}/download",
                             headers=gw.h()) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


@azure_only
class TestSasDownload:
    async def test_sas_url_fetched_by_a_plain_client(self, gw: Gateway,
                                                     wav_bytes: bytes) -> None:
        rid, mid = await gw.recording_with_media(wav_bytes)
        info = await download(gw, rid, mid)
        assert info["filename"] == f"{rid}_audio.wav" and info["expires_in"] == 3600
        url = URL(info["download_url"])
        config = gw.settings.storage_configs()[1]
        assert str(url.with_query(None)).startswith(f"{config.endpoint}/{config.bucket}/"
                                                    f"recordings/1/{rid}/")
        assert url.query["sp"] == "r"  # read only
        assert "se" in url.query and "sig" in url.query
        async with aiohttp.ClientSession() as plain:
            async with plain.get(info["download_url"]) as resp:
                assert resp.status == 200
                assert await resp.read() == wav_bytes
                # rsct and rscd: the blob service answers with the gateway's choice.
                assert resp.headers["Content-Type"] == "audio/wav"
                assert resp.headers["Content-Disposition"] == (
                    f"attachment; filename=\"{rid}_audio.wav\"; "
                    f"filename*=UTF-8''{rid}_audio.wav")
            async with plain.get(info["download_url"], headers={"Range": "bytes=4-11"}) as resp:
                assert resp.status == 206
                assert resp.headers["Content-Range"] == f"bytes 4-11/{len(wav_bytes)}"
                assert await resp.read() == wav_bytes[4:12]
            async with plain.get(info["download_url"],
                                 headers={"Range": f"bytes={len(wav_bytes) - 3}-"}) as resp:
                assert resp.status == 206 and await resp.read() == wav_bytes[-3:]
            # Read only: the same signature neither writes nor deletes.
            async with plain.put(info["download_url"], data=b"x",
                                 headers={"x-ms-blob-type": "BlockBlob"}) as resp:
                assert resp.status == 403
            async with plain.delete(info["download_url"]) as resp:
                assert resp.status == 403
            # A tampered signature is refused.
            forged = url.update_query(sig=url.query["sig"][::-1])
            async with plain.get(forged) as resp:
                assert resp.status == 403
        assert gw.probe.get(gw.probe.objects()[0]) == wav_bytes

    async def test_expired_sas_url_is_refused_by_the_store(
        self, aiohttp_client: AiohttpClient, settings: Settings, wav_bytes: bytes
    ) -> None:
        # Azurite checks a SAS's expiry (`se`) on every request, as Azure does.
        gw = await start_gateway(aiohttp_client, settings.with_changes(presign_expiry=1))
        rid, mid = await gw.recording_with_media(wav_bytes)
        info = await download(gw, rid, mid)
        assert info["expires_in"] == 1
        async with aiohttp.ClientSession() as plain:
            async with plain.get(info["download_url"]) as resp:
                assert resp.status == 200 and await resp.read() == wav_bytes
            await asyncio.sleep(2.1)  # `se` has whole seconds
            async with plain.get(info["download_url"]) as resp:
                assert resp.status == 403
                # Azure says AuthenticationFailed; Azurite, AuthorizationFailure.
                assert resp.headers["x-ms-error-code"] in ("AuthenticationFailed",
                                                           "AuthorizationFailure")
                assert wav_bytes[:64] not in await resp.read()

    async def test_public_endpoint_is_the_host_of_sas_urls(
        self, aiohttp_client: AiohttpClient, settings: Settings, azurite_endpoint: str,
        azure_container: str, wav_bytes: bytes,
    ) -> None:
        public = await start_gateway(aiohttp_client, settings.with_changes(extra_storages=(
            azure_config(azurite_endpoint, azure_container,
                         public_endpoint="https://media.example.com/blobs"),)))
        rid, mid = await public.recording_with_media(wav_bytes)
        url = URL((await download(public, rid, mid))["download_url"])
        assert (url.scheme, url.host) == ("https", "media.example.com")
        assert url.path.startswith(f"/blobs/{azure_container}/recordings/1/{rid}/")
        # The signature covers the blob, not the host: moved back onto Azurite, it works.
        local = URL(azurite_endpoint).with_path(
            url.path.replace("/blobs/", f"/{ACCOUNT}/", 1)).with_query(url.query)
        async with aiohttp.ClientSession() as plain, plain.get(local) as resp:
            assert resp.status == 200 and await resp.read() == wav_bytes


# --- the check, and a store that fails ---------------------------------------------------

async def check(gw: Gateway, name: str = "azure") -> tuple[int, dict[str, Any]]:
    async with gw.client.post(f"/storage/{name}/check", headers=gw.h("admin")) as resp:
        return resp.status, await resp.json()


def with_azure(settings: Settings, endpoint: str, container: str, **table: Any) -> Settings:
    return settings.with_changes(extra_storages=(azure_config(endpoint, container, **table),),
                                 default_storage="azure", storage_timeout=0.5, cache_ttl=0)


@azure_only
class TestCheck:
    async def test_check_writes_reads_and_deletes(self, gw: Gateway) -> None:
        status, body = await check(gw)
        assert status == 200, body
        assert body["steps"] == ["write", "read", "delete"]
        assert body["object"].startswith("gateway-check-") and body["object"].endswith(".md")
        assert gw.probe.objects() == []

    async def test_list_shows_the_container_and_no_secret(self, gw: Gateway) -> None:
        async with gw.client.get("/storage", headers=gw.h("admin")) as resp:
            text = await resp.text()
            listed = (await resp.json())["storages"]
        config = gw.settings.storage_configs()[1]
        assert {"name": "azure", "type": "azure", "container": config.bucket, "prefix": "",
                "endpoint": config.endpoint, "default": True} in listed
        assert AZURITE_KEY not in text and AZURITE_KEY[:20] not in text

    async def test_wrong_container(self, aiohttp_client: AiohttpClient, settings: Settings,
                                   azurite_endpoint: str) -> None:
        gw = await start_gateway(aiohttp_client,
                                 with_azure(settings, azurite_endpoint, "no-such-container"))
        assert await check(gw) == (502, {"detail": (
            "Storage 'azure' check failed at write: ContainerNotFound: The specified "
            "container does not exist.")})

    async def test_wrong_key(self, aiohttp_client: AiohttpClient, settings: Settings,
                             azurite_endpoint: str, azure_container: str) -> None:
        gw = await start_gateway(aiohttp_client, with_azure(
            settings, azurite_endpoint, azure_container, account_key=OTHER_KEY))
        status, body = await check(gw)
        assert status == 502
        assert body["detail"] == (
            "Storage 'azure' check failed at write: AuthorizationFailure: Server failed to "
            "authenticate the request. Make sure the value of the Authorization header is "
            "formed correctly including the signature.")
        async with gw.client.get("/readyz") as resp:
            assert resp.status == 503

    async def test_unreachable_store(self, aiohttp_client: AiohttpClient,
                                     settings: Settings, azure_container: str) -> None:
        gw = await start_gateway(aiohttp_client, with_azure(
            settings, f"http://127.0.0.1:{_closed_port()}/{ACCOUNT}", azure_container))
        status, body = await check(gw)
        assert status == 502
        assert body["detail"].startswith(
            "Storage 'azure' check failed at write: Storage 'azure' is unreachable")

    async def test_reads_from_a_dead_or_silent_store(
        self, aiohttp_client: AiohttpClient, settings: Settings, azurite_endpoint: str,
        azure_container: str, blob: bytes,
    ) -> None:
        first = await start_gateway(aiohttp_client, settings)
        rid, mid = await first.recording_with_media(blob, fmt="mp3")
        async with silent_server() as silent_port:
            for endpoint, status in ((f"http://127.0.0.1:{silent_port}/{ACCOUNT}", 504),
                                     (f"http://127.0.0.1:{_closed_port()}/{ACCOUNT}", 502)):
                broken = await start_gateway(aiohttp_client, with_azure(
                    settings, endpoint, azure_container))
                broken.keys = first.keys
                started = asyncio.get_running_loop().time()
                async with broken.client.get(broken.raw_path(rid, mid),
                                             headers=broken.h()) as resp:
                    assert resp.status == status
                    assert set(await resp.json()) == {"detail"}
                # Two tries of 0.5 s each and a second between them.
                assert asyncio.get_running_loop().time() - started < 5
                async with broken.client.get("/readyz") as resp:
                    assert resp.status == 503


@azure_only
async def test_a_throttling_store_is_503_with_retry_after(
    aiohttp_client: AiohttpClient, aiohttp_server: Any, settings: Settings,
    azure_container: str, blob: bytes,
) -> None:
    """Azurite never throttles: a server that answers as a busy blob service does."""
    first = await start_gateway(aiohttp_client, settings)
    rid, mid = await first.recording_with_media(blob, fmt="mp3")
    answered: list[str] = []

    async def busy(request: web.Request) -> web.Response:
        answered.append(request.method)
        return web.Response(status=503, headers={"x-ms-error-code": "ServerBusy"},
                            text="<Error><Code>ServerBusy</Code></Error>")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", busy)
    server = await aiohttp_server(app)
    busy_gw = await start_gateway(aiohttp_client, with_azure(
        settings, str(server.make_url(f"/{ACCOUNT}")), azure_container))
    busy_gw.keys = first.keys
    async with busy_gw.client.get(busy_gw.raw_path(rid, mid), headers=busy_gw.h()) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert await resp.json() == {
            "detail": "Storage 'azure' is throttling requests; retry"}
    assert answered == ["HEAD", "HEAD"]  # two tries, then the client is told


class TestCommand:
    def run(self, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", ""), "GATEWAY_DATA_DIR": str(tmp_path / "data"),
               "GATEWAY_CONFIG": str(tmp_path / "gateway.toml")}
        return subprocess.run([sys.executable, "-m", "gateway", "storage", *args], env=env,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, check=False)

    def test_check_by_name(self, tmp_path: Path, azurite_endpoint: str,
                           azure_container: str) -> None:
        base = Settings(data_dir=tmp_path / "data", signing_keys=(b"k" * 32,))
        write_config(tmp_path / "gateway.toml",
                     azure_settings(base, azurite_endpoint, azure_container))
        result = self.run(tmp_path, "check", "azure")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"ok      azure (azure, container {azure_container}")
        assert "wrote, read back and deleted gateway-check-" in result.stdout
        write_config(tmp_path / "gateway.toml",
                     azure_settings(base, azurite_endpoint, "missing-container"))
        bad = self.run(tmp_path, "check", "azure")
        assert bad.returncode == 1
        assert "FAILED  azure" in bad.stdout and "ContainerNotFound" in bad.stdout
        assert AZURITE_KEY not in bad.stdout + bad.stderr


# --- writes and reads on the blob service ------------------------------------------------

@azure_only
class TestBlocks:
    async def test_upload_of_several_blocks(self, gw: Gateway) -> None:
        data = os.urandom(13 * 1024 * 1024)  # blocks of 5, 5 and 3 MiB
        rid, mid = await gw.recording_with_media(data, fmt="mp3")
        async with gw.client.get(gw.raw_path(rid, mid), headers=gw.h()) as resp:
            assert await resp.read() == data
        assert isinstance(gw.probe, AzureProbe)
        name = gw.probe.objects()[0]
        committed, uncommitted = gw.probe.container.get_blob_client(name).get_block_list("all")
        assert [block.size for block in committed] == [5 * 1024 * 1024] * 2 + [3 * 1024 * 1024]
        assert uncommitted == []
        assert gw.probe.container.get_blob_client(name).get_blob_properties().metadata.get(
            "gateway_write")

    async def test_an_existing_blob_is_never_replaced(self, gw: Gateway,
                                                      wav_bytes: bytes) -> None:
        recording = await gw.create_recording(session_uid="fixed-uid")
        key = f"recordings/1/{recording['id']}/fixed-uid.mp3"
        gw.probe.put(key, b"another writer's bytes")
        async with gw.client.post(f"/recordings/{recording['id']}/media?format=mp3",
                                  data=wav_bytes, headers=gw.h()) as resp:
            assert resp.status == 409
        assert gw.probe.get(key) == b"another writer's bytes"

    async def test_a_blob_changed_behind_the_gateway(self, gw: Gateway, blob: bytes) -> None:
        rid, mid = await gw.recording_with_media(blob, fmt="mp3")
        raw = gw.raw_path(rid, mid)
        async with gw.client.get(raw, headers={**gw.h(), "Range": "bytes=0-9"}) as resp:
            assert resp.status == 206  # its validators are now cached
        gw.probe.put(gw.probe.objects()[0], blob[::-1])
        # If-Match with the announced ETag: the store refuses, never the wrong bytes.
        async with gw.client.get(raw, headers={**gw.h(), "Range": "bytes=0-9"}) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "0"
            assert "changed" in (await resp.json())["detail"]
        async with gw.client.get(raw, headers={**gw.h(), "Range": "bytes=0-9"}) as resp:
            assert resp.status == 206 and await resp.read() == blob[::-1][:10]

    async def test_a_blob_gone_behind_the_gateway_is_404(self, gw: Gateway,
                                                         blob: bytes) -> None:
        rid, mid = await gw.recording_with_media(blob, fmt="mp3")
        gw.probe.remove_all()
        async with gw.client.get(gw.raw_path(rid, mid), headers=gw.h()) as resp:
            assert resp.status == 404
            assert set(await resp.json()) == {"detail"}
        async with gw.client.delete(f"/recordings/{rid}", headers=gw.h()) as resp:
            assert resp.status == 200  # already gone is not an error

    async def test_a_missing_container_is_404_on_reads(
        self, aiohttp_client: AiohttpClient, settings: Settings, azurite_endpoint: str,
        blob: bytes,
    ) -> None:
        gw = await start_gateway(aiohttp_client, settings)
        rid, mid = await gw.recording_with_media(blob, fmt="mp3")
        service = BlobServiceClient(azurite_endpoint, credential={
            "account_name": ACCOUNT, "account_key": AZURITE_KEY})
        service.delete_container(gw.settings.storage_configs()[1].bucket)
        async with gw.client.get(gw.raw_path(rid, mid), headers=gw.h()) as resp:
            assert resp.status == 404
            assert set(await resp.json()) == {"detail"}
