"""A frontend on another origin, in headless Chromium, uses a sidecar gateway via CORS.

The page (served by its own small server, so a different origin) fetches the
recording's download link with the user's key (a preflighted CORS request), reads
an exposed Content-Range from a ranged fetch, then plays the signed link in
<audio> and seeks to the middle. The Next.js version of this frontend lives in
examples/nextjs with its own test command.
"""

from __future__ import annotations

import logging

import pytest
from aiohttp import web

from gateway.demo import tone_wav
from gateway.settings import Settings
from tests.conftest import AiohttpClient, local_only
from tests.fake_upstream import FakeMeetingApi
from tests.test_browser import (
    ACCESS_LOGGER,
    CHROMIUM,
    CHROMIUM_ARGS,
    SEEK_JS,
    STATE_JS,
    TIMEOUT_MS,
    _require_chromium,
)
from tests.test_sidecar import RECORDING, SESSION, AiohttpServer, start_sidecar

MEDIA = 4242
SECONDS = 30.0

PAGE = """<!doctype html>
<html><body>
<audio id="a" controls preload="metadata"></audio>
<script>
async function start(gateway, key, path) {
  const info = await (await fetch(gateway + path + "/download",
                                  {headers: {"X-API-Key": key}})).json();
  const ranged = await fetch(gateway + path + "/raw",
                             {headers: {"X-API-Key": key, "Range": "bytes=0-43"}});
  const header = await ranged.arrayBuffer();
  const audio = document.getElementById("a");
  audio.src = gateway + info.download_url;
  return {status: ranged.status, contentRange: ranged.headers.get("Content-Range"),
          length: header.byteLength, downloadUrl: info.download_url};
}
</script>
</body></html>"""


@pytest.mark.browser
@local_only
async def test_frontend_on_another_origin_plays_through_the_sidecar(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _require_chromium()
    from playwright.async_api import async_playwright

    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    async def page_handler(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    frontend = web.Application()
    frontend.router.add_get("/", page_handler)
    page_server = await aiohttp_server(frontend)
    origin = str(page_server.make_url("")).rstrip("/")

    api = FakeMeetingApi()
    api.add_recording(RECORDING, 1, SESSION, [(MEDIA, "audio", "wav", "local")])
    side = await start_sidecar(aiohttp_client, aiohttp_server, settings, api=api,
                               cors_origins=(origin,))
    wav = tone_wav(seconds=SECONDS, sample_rate=16_000)
    side.probe.put(f"recordings/1/{RECORDING}/{SESSION}.wav", wav)
    gateway = str(side.client.make_url("")).rstrip("/")
    path = f"/recordings/{RECORDING}/media/{MEDIA}"

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await page.goto(origin + "/")
            fetched = await page.evaluate("([g, k, p]) => start(g, k, p)",
                                          [gateway, "key-alice", path])
            assert fetched["status"] == 206
            assert fetched["contentRange"] == f"bytes 0-43/{len(wav)}"  # exposed via CORS
            assert fetched["length"] == 44
            await page.wait_for_function(
                "() => document.getElementById('a').readyState >= 1", timeout=TIMEOUT_MS)
            state = await page.evaluate(STATE_JS)
            assert state["error"] is None and abs(state["duration"] - SECONDS) < 0.05
            seeked = await page.evaluate(SEEK_JS, SECONDS / 2)
            assert abs(seeked["currentTime"] - SECONDS / 2) < 0.1
            await page.evaluate("() => document.getElementById('a').play()")
            await page.wait_for_function(
                f"() => document.getElementById('a').currentTime > {SECONDS / 2 + 0.3}",
                timeout=TIMEOUT_MS)
        finally:
            await browser.close()

    statuses = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
    raw_lines = [line for line in statuses if f"GET {path}/raw?" in line]
    # Chromium revalidates its cached part of the file with If-None-Match; RFC 9110
    # §13.2.2 has that answered before the Range, so 304s may follow the first 206.
    assert any('" 206 ' in line for line in raw_lines)
    assert all('" 206 ' in line or '" 304 ' in line for line in raw_lines), raw_lines
    assert any(f"OPTIONS {path}/download" in line and '" 204 ' in line for line in statuses)
