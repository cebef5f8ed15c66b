"""The player page in a real headless Chromium: key, list, waveform, seek, download, errors.

The recording is a sine that is quiet for two seconds and loud for two, so the
waveform on the screen has a known shape: the screenshot of the canvas must show
bars about three times taller on the right than on the left.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import Gateway, local_only
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _require_chromium
from tests.wav_files import wav

RATE = 16_000
SECONDS = 4.0
QUIET, LOUD = 0.25, 0.75
KEY_STORAGE = "recordings-gateway.api-key"

READY_JS = """() => {
    const audio = document.getElementById('audio');
    return document.getElementById('status').textContent.startsWith('Ready')
        && document.getElementById('waveform-note').textContent === ''
        && audio.readyState >= 1;
}"""
AUDIO_JS = """() => {
    const a = document.getElementById('audio');
    return {currentTime: a.currentTime, duration: a.duration, seeking: a.seeking,
            error: a.error && a.error.code, src: a.currentSrc};
}"""


def quiet_then_loud() -> bytes:
    frames = int(RATE * SECONDS)
    return wav([(QUIET if n < frames // 2 else LOUD) * math.sin(2 * math.pi * 220 * n / RATE)
                for n in range(frames)], rate=RATE)


def drawn_rows(png: bytes, left: float, right: float) -> int:
    """How many pixel rows hold waveform colour between two fractions of the width."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    raw = image.tobytes()

    def pixel(x: int, y: int) -> bytes:
        return raw[(y * width + x) * 3: (y * width + x) * 3 + 3]

    background = pixel(4, 4)  # a corner of the canvas, inside its border
    rows = 0
    for y in range(2, height - 2):
        for x in range(int(width * left), int(width * right), 3):
            if sum(abs(a - b) for a, b in zip(pixel(x, y), background, strict=True)) > 60:
                rows += 1
                break
    return rows


