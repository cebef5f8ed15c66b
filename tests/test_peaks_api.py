"""GET /recordings/{id}/media/{media_id}/peaks over real HTTP, on local disk and S3."""

from __future__ import annotations

import asyncio
import math
from array import array
from datetime import timedelta
from typing import Any

import pytest

from gateway.appkeys import RETENTION
from gateway.demo import tone_wav
from gateway.peaks import Peaks, decode, encode
from gateway.settings import Settings
from gateway.storage import ObjectInfo
from tests.conftest import AiohttpClient, Gateway, start_gateway
from tests.fake_upstream import FakeMeetingApi
from tests.test_retention import ManualClock
from tests.test_sidecar import ALICE, BOB, RECORDING, SESSION, AiohttpServer, start_sidecar
from tests.wav_files import chunk, fmt_body, riff, wav

RATE = 8000
MEDIA = 4242


def steps_wav(quiet: float = 0.25, loud: float = 0.75, seconds: int = 2) -> bytes:
    """Stereo square waves: the first half at `quiet`, the second at `loud` (left channel);
    the right channel at half of that, so only the mix reaches the extremes."""
    frames = RATE * seconds
    values: list[float] = []
    for n in range(frames):
        level = quiet if n < frames // 2 else loud
        sign = 1 if (n // 20) % 2 else -1
        values += [sign * level, -sign * level / 2]
    return wav(values, channels=2, rate=RATE)


async def stored_wav(gw: Gateway, data: bytes, who: str = "alice") -> tuple[int, int, str]:
    """(recording id, media id, storage key) of `data` uploaded as a WAV."""
    recording = await gw.create_recording(who)
    media = await gw.upload(recording["id"], data, "wav", who=who)
    key = f"recordings/{recording['user_id']}/{recording['id']}/{recording['session_uid']}.wav"
    return recording["id"], media["id"], key


def peaks_path(recording_id: int, media_id: int, width: int | None = None) -> str:
    query = "" if width is None else f"?width={width}"
    return f"/recordings/{recording_id}/media/{media_id}/peaks{query}"


async def get_json(gw: Gateway, path: str, headers: dict[str, str] | None = None
                   ) -> tuple[int, Any]:
    async with gw.client.get(path, headers=headers) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def test_peaks_of_a_known_recording(gw: Gateway) -> None:
    rid, mid, _ = await stored_wav(gw, steps_wav())
    async with gw.client.get(peaks_path(rid, mid, 4), headers=gw.h()) as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "private"
        body = await resp.json()
    assert set(body) == {"width", "channels", "sample_rate", "duration", "peaks"}
    assert (body["width"], body["channels"], body["sample_rate"]) == (4, 2, RATE)
    assert body["duration"] == 2.0
    assert body["peaks"] == [[-0.25, 0.25], [-0.25, 0.25], [-0.75, 0.75], [-0.75, 0.75]]


@pytest.mark.parametrize("width", [None, 1, 333, 8192])
async def test_exactly_width_pairs_within_full_scale(gw: Gateway, width: int | None) -> None:
    rid, mid, _ = await stored_wav(gw, steps_wav())
    status, body = await get_json(gw, peaks_path(rid, mid, width), gw.h())
    assert status == 200
    expected = 1000 if width is None else width
    assert body["width"] == expected and len(body["peaks"]) == expected
    assert all(len(pair) == 2 and -1.0 <= pair[0] <= pair[1] <= 1.0 for pair in body["peaks"])


@pytest.mark.parametrize("query", ["width=0", "width=8193", "width=-1", "width=abc",
                                   "width=1.5", "width=", "width=10&width=20"])
async def test_bad_width_is_422(gw: Gateway, query: str) -> None:
    rid, mid, _ = await stored_wav(gw, steps_wav())
    status, body = await get_json(gw, f"{peaks_path(rid, mid)}?{query}", gw.h())
    assert status == 422
    assert "'width'" in body["detail"]


async def test_who_may_see_is_who_may_see_raw(gw: Gateway) -> None:
    rid, mid, _ = await stored_wav(gw, steps_wav())
    callers: list[tuple[str, dict[str, str]]] = [
        ("owner", gw.h("alice")), ("admin of the tenant", gw.h("admin")),
        ("another user", gw.h("bob")), ("a viewer", gw.h("viewer")),
        ("admin of another tenant", gw.h("mallory")), ("no key", {}),
        ("a wrong key", {"X-API-Key": "gw_wrong"}),
        ("X-Tenant of another tenant", {**gw.h("alice"), "X-Tenant": "other"}),
    ]
    seen = []
    for name, headers in callers:
        async with gw.client.get(gw.raw_path(rid, mid), headers=headers) as raw:
            raw_status = raw.status
        status, body = await get_json(gw, peaks_path(rid, mid, 10), headers)
        assert status == raw_status, name
        seen.append(status)
        if status != 200:
            assert set(body) == {"detail"}
    assert seen == [200, 200, 404, 404, 404, 401, 401, 403]
    for path in (peaks_path(rid, mid + 1), peaks_path(rid + 1, mid), peaks_path(1, 2)):
        status, body = await get_json(gw, path, gw.h())
        assert status == 404 and body["detail"] == "Media file not found"


async def test_a_file_gone_from_storage_is_404(gw: Gateway) -> None:
    rid, mid, _ = await stored_wav(gw, steps_wav())
    gw.probe.remove_all()
    status, body = await get_json(gw, peaks_path(rid, mid), gw.h())
    assert status == 404 and body["detail"] == "Media file not found in storage"


@pytest.mark.parametrize(("fmt", "media_type"), [("mp3", "audio"), ("webm", "video")])
async def test_other_formats_have_no_peaks(gw: Gateway, blob: bytes, fmt: str,
                                           media_type: str) -> None:
    recording = await gw.create_recording()
    media = await gw.upload(recording["id"], blob, fmt, media_type)
    status, body = await get_json(gw, peaks_path(recording["id"], media["id"]), gw.h())
    assert status == 404
    assert body["detail"] == ("Peaks are available for WAV PCM (integer or float samples) "
                              f"only; this media file is {fmt}")
    assert len(gw.probe.objects()) == 1  # nothing cached


async def test_a_wav_that_is_not_pcm_is_404(gw: Gateway) -> None:
    mulaw = riff(chunk(b"fmt ", fmt_body(0x0007, 1, RATE, 1)), chunk(b"data", b"\xff" * 800))
    rid, mid, _ = await stored_wav(gw, mulaw)
    status, body = await get_json(gw, peaks_path(rid, mid), gw.h())
    assert status == 404
    assert "mu-law (format tag 0x0007)" in body["detail"]


async def test_a_malformed_wav_is_422_and_nothing_is_cached(gw: Gateway) -> None:
    broken = riff(chunk(b"fmt ", fmt_body(0x0001, 0, RATE, 2, block_align=0)),
                  chunk(b"data", b"\x00" * 800))
    rid, mid, _ = await stored_wav(gw, broken)
    status, body = await get_json(gw, peaks_path(rid, mid), gw.h())
    assert status == 422
    assert "zero channels" in body["detail"]
    assert len(gw.probe.objects()) == 1


async def test_peaks_are_cached_beside_the_file(gw: Gateway) -> None:
    rid, mid, key = await stored_wav(gw, steps_wav())
    _, first = await get_json(gw, peaks_path(rid, mid, 100), gw.h())
    assert gw.probe.objects() == [key, key + ".peaks"]
    cached = decode(gw.probe.get(key + ".peaks"))
    assert cached is not None and cached.peaks.resample(100) == first["peaks"]
    # Another width comes from the same cache object, and nothing else is written.
    _, second = await get_json(gw, peaks_path(rid, mid, 4), gw.h())
    assert second["peaks"][0] == [-0.25, 0.25]
    assert gw.probe.objects() == [key, key + ".peaks"]


async def test_a_cache_hit_is_served_from_the_cache_object(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    # No memory cache, so every request goes to storage.
    gw = await start_gateway(aiohttp_client, settings.with_changes(cache_ttl=0))
    rid, mid, key = await stored_wav(gw, steps_wav())
    _, body = await get_json(gw, peaks_path(rid, mid, 4), gw.h())
    assert body["peaks"][3] == [-0.75, 0.75]
    made = decode(gw.probe.get(key + ".peaks"))
    assert made is not None
    # Put different, valid peaks in the cache object for the same file: they are served.
    flat = array("f", [0.5] * len(made.peaks.lows))
    doctored = Peaks(made.peaks.channels, made.peaks.sample_rate, made.peaks.frames,
                     array("f", [-0.5] * len(flat)), flat)
    gw.probe.put(key + ".peaks", encode(doctored, ObjectInfo(made.size, made.etag, 0)))
    _, body = await get_json(gw, peaks_path(rid, mid, 4), gw.h())
    assert body["peaks"] == [[-0.5, 0.5]] * 4


async def test_a_changed_file_is_scanned_again(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    gw = await start_gateway(aiohttp_client, settings.with_changes(cache_ttl=0))
    rid, mid, key = await stored_wav(gw, steps_wav())
    await get_json(gw, peaks_path(rid, mid, 2), gw.h())
    # The file is replaced behind the gateway's back (as a sidecar's bot may do).
    gw.probe.put(key, steps_wav(quiet=0.5, loud=0.125, seconds=3))
    status, body = await get_json(gw, peaks_path(rid, mid, 2), gw.h())
    assert status == 200
    assert body["peaks"] == [[-0.5, 0.5], [-0.125, 0.125]] and body["duration"] == 3.0
    cached = decode(gw.probe.get(key + ".peaks"))
    assert cached is not None and cached.peaks.duration == 3.0
    assert gw.probe.objects() == [key, key + ".peaks"]


async def test_a_damaged_cache_object_is_replaced(gw: Gateway) -> None:
    rid, mid, key = await stored_wav(gw, steps_wav())
    gw.probe.put(key + ".peaks", b"not peaks at all")
    status, body = await get_json(gw, peaks_path(rid, mid, 2), gw.h())
    assert status == 200 and body["peaks"] == [[-0.25, 0.25], [-0.75, 0.75]]
    assert decode(gw.probe.get(key + ".peaks")) is not None


async def test_concurrent_first_requests_agree_and_cache_once(gw: Gateway) -> None:
    rid, mid, key = await stored_wav(gw, steps_wav())
    answers = await asyncio.gather(*(get_json(gw, peaks_path(rid, mid, 50), gw.h())
                                     for _ in range(6)))
    assert {status for status, _ in answers} == {200}
    assert all(body == answers[0][1] for _, body in answers)
    assert gw.probe.objects() == [key, key + ".peaks"]


async def test_deleting_the_recording_deletes_the_cached_peaks(gw: Gateway) -> None:
    rid, mid, key = await stored_wav(gw, steps_wav())
    await get_json(gw, peaks_path(rid, mid), gw.h())
    assert gw.probe.objects() == [key, key + ".peaks"]
    async with gw.client.delete(f"/recordings/{rid}", headers=gw.h()) as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "deleted", "recording_id": rid}
    assert gw.probe.objects() == []
    status, _ = await get_json(gw, peaks_path(rid, mid), gw.h())
    assert status == 404


async def test_retention_deletes_the_cached_peaks_too(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    clock = ManualClock()
    gw = await start_gateway(aiohttp_client, settings.with_changes(retention_days=14.0),
                             clock=clock)
    rid, mid, key = await stored_wav(gw, steps_wav())
    await get_json(gw, peaks_path(rid, mid), gw.h())
    assert gw.probe.objects() == [key, key + ".peaks"]
    clock.advance(timedelta(days=15))
    report = await gw.app[RETENTION].sweep()
    assert [r.id for r in report.removed] == [rid]
    assert gw.probe.objects() == []


async def test_a_delete_during_the_first_scan_leaves_nothing_behind(gw: Gateway) -> None:
    # Whichever finishes first, the scan or the delete, no object may outlive the recording.
    second = tone_wav(seconds=1.0, sample_rate=16_000)[44:]  # one second of samples
    ten_minutes = riff(chunk(b"fmt ", fmt_body(0x0001, 1, 16_000, 2)),
                       chunk(b"data", second * 600))
    rid, mid, _ = await stored_wav(gw, ten_minutes)
    scanning = asyncio.ensure_future(get_json(gw, peaks_path(rid, mid), gw.h()))
    await asyncio.sleep(0.1)  # most often the scan is under way now; the outcome is the same
    async with gw.client.delete(f"/recordings/{rid}", headers=gw.h()) as resp:
        assert resp.status == 200
    status, _ = await scanning
    assert status in (200, 404)
    assert gw.probe.objects() == []


async def test_a_swelling_sine_draws_a_rising_envelope(gw: Gateway) -> None:
    """More frames than fine buckets: the shape survives the fixed resolution."""
    seconds = 5
    values = [math.sin(2 * math.pi * 3 * n / RATE) * (n / (RATE * seconds))
              for n in range(RATE * seconds)]  # 3 Hz, its amplitude growing from 0 to 1
    rid, mid, _ = await stored_wav(gw, wav(values, rate=RATE))
    _, body = await get_json(gw, peaks_path(rid, mid, 5), gw.h())
    # Each second's highest crest is at t = k + 0.75, where the amplitude is t / 5.
    highs = [pair[1] for pair in body["peaks"]]
    assert highs == pytest.approx([0.15, 0.35, 0.55, 0.75, 0.95], abs=2e-3)


class TestSidecar:
    async def test_peaks_with_the_upstreams_credentials(
        self, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer,
        settings: Settings, backend: str,
    ) -> None:
        api = FakeMeetingApi()
        api.add_recording(RECORDING, 1, SESSION, [(MEDIA, "audio", "wav", backend)])
        side = await start_sidecar(aiohttp_client, aiohttp_server, settings, api=api)
        key = f"recordings/1/{RECORDING}/{SESSION}.wav"
        side.probe.put(key, steps_wav())
        path = f"/recordings/{RECORDING}/media/{MEDIA}/peaks?width=2"
        async with side.client.get(path, headers=ALICE) as resp:
            assert resp.status == 200
            assert (await resp.json())["peaks"] == [[-0.25, 0.25], [-0.75, 0.75]]
        for headers, status in ((BOB, 404), ({}, 401), ({"X-API-Key": "nope"}, 401)):
            async with side.client.get(path, headers=headers) as resp:
                assert resp.status == status
                assert set(await resp.json()) == {"detail"}
        assert side.probe.objects() == [key, key + ".peaks"]
        async with side.client.delete(f"/recordings/{RECORDING}", headers=ALICE) as resp:
            assert resp.status == 200
        assert side.probe.objects() == [] and api.deleted == [RECORDING]
