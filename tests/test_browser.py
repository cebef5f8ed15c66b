"""A real headless Chromium plays a recording through a signed URL and seeks in it."""

from __future__ import annotations

import asyncio
import html
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.demo import tone_wav
from tests.conftest import Gateway, local_only

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
# Long enough (1.9 MB) that Chromium, asked for metadata only, does not hold the whole file
# when the seek comes, so the seek usually makes it ask the gateway for a mid-file range.
SECONDS = 60.0
SAMPLE_RATE = 16_000
MIDDLE = SECONDS / 2
TIMEOUT_MS = 15_000
ACCESS_LOGGER = "aiohttp.access"

# The element's state, as plain JSON.
STATE_JS = """() => {
    const a = document.getElementById('a');
    return {error: a.error && a.error.code, readyState: a.readyState, duration: a.duration,
            currentTime: a.currentTime, paused: a.paused};
}"""

SEEK_JS = """(target) => new Promise((resolve, reject) => {
    const a = document.getElementById('a');
    const timer = setTimeout(() => reject(new Error('no seeked event within 10 s')), 10000);
    a.addEventListener('seeked', () => {
        clearTimeout(timer);
        resolve({currentTime: a.currentTime, readyState: a.readyState});
    }, {once: true});
    a.currentTime = target;
})"""


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser test, not skip it")
    pytest.skip(reason)


def _raw_access_records(
    caplog: pytest.LogCaptureFixture, raw_path: str
) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == ACCESS_LOGGER and f"GET {raw_path}?" in r.getMessage()]


@pytest.mark.browser
@local_only  # on S3, download_url is presigned for the store: the gateway is not in the path
async def test_chromium_plays_and_seeks_a_signed_url(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    _require_chromium()
    from playwright.async_api import async_playwright

    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    wav = tone_wav(seconds=SECONDS, sample_rate=SAMPLE_RATE)
    rid, mid = await gw.recording_with_media(wav)
    async with gw.client.get(f"/recordings/{rid}/media/{mid}/download",
                             headers=gw.h("alice")) as resp:
        assert resp.status == 200, await resp.text()
        link: dict[str, Any] = await resp.json()
    raw_path = gw.raw_path(rid, mid)
    assert link["download_url"].startswith(raw_path + "?"), link
    assert "signature=" in link["download_url"], link
    url = str(gw.client.make_url(link["download_url"]))

    # What Chromium saw on the wire for the raw URL: its Range header and the answer.
    exchanges: list[dict[str, Any]] = []

    def on_response(response: Any) -> None:
        if raw_path in response.url:
            exchanges.append({
                "range": response.request.headers.get("range"),
                "status": response.status,
                "content_range": response.headers.get("content-range"),
            })

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            timeout=TIMEOUT_MS,
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("response", on_response)
            # about:blank page; the <audio> loads cross-origin from the gateway, no headers.
            await page.set_content(
                f'<audio id="a" preload="metadata" src="{html.escape(url)}"></audio>'
            )
            await page.wait_for_function(
                "() => { const a = document.getElementById('a');"
                " return a.error !== null || a.readyState >= 1; }",
                timeout=TIMEOUT_MS,
            )
            loaded: dict[str, Any] = await page.evaluate(STATE_JS)
            assert loaded["error"] is None, loaded
            assert loaded["duration"] == pytest.approx(SECONDS, abs=0.05), loaded

            # Seek to the middle and wait for the element to say it got there.
            seeked: dict[str, Any] = await page.evaluate(SEEK_JS, MIDDLE)
            assert seeked["currentTime"] == pytest.approx(MIDDLE, abs=0.1), seeked

            # Playback from the middle: play() resolves and time moves on from there.
            await page.evaluate("() => document.getElementById('a').play()")
            await page.wait_for_function(
                f"() => document.getElementById('a').currentTime > {MIDDLE + 0.3}",
                timeout=TIMEOUT_MS,
            )
            played: dict[str, Any] = await page.evaluate(STATE_JS)
            await page.evaluate("() => document.getElementById('a').pause()")
            assert played["error"] is None, played
            assert played["readyState"] >= 2, played  # HAVE_CURRENT_DATA or better
            assert not played["paused"], played
            assert MIDDLE + 0.3 < played["currentTime"] < MIDDLE + 10, played
            await page.close()
        finally:
            await browser.close()

    # Every answer Chromium got for the raw URL was a 206 matching its open-ended Range.
    size = len(wav)
    assert exchanges, "Chromium never fetched the signed URL"
    for exchange in exchanges:
        match = re.fullmatch(r"bytes=(\d+)-", exchange["range"] or "")
        assert match, exchanges
        assert exchange["status"] == 206, exchanges
        assert exchange["content_range"] == f"bytes {match[1]}-{size - 1}/{size}", exchanges

    # The gateway's own access log: one line per request, written when its handler returns
    # (a stream Chromium abandoned may finish only once the browser has gone).
    for _ in range(100):
        if len(_raw_access_records(caplog, raw_path)) >= len(exchanges):
            break
        await asyncio.sleep(0.05)
    records = _raw_access_records(caplog, raw_path)
    lines = [r.getMessage() for r in records]
    assert len(records) >= len(exchanges), (lines, exchanges)
    assert all("signature=" in line for line in lines), lines
    assert all(getattr(r, "response_status", None) == 206 for r in records), lines
