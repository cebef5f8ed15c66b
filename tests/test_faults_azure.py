"""Azure Blob Storage that fails: Azurite behind the proxy that breaks exchanges on purpose.

The same promises as tests/test_faults_storage.py makes for S3: before the status
line, a store failure is a JSON error; after it, the client sees a short body at once
(or after one storage timeout of silence), never a hang; the store's connection is let
go; an upload that fails keeps nothing, and one whose commit answer was lost counts.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.settings import Settings
from tests.conftest import AiohttpClient, azure_config, azure_only, start_gateway
from tests.fault_proxy import Fault, FaultProxy, until
from tests.storage_probe import AzureProbe
from tests.test_faults_storage import (
    KEY_PART,
    TIMEOUT,
    Stored,
    fetch,
    stream_failures,
)

pytestmark = azure_only

COMMIT = "comp=blocklist"
"""A substring of the target of Put Block List, the upload's commit."""
STAGE = "comp=block&"
"""A substring of the target of every Put Block (and of no commit)."""


@pytest.fixture
async def proxy(azurite_endpoint: str) -> AsyncIterator[FaultProxy]:
    url = URL(azurite_endpoint)
    assert url.host is not None and url.port is not None
    proxy = await FaultProxy.start(url.host, url.port)
    yield proxy
    await proxy.close()


@pytest.fixture
async def stored(aiohttp_client: AiohttpClient, settings: Settings, proxy: FaultProxy,
                 azurite_endpoint: str, azure_container: str, blob: bytes) -> Stored:
    """An mp3 of alice's, uploaded through the proxy; properties and GET on every read."""
    through_proxy = str(URL(azurite_endpoint).with_port(URL(proxy.url).port))
    configured = settings.with_changes(
        extra_storages=(azure_config(through_proxy, azure_container),),
        storage_timeout=TIMEOUT, cache_ttl=0)
    gw = await start_gateway(aiohttp_client, configured)
    # The probe (a blocking client) must not go through the proxy on this event loop.
    gw.probe = AzureProbe(azure_config(azurite_endpoint, azure_container))
    rid, mid = await gw.recording_with_media(blob, fmt="mp3")
    healthy = await fetch(gw, gw.raw_path(rid, mid))
    assert healthy.status == 200 and healthy.body == blob and healthy.error is None
    return Stored(gw, proxy, gw.raw_path(rid, mid), blob, healthy.seconds)


async def assert_recovers(s: Stored) -> None:
    """With the fault gone, the same request works, and the broken connection is gone.

    Unlike moto, Azurite keeps connections alive: one may stay idle in each of the
    gateway's two pools (the SDK's, and the one ranged GETs use), all requests here
    being one after another. A connection still held by the broken stream would be
    a third.
    """
    s.proxy.clear()
    again = await fetch(s.gw, s.path)
    assert again.status == 200 and again.body == s.data and again.error is None
    assert await until(lambda: s.proxy.open_connections <= 2), (
        f"{s.proxy.open_connections} connections to the store still open")


@pytest.mark.parametrize("fault", [Fault.CUT_BODY, Fault.RESET_BODY])
async def test_store_drops_the_connection_mid_body(
    stored: Stored, caplog: pytest.LogCaptureFixture, fault: Fault
) -> None:
    stored.proxy.add(fault, method="GET", path=KEY_PART, after=100_000)
    seen = await fetch(stored.gw, stored.path)
    assert [f[0] for f in stored.proxy.faults] == [fault]
    assert seen.status == 200
    assert isinstance(seen.error, aiohttp.ClientPayloadError)  # short body, not a hang
    assert 0 < len(seen.body) < len(stored.data)
    assert seen.body == stored.data[: len(seen.body)]
    assert seen.seconds < stored.within(TIMEOUT)
    assert [r.levelno for r in stream_failures(caplog)] == [logging.ERROR]
    await assert_recovers(stored)


