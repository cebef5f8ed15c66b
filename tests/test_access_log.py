"""The access log names the principal and the request id, and never carries a credential;
in text or in JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from gateway.access_log import quiet_credential_loggers, redact
from gateway.logs import log_handler
from tests.conftest import Gateway, local_only
from tests.test_settings_and_cli import _base_env, _wait_until_up, free_port


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
    assert all(re.search(r" request_id=[0-9a-f]{32} ", line) for line in access)
    for secret in (signature, gw.keys["alice"], "gw_guessed-key-123"):
        assert not [line for line in lines if secret in line], secret


@contextlib.contextmanager
def json_log() -> Iterator[io.StringIO]:
    """The gateway's JSON handler on the root logger, writing to memory, at every level."""
    stream = io.StringIO()
    handler = log_handler("json", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    quiet_credential_loggers()
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@local_only
async def test_json_lines_carry_the_request_id_and_no_secret(
    gw: Gateway, wav_bytes: bytes
) -> None:
    rid, mid = await gw.recording_with_media(wav_bytes)
    raw = gw.raw_path(rid, mid)
    async with gw.client.get(f"/recordings/{rid}/media/{mid}/download",
                             headers=gw.h()) as resp:
        signed = (await resp.json())["download_url"]
    signature = URL(signed).query["signature"]
    with json_log() as output:
        # New connections: aiohttp decides per connection whether to write access lines.
        async with aiohttp.ClientSession() as session:
            for url, headers in ((signed, {"X-Request-ID": "json-signed"}),
                                 (raw, {**gw.h(), "X-Request-ID": "json-raw"}),
                                 ("/recordings", {"X-API-Key": "gw_guessed-key-123",
                                                  "X-Request-ID": "json-401"}),
                                 (f"/recordings/{rid}/legal-hold",
                                  {**gw.h("admin"), "X-Request-ID": "json-hold"})):
                method = "PUT" if url.endswith("legal-hold") else "GET"
                async with session.request(method, gw.client.make_url(url),
                                           headers=headers) as resp:
                    await resp.read()
        await asyncio.sleep(0.05)
    text = output.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    access = {line["request_id"]: line for line in lines if line["logger"] == "aiohttp.access"}
    assert set(access) >= {"json-signed", "json-raw", "json-401", "json-hold"}
    line = access["json-raw"]
    assert set(line) == {"time", "level", "logger", "pid", "message", "method", "route", "path",
                         "status", "bytes", "duration_ms", "principal", "request_id", "remote",
                         "user_agent"}
    assert line["route"] == "/recordings/{recording_id}/media/{media_id}/raw"
    assert (line["method"], line["path"], line["status"]) == ("GET", raw, 200)
    assert line["bytes"] > len(wav_bytes) and line["duration_ms"] >= 0
    assert (line["principal"], line["remote"], line["level"]) == ("1", "127.0.0.1", "info")
    assert line["user_agent"].startswith("Python/")
    assert "signature=[redacted]" in access["json-signed"]["path"]
    assert access["json-signed"]["principal"] == "link:1"
    assert (access["json-401"]["status"], access["json-401"]["principal"]) == (401, "-")
    # A line the application wrote while handling a request carries that request's id.
    hold = [line for line in lines if "legal hold set" in line["message"]]
    assert [line["request_id"] for line in hold] == ["json-hold"]
    for secret in (signature, gw.keys["alice"], gw.keys["admin"], "gw_guessed-key-123"):
        assert secret not in text, secret


def test_gateway_serve_writes_json_lines(tmp_path: Path) -> None:
    port = free_port()
    env = {**_base_env(), "GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_PORT": str(port),
           "LOCAL_STORAGE_FSYNC": "false", "GATEWAY_LOG_FORMAT": "json"}
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(f"{base}/healthz", process)
        request = urllib.request.Request(f"{base}/healthz", headers={"X-Request-ID": "cli-1"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.headers["X-Request-ID"] == "cli-1"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=20)
        finally:
            process.kill()
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert any(line["logger"] == "aiohttp.access" and line["request_id"] == "cli-1"
               and line["route"] == "/healthz" and line["status"] == 200 for line in lines)
