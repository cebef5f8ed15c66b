"""The access log names the principal and never carries a credential."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from yarl import URL

from gateway.access_log import redact
from tests.conftest import Gateway, local_only


def test_redact_credentials_in_query() -> None:
    assert redact("/r/1/media/2/raw?expires=9&loc=a.b&signature=abc-DEF_1") == (
        "/r/1/media/2/raw?expires=9&loc=a.b&signature=[redacted]")
    assert redact("/k?X-Amz-Credential=AKIA%2F&X-Amz-Signature=f00&X-Amz-Expires=60") == (
        "/k?X-Amz-Credential=[redacted]&X-Amz-Signature=[redacted]&X-Amz-Expires=60")
    assert redact("/bots?api_key=sekret&x=1") == "/bots?api_key=[redacted]&x=1"
    assert redact("/recordings?limit=5") == "/recordings?limit=5"


@local_only
async def test_no_secret_in_any_log_line(
    gw: Gateway, wav_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything any logger says
    rid, mid = await gw.recording_with_media(wav_bytes)
    async with gw.client.get(f"/recordings/{rid}/media/{mid}/download",
                             headers=gw.h()) as resp:
        signed = (await resp.json())["download_url"]
    signature = URL(signed).query["signature"]
    # New connections: aiohttp decides per connection whether to write access lines.
    async with aiohttp.ClientSession() as session:
        for url, headers in ((signed, {}), (gw.raw_path(rid, mid), gw.h()),
                             ("/recordings", {"X-API-Key": "gw_guessed-key-123"})):
            async with session.get(gw.client.make_url(url), headers=headers) as resp:
                await resp.read()
    await asyncio.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records]
    access = [line for line in lines if '" 20' in line or '" 40' in line]
    assert any("signature=[redacted]" in line and "principal=link:1" in line
               for line in access)
    assert any(f"GET {gw.raw_path(rid, mid)} HTTP/1.1\" 200" in line and "principal=1 " in line
               for line in access)
    assert any('"GET /recordings HTTP/1.1" 401' in line and "principal=-" in line
               for line in access)
    for secret in (signature, gw.keys["alice"], "gw_guessed-key-123"):
        assert not [line for line in lines if secret in line], secret