@asynccontextmanager
async def chromium_page(problems: list[str]) -> AsyncIterator[Any]:
    """A page in a fresh browser; console errors and page errors land in `problems`."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        try:
            context = await browser.new_context(accept_downloads=True,
                                                viewport={"width": 1000, "height": 900})
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            yield page
        finally:
            await browser.close()


@pytest.mark.browser
async def test_play_seek_on_the_waveform_and_download(gw: Gateway) -> None:
    _require_chromium()
    data = quiet_then_loud()
    recording = await gw.create_recording()
    rid = recording["id"]
    await gw.upload(rid, data)
    problems: list[str] = []
    async with chromium_page(problems) as page:
        await page.goto(str(gw.client.make_url("/")))
        assert await page.title() == "Recordings"
        await page.get_by_label("Paste your API key").fill(gw.keys["alice"])
        await page.get_by_role("button", name="Use key").click()
        await page.get_by_role("button", name=f"Open recording {rid}").click()
        await page.wait_for_function(READY_JS)

        # The waveform is drawn, and its shape is the file's: quiet half, loud half.
        canvas = page.locator("#waveform")
        png = await canvas.screenshot()
        quiet_rows, loud_rows = drawn_rows(png, 0.05, 0.45), drawn_rows(png, 0.55, 0.95)
        assert quiet_rows > 5, quiet_rows
        assert 2.3 < loud_rows / quiet_rows < 3.7, (quiet_rows, loud_rows)

        # A click in the middle of the waveform seeks to the middle of the recording.
        box = await canvas.bounding_box()
        assert box is not None
        await canvas.click(position={"x": box["width"] / 2, "y": box["height"] / 2})
        await page.wait_for_function(
            "() => { const a = document.getElementById('audio');"
            " return !a.seeking && a.currentTime > 0; }")
        state = await page.evaluate(AUDIO_JS)
        assert state["error"] is None, state
        assert state["duration"] == pytest.approx(SECONDS, abs=0.01)
        assert state["currentTime"] == pytest.approx(SECONDS / 2, abs=SECONDS * 0.02), state
        assert "/raw?" in state["src"] and "signature=" in state["src"]  # the playback link
        # The keyboard moves it as well (the canvas is a slider).
        await canvas.focus()
        await page.keyboard.press("Home")
        assert await page.evaluate("document.getElementById('audio').currentTime") == 0

        # Download: the browser saves the file, byte for byte.
        async with page.expect_download() as event:
            await page.get_by_role("button", name="Download").click()
        download = await event.value
        if gw.backend == "gcs":
            # fake-gcs-server ignores response-content-disposition (Google applies it; the
            # signed URL carries it, tests/test_storage_gcs.py): the object's name is used.
            assert download.suggested_filename.endswith(".wav")
        else:
            assert download.suggested_filename == f"{rid}_audio.wav"
        saved = await asyncio.to_thread(Path(await download.path()).read_bytes)
        assert hashlib.sha256(saved).hexdigest() == hashlib.sha256(data).hexdigest()
    assert problems == []  # nothing refused by the Content-Security-Policy, no script error


@pytest.mark.browser
@local_only
async def test_errors_are_told_in_the_page_and_the_key_can_be_forgotten(gw: Gateway) -> None:
    _require_chromium()
    recording = await gw.create_recording()
    await gw.upload(recording["id"], b"ID3" + bytes(2000), "mp3")
    problems: list[str] = []
    async with chromium_page(problems) as page:
        await page.goto(str(gw.client.make_url("/")))
        key_field = page.get_by_label("Paste your API key")
        error = page.get_by_role("alert")

        # A wrong key: 401 in words, and the field is marked.
        await key_field.fill("gw_not-a-key")
        await page.get_by_role("button", name="Use key").click()
        await error.wait_for()
        assert "did not accept this API key (401)" in await error.inner_text()
        assert await key_field.get_attribute("aria-invalid") == "true"

        # The right key lists the recording, and survives a reload (local storage).
        await key_field.fill(gw.keys["alice"])
        await page.get_by_role("button", name="Use key").click()
        await page.get_by_role("button", name=f"Open recording {recording['id']}").wait_for()
        assert await error.is_hidden()
        await page.reload()
        await page.get_by_role("button", name=f"Open recording {recording['id']}").click()
        await page.wait_for_function(
            "() => document.getElementById('waveform-note').textContent.startsWith('No wave')")
        note = await page.locator("#waveform-note").inner_text()
        assert "Peaks are available for WAV PCM" in note and "mp3" in note

        # A recording deleted since the list was shown: 404, said so.
        gone = await gw.create_recording()
        await page.get_by_role("button", name="Next").wait_for()
        await page.reload()
        open_gone = page.get_by_role("button", name=f"Open recording {gone['id']}")
        await open_gone.wait_for()
        async with gw.client.delete(f"/recordings/{gone['id']}", headers=gw.h()) as resp:
            assert resp.status == 200
        await open_gone.click()
        await error.wait_for()
        assert await error.inner_text() == "Not found (404): Recording not found"

        # The network failing is told as such.
        await page.route("**/recordings?*", lambda route: route.abort())
        await page.get_by_role("button", name="Use key").click()  # empty field: asks for a key
        assert "Paste an API key first" in await error.inner_text()
        await key_field.fill(gw.keys["alice"])
        await page.get_by_role("button", name="Use key").click()
        await page.wait_for_function(
            "() => document.getElementById('error').textContent.includes('network error')")

        # Forget: the key leaves the browser and the list goes away.
        await page.get_by_role("button", name="Forget key").click()
        assert await page.evaluate(f"localStorage.getItem('{KEY_STORAGE}')") is None
        assert await page.locator("#list-section").is_hidden()
        assert "forgotten" in await page.locator("#status").inner_text()
    # The browser reports the failed requests themselves, and nothing else: no script
    # error, nothing refused by the Content-Security-Policy.
    assert problems and all(p.startswith("Failed to load resource") for p in problems), problems

