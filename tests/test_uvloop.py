"""Under uvloop, which has no loop.sendfile, local files are still served exactly."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.models import Role
from gateway.settings import Settings
from tests.conftest import SIGNING_KEY, Gateway
from tests.storage_probe import default_probe

uvloop = pytest.importorskip("uvloop")


async def _serve_and_check(settings: Settings, blob: bytes) -> None:
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    async with TestClient(TestServer(create_app(settings))) as client:
        gw = Gateway(client, client.app, settings, {}, default_probe(settings))
        await gw.add_key("alice", 1, Role.RECORDER)
        rid, mid = await gw.recording_with_media(blob, fmt="mp3")
        path = gw.raw_path(rid, mid)
        async with client.get(path, headers=gw.h()) as resp:
            assert resp.status == 200 and await resp.read() == blob
        async with client.get(path, headers={**gw.h(), "Range": "bytes=1000-2999"}) as resp:
            assert resp.status == 206 and await resp.read() == blob[1000:3000]
        async with client.get(path, headers={**gw.h(), "Range": "bytes=0-9,-10"}) as resp:
            body = await resp.read()
            assert resp.status == 206 and blob[:10] in body and blob[-10:] in body


def test_local_files_without_sendfile(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, signing_keys=(SIGNING_KEY,),
                        local_storage_fsync=False)
    uvloop.run(_serve_and_check(settings, os.urandom(700_000)))
