"""A real headless Chromium plays a recording through a signed URL and seeks in it."""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.demo import tone_wav
from tests.conftest import Gateway

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
SECONDS = float(os.environ.get("SECS", "12"))
SAMPLE_RATE = 16_000
TIMEOUT_MS = 15_000


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser test, not skip it")
    pytest.skip(reason)


@pytest.mark.browser
async def test_chromium_plays_and_seeks_a_signed_url(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    _require_chromium()
    from playwright.async_api import async_playwright

    caplog.set_level(logging.INFO, logger="aiohttp.access")
    wav = tone_wav(seconds=SECONDS, sample_rate=SAMPLE_RATE)
    rid, mid = await gw.recording_with_media(wav)
    async with gw.client.get(f"/recordings/{rid}/media/{mid}/download",
                             headers=gw.h("alice")) as resp:
        assert resp.status == 200, await resp.text()
        link: dict[str, Any] = await resp.json()
    raw_path = gw.raw_path(rid, mid)
    assert link["download_url"].startswith(raw_path + "?")
    assert "signature=" in link["download_url"]
    url = str(gw.client.make_url(link["download_url"]))

    # What the browser itself saw on the wire (request Range → response status/Content-Range).
    exchanges: list[dict[str, Any]] = []

    def on_response(response: Any) -> None:
        if raw_path in response.url:
            exchanges.append({
                "range": response.request.headers.get("range"),
                "status": response.status,
                "content_range": response.headers.get("content-range"),
            })

    caplog.clear()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            timeout=TIMEOUT_MS,
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("response", on_response)
            await page.set_content(
                f'<audio id="a" preload="{os.environ.get("PRELOAD","auto")}" src="{html.escape(url)}"></audio>'
            )
            # Enough data to play: metadata decoded and a frame at the current position.
            await page.wait_for_function(
                "() => { const a = document.getElementById('a');"
                " return a.error !== null || a.readyState >= 2; }",
                timeout=TIMEOUT_MS,
            )
            loaded: dict[str, Any] = await page.evaluate(
                "() => { const a = document.getElementById('a');"
                " return {error: a.error && a.error.code, readyState: a.readyState,"
                " duration: a.duration}; }"
            )
            assert loaded["error"] is None, loaded
            assert loaded["duration"] == pytest.approx(SECONDS, abs=0.05), loaded

            # Seek to the middle and wait for the element to say it got there.
            seeked: dict[str, Any] = await page.evaluate(
                """(target) => new Promise((resolve, reject) => {
                    const a = document.getElementById('a');
                    const timer = setTimeout(() => reject(new Error('no seeked event')), 10000);
                    a.addEventListener('seeked', () => {
                        clearTimeout(timer);
                        resolve({currentTime: a.currentTime, readyState: a.readyState});
                    }, {once: true});
                    a.currentTime = target;
                })""",
                SECONDS / 2,
            )
            assert seeked["currentTime"] == pytest.approx(SECONDS / 2, abs=0.1), seeked

            # Playback from the middle: play() resolves and time moves on from there.
            await page.evaluate("() => document.getElementById('a').play()")
            await page.wait_for_function(
                f"() => document.getElementById('a').currentTime > {SECONDS / 2 + 0.3}",
                timeout=TIMEOUT_MS,
            )
            played: dict[str, Any] = await page.evaluate(
                "() => { const a = document.getElementById('a'); a.pause();"
                " return {error: a.error && a.error.code, readyState: a.readyState,"
                " paused: a.paused, currentTime: a.currentTime}; }"
            )
            assert played["error"] is None, played
            assert played["readyState"] >= 2, played
            assert SECONDS / 2 < played["currentTime"] < SECONDS, played
            await page.close()
        finally:
            await browser.close()

    access = [r for r in caplog.records if r.name == "aiohttp.access"]
    raw_lines = [r for r in access if raw_path in r.getMessage()]
    print("BROWSER", exchanges)
    for record in raw_lines:
        logging.getLogger(__name__).info("gateway logged: %s", record.getMessage())
    print("GATEWAY", [(r.getMessage()[90:125], getattr(r, "response_status", None)) for r in raw_lines])
    assert raw_lines, [r.getMessage() for r in access]
    assert all("signature=" in r.getMessage() for r in raw_lines)
    statuses = [getattr(r, "response_status", None) for r in raw_lines]
    assert 206 in statuses, [r.getMessage() for r in raw_lines]
    assert set(statuses) <= {200, 206}, [r.getMessage() for r in raw_lines]