async def test_store_stalls_mid_body(stored: Stored, caplog: pytest.LogCaptureFixture) -> None:
    stored.proxy.add(Fault.STALL_BODY, method="GET", path=KEY_PART, after=100_000)
    seen = await fetch(stored.gw, stored.path)
    assert seen.status == 200
    assert isinstance(seen.error, aiohttp.ClientPayloadError)
    assert seen.body == stored.data[: len(seen.body)]
    assert TIMEOUT * 0.9 <= seen.seconds < stored.within(TIMEOUT)
    assert len(stream_failures(caplog)) == 1
    await assert_recovers(stored)


@pytest.mark.parametrize(("fault", "status"), [
    (Fault.HANG, 504), (Fault.REFUSE_ANSWER, 502), (Fault.RESET, 502)])
async def test_store_fails_the_get_before_the_first_byte(
    stored: Stored, fault: Fault, status: int
) -> None:
    stored.proxy.add(fault, method="GET", path=KEY_PART)
    seen = await fetch(stored.gw, stored.path)
    assert seen.status == status
    assert set(seen.json()) == {"detail"} and "'azure'" in seen.json()["detail"]
    await assert_recovers(stored)


async def test_connections_back_in_the_pool_stay_usable(stored: Stored) -> None:
    """A read leaves its store connection in the pool (Azurite keeps connections alive);
    idle there for longer than the storage timeout, it still serves the next read. (A
    read timer restarted after a body's end once fired in the pool and failed the next
    request at once with 504.)"""
    for _ in range(4):
        await asyncio.sleep(TIMEOUT * 1.5)
        again = await fetch(stored.gw, stored.path)
        assert again.status == 200 and again.body == stored.data and again.error is None


async def test_store_fails_the_properties(stored: Stored) -> None:
    stored.proxy.add(Fault.HANG, method="HEAD", path=KEY_PART)
    seen = await fetch(stored.gw, stored.path)
    assert seen.status == 504
    assert seen.json() == {"detail": "Storage 'azure' did not answer in time"}
    await assert_recovers(stored)


class TestUploads:
    async def upload(self, s: Stored, rid: int, data: bytes) -> tuple[int, dict[str, Any]]:
        async with s.gw.client.post(f"/recordings/{rid}/media", params={"format": "mp3"},
                                    data=io.BytesIO(data), headers=s.gw.h()) as resp:
            body: dict[str, Any] = await resp.json()
            return resp.status, body

    @pytest.mark.parametrize("size", [100_000, 6 * 1024 * 1024])
    async def test_lost_commit_answer_after_the_store_kept_the_blob(
        self, stored: Stored, size: int
    ) -> None:
        # The service commits and its answer never arrives; the SDK tries again and
        # meets the blob its first try committed (409 under If-None-Match): this
        # upload's own blob, by its metadata, so 201, not "already exists".
        rid = (await stored.gw.create_recording())["id"]
        data = bytes(range(256)) * (size // 256)
        stored.proxy.add(Fault.DROP_ANSWER, method="PUT", path=COMMIT, times=1)
        status, body = await self.upload(stored, rid, data)
        assert [f[0] for f in stored.proxy.faults] == [Fault.DROP_ANSWER]
        assert status == 201, body
        async with stored.gw.client.get(stored.gw.raw_path(rid, body["id"]),
                                        headers=stored.gw.h()) as resp:
            assert await resp.read() == data

    async def test_store_resets_every_block(self, stored: Stored) -> None:
        rid = (await stored.gw.create_recording())["id"]
        before = stored.gw.probe.objects()
        stored.proxy.add(Fault.RESET, method="PUT", path=STAGE)
        status, body = await self.upload(stored, rid, b"x" * (6 * 1024 * 1024))
        assert status == 502, body
        assert body["detail"].startswith("Storage 'azure' is unreachable")
        assert stored.gw.probe.objects() == before  # no blob
        assert not [f for f in stored.proxy.faults if COMMIT in f[2]]  # never committed
        async with stored.gw.client.get(f"/recordings/{rid}", headers=stored.gw.h()) as resp:
            assert (await resp.json())["media_files"] == []
        await assert_recovers(stored)
