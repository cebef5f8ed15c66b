"""A gateway served from a thread of its own, for clients that block (requests, schemathesis)."""

from __future__ import annotations

import asyncio
import threading

import requests
from aiohttp import web

from gateway.app import create_app
from gateway.appkeys import CATALOG
from gateway.auth import generate_api_key
from gateway.demo import tone_wav
from gateway.models import Principal, Role
from gateway.settings import Settings
from tests.fake_upstream import FakeMeetingApi


class LiveGateway:
    """A gateway on 127.0.0.1, in a thread with its own event loop.

    schemathesis calls the API with `requests`, which blocks, so the server cannot
    share the test's thread. Standalone: an admin key of tenant `default`. Sidecar: a
    test meeting API on 127.0.0.1 too, whose key `key-alice` is the caller's.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sidecar = settings.sidecar
        self.url = ""
        self.key = "key-alice" if self.sidecar else ""
        self.session = requests.Session()
        self.upstream = FakeMeetingApi()
        self._seeded: dict[str, tuple[str, str]] = {}
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-gateway", daemon=True)

    def __enter__(self) -> LiveGateway:
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            raise RuntimeError("the gateway did not start") from self._failure
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.session.close()
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runners: list[web.AppRunner] = []
        try:
            settings = self.settings
            if self.sidecar:
                upstream_url = await self._start(self.upstream.app, runners)
                settings = settings.with_changes(upstream_url=upstream_url)
            app = create_app(settings)
            self.url = await self._start(app, runners)
            if not self.sidecar:
                key = generate_api_key()
                await app[CATALOG].add_api_key(key.key_hash, key.prefix,
                                               Principal(1, "default", Role.ADMIN))
                self.key = key.key
            self._ready.set()
            await self._stop.wait()
        finally:
            for runner in reversed(runners):
                await runner.cleanup()

    @staticmethod
    async def _start(app: web.Application, runners: list[web.AppRunner]) -> str:
        runner = web.AppRunner(app, handler_cancellation=False)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    def seeded(self, label: str) -> tuple[str, str]:
        """A recording of the caller with one WAV file, its own for `label`."""
        if label not in self._seeded:
            wav = tone_wav(seconds=0.5, sample_rate=8000)
            self._seeded[label] = self._seed_sidecar(wav) if self.sidecar \
                else self._seed_standalone(wav)
        return self._seeded[label]

    def _seed_standalone(self, wav: bytes) -> tuple[str, str]:
        resp = self.session.post(f"{self.url}/recordings", headers=self.headers, json={
            "platform": "google_meet", "native_meeting_id": "abc-defg-hij"})
        assert resp.status_code == 201, resp.text
        recording_id = resp.json()["id"]
        resp = self.session.post(f"{self.url}/recordings/{recording_id}/media", data=wav,
                                 params={"type": "audio", "format": "wav"},
                                 headers=self.headers)
        assert resp.status_code == 201, resp.text
        return str(recording_id), str(resp.json()["id"])

    def _seed_sidecar(self, wav: bytes) -> tuple[str, str]:
        recording_id = 906238426347 + 2 * len(self._seeded)
        session_uid = f"session-{len(self._seeded)}"
        self.upstream.add_recording(recording_id, 1, session_uid,
                                    [(recording_id + 1, "audio", "wav", "local")])
        # Where the meeting API's bot wrote it: recordings/<user_id>/<id>/<session_uid>.wav
        root = self.settings.env_storage().path
        assert root is not None
        path = root / "recordings" / "1" / str(recording_id)
        path.mkdir(parents=True, exist_ok=True)
        (path / f"{session_uid}.wav").write_bytes(wav)
        return str(recording_id), str(recording_id + 1)
