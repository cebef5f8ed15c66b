"""A demo user, key and recording, so a newcomer has something to play at once."""

from __future__ import annotations

import array
import math
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

from gateway.auth import UrlSigner, generate_api_key
from gateway.catalog import Catalog, NewRecording
from gateway.catalog.factory import open_catalog
from gateway.links import MediaLocation, signed_raw_url
from gateway.models import Principal, RecordingStatus, Role, Scope
from gateway.recordings import Ingest, Recordings
from gateway.settings import Settings
from gateway.storage import StorageRegistry
from gateway.storage.factory import open_storages

DEMO_USER_ID = 1
DEMO_PLATFORM = "google_meet"
DEMO_MEETING = "abc-defg-hij"
DEMO_SESSION = "demo-session"


def tone_wav(seconds: float = 12.0, sample_rate: int = 16_000) -> bytes:
    """A mono 16-bit WAV whose pitch steps up every second, so a seek can be heard."""
    samples = array.array("h")
    for n in range(int(seconds * sample_rate)):
        t = n / sample_rate
        frequency = 220.0 * 2 ** (int(t) / 12)  # one semitone higher each second
        fade = min(1.0, (t % 1.0) * 50, (1.0 - t % 1.0) * 50)  # no clicks between steps
        samples.append(int(12_000 * fade * math.sin(2 * math.pi * frequency * t)))
    if sys.byteorder == "big":
        samples.byteswap()
    data = samples.tobytes()
    header = b"".join((
        b"RIFF", (36 + len(data)).to_bytes(4, "little"), b"WAVE",
        b"fmt ", (16).to_bytes(4, "little"), (1).to_bytes(2, "little"), (1).to_bytes(2, "little"),
        sample_rate.to_bytes(4, "little"), (sample_rate * 2).to_bytes(4, "little"),
        (2).to_bytes(2, "little"), (16).to_bytes(2, "little"),
        b"data", len(data).to_bytes(4, "little"),
    ))
    return header + data


@dataclass(frozen=True, slots=True)
class Demo:
    api_key: str
    recording_id: int
    media_id: int
    signed_raw_path: str


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def create_demo(settings: Settings) -> Demo:
    """Create (or reuse) the demo recording and a fresh key for the demo user."""
    catalog = await open_catalog(settings)
    async with AsyncExitStack() as stack:
        storages = await open_storages(settings, stack)
        try:
            return await _seed(settings, catalog, storages)
        finally:
            await storages.close()
            await catalog.close()


async def _seed(settings: Settings, catalog: Catalog, storages: StorageRegistry) -> Demo:
    principal = Principal(DEMO_USER_ID, "default", Role.RECORDER)
    key = generate_api_key()
    await catalog.add_api_key(key.key_hash, key.prefix, principal)
    ingest = Ingest(catalog, Recordings(catalog, storages, cache_ttl=0))
    existing = await catalog.meeting_recordings(
        Scope.of(principal), DEMO_PLATFORM, DEMO_MEETING
    )
    ready = [r for r in existing if r.media_files]
    if ready:
        recording = ready[0]
    else:
        recording = await ingest.create(NewRecording(
            tenant=principal.tenant, user_id=principal.user_id, meeting_id=1,
            platform=DEMO_PLATFORM, native_meeting_id=DEMO_MEETING,
            session_uid=DEMO_SESSION, source="demo", storage_name=storages.default,
        ))
        await ingest.add_media(recording, "audio", "wav", _once(tone_wav()),
                                   limit=settings.max_upload_bytes)
        recording = await ingest.finish(recording, RecordingStatus.COMPLETED, None)
    media = recording.media_files[0]
    signed = signed_raw_url(
        UrlSigner(settings.signing_keys), f"/recordings/{recording.id}/media/{media.id}/raw",
        MediaLocation.of(recording, media), expires_in=settings.presign_expiry,
        disposition="inline", by=str(principal.user_id))
    return Demo(key.key, recording.id, media.id, signed)




def describe(demo: Demo, base_url: str) -> str:
    """What to try next, as printed by `gateway demo`."""
    return "\n".join((
        "Demo recording ready. Try:",
        f"  export API_KEY={demo.api_key}",
        f'  curl -H "X-API-Key: $API_KEY" {base_url}/recordings',
        f'  curl -H "X-API-Key: $API_KEY" -H "Range: bytes=0-99" -o /dev/null -D - '
        f"{base_url}/recordings/{demo.recording_id}/media/{demo.media_id}/raw",
        f'  curl -H "X-API-Key: $API_KEY" '
        f"{base_url}/recordings/{demo.recording_id}/media/{demo.media_id}/download",
        "Play it in a browser (signed link, no header needed):",
        f"  {base_url}{demo.signed_raw_path}",
        "Or open the player page, paste the key, and see its waveform:",
        f"  {base_url}/",
    ))
