"""GET /recordings/{id}/media/{media_id}/peaks?width=N: a waveform to draw, as JSON."""

from __future__ import annotations

from aiohttp import web

from gateway.appkeys import ACCESS, RECORDINGS, STORAGES, WAVEFORMS
from gateway.models import Role
from gateway.peaks import DEFAULT_WIDTH, MAX_WIDTH
from gateway.routes.params import ID_PATTERN, path_id, query_int
from gateway.wav import PCM_ONLY, UnsupportedWav


async def media_peaks(request: web.Request) -> web.Response:
    """`{width, channels, sample_rate, duration, peaks: [[min, max], ...]}`, N pairs.

    Who may ask, and every 404, are the same as for the file's /raw bytes.
    """
    scope = await request.app[ACCESS].scope(request, Role.VIEWER)
    width = query_int(request, "width", default=DEFAULT_WIDTH, low=1, high=MAX_WIDTH)
    assert width is not None
    _, media = await request.app[RECORDINGS].find_media(
        path_id(request, "recording_id"), path_id(request, "media_id"), scope)
    if media.format != "wav":
        raise UnsupportedWav(f"{PCM_ONLY}; this media file is {media.format}")
    storage = request.app[STORAGES].for_reading_media(media.storage_name,
                                                      media.storage_backend)
    peaks = await request.app[WAVEFORMS].peaks(storage, media.storage_key)
    return web.json_response({
        "width": width,
        "channels": peaks.channels,
        "sample_rate": peaks.sample_rate,
        "duration": peaks.duration,
        "peaks": peaks.resample(width),
    }, headers={"Cache-Control": "private"})


def setup(app: web.Application) -> None:
    """In both modes, beside /raw (it reads the same file)."""
    app.router.add_get(
        f"/recordings/{{recording_id:{ID_PATTERN}}}/media/{{media_id:{ID_PATTERN}}}/peaks",
        media_peaks)
