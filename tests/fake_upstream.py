"""A small real meeting API, as Vexa's documentation describes it, for sidecar tests.

It owns users (by API key), recordings and transcripts, keeps internal storage
paths in its JSON (as such services do), counts calls, and has a few endpoints
that exercise the proxy: echo a streamed body, stream a large body, serve ranges,
send gzip, hang. Run it alone with `python -m tests.fake_upstream --port 8000`.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
from collections import Counter
from typing import Any

from aiohttp import web

from gateway.http_range import Conditions, Outcome, Representation, evaluate

CHUNK = bytes(range(256)) * 256  # 64 KiB


class FakeMeetingApi:
    def __init__(self) -> None:
        self.keys = {"key-alice": 1, "key-bob": 2}
        self.recordings: dict[int, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.deleted: list[int] = []
        self.received_headers: list[dict[str, str]] = []
        self.request_ids: list[str | None] = []  # X-Request-ID of each authenticated call
        self.app = web.Application()
        r = self.app.router
        r.add_get("/recordings", self.list_recordings)
        r.add_get("/recordings/{id}", self.get_recording)
        r.add_delete("/recordings/{id}", self.delete_recording)
        r.add_get("/transcripts/{platform}/{native}", self.transcript)
        r.add_post("/echo", self.echo)
        r.add_get("/big", self.big)
        r.add_get("/ranged", self.ranged)
        r.add_get("/gzip", self.gzipped)
        r.add_get("/slow", self.slow)
        r.add_route("*", "/headers", self.headers)
        r.add_get("/", self.root)

    def add_recording(self, recording_id: int, user_id: int, session_uid: str,
                      media: list[tuple[int, str, str, str]]) -> dict[str, Any]:
        """media: (media id, type, format, storage_backend)."""
        recording = {
            "id": recording_id, "meeting_id": 16, "user_id": user_id,
            "session_uid": session_uid, "source": "bot", "status": "completed",
            "error_message": None, "created_at": "2026-02-13T20:10:20Z",
            "completed_at": "2026-02-13T20:44:55Z",
            "storage_path": f"/var/lib/vexa/recordings/{user_id}/{recording_id}",
            "media_files": [{
                "id": media_id, "type": kind, "format": fmt, "storage_backend": backend,
                "storage_path": f"recordings/{user_id}/{recording_id}/{session_uid}.{fmt}",
                "file_size_bytes": 1234, "duration_seconds": 4.0,
                "metadata": {"sample_rate": 16000, "bucket": "vexa-recordings",
                             "object_key": "internal"},
                "created_at": "2026-02-13T20:44:55Z",
            } for media_id, kind, fmt, backend in media],
        }
        self.recordings[recording_id] = recording
        return recording

    def _user(self, request: web.Request) -> int:
        self.calls[f"{request.method} {request.path}"] += 1
        self.request_ids.append(request.headers.get("X-Request-ID"))
        key = request.headers.get("X-API-Key", "")
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        user = self.keys.get(key) or self.keys.get(bearer)
        if user is None:
            raise web.HTTPUnauthorized(text='{"detail": "Invalid API key"}',
                                       content_type="application/json")
        return user

    async def root(self, request: web.Request) -> web.Response:
        return web.json_response({"service": "meeting-api"})

    async def list_recordings(self, request: web.Request) -> web.Response:
        user = self._user(request)
        limit = request.query.get("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= 200:
            return web.json_response({"detail": "limit must be 1..200"}, status=422)
        mine = [r for r in self.recordings.values() if r["user_id"] == user]
        return web.json_response({"recordings": mine[: int(limit)]})

    async def get_recording(self, request: web.Request) -> web.Response:
        user = self._user(request)
        recording = self.recordings.get(int(request.match_info["id"]))
        if recording is None or recording["user_id"] != user:
            return web.json_response({"detail": "Recording not found"}, status=404)
        return web.json_response(recording)

    async def delete_recording(self, request: web.Request) -> web.Response:
        user = self._user(request)
        recording_id = int(request.match_info["id"])
        recording = self.recordings.get(recording_id)
        if recording is None or recording["user_id"] != user:
            return web.json_response({"detail": "Recording not found"}, status=404)
        del self.recordings[recording_id]
        self.deleted.append(recording_id)
        return web.json_response({"status": "deleted", "recording_id": recording_id})

    async def transcript(self, request: web.Request) -> web.Response:
        user = self._user(request)
        mine = [r for r in self.recordings.values() if r["user_id"] == user]
        return web.json_response({
            "id": 16, "platform": request.match_info["platform"],
            "native_meeting_id": request.match_info["native"], "status": "completed",
            "segments": [{"start": 0.0, "end": 2.5, "text": "Hello", "speaker": "A"}],
            "recordings": mine,
        })

    async def echo(self, request: web.Request) -> web.Response:
        """Reads the body as it arrives and reports what came."""
        self.calls["POST /echo"] += 1
        received = chunks = 0
        async for chunk in request.content.iter_any():
            received += len(chunk)
            chunks += 1
        return web.json_response({
            "received": received, "chunks": chunks, "query": dict(request.query),
            "content_length": request.headers.get("Content-Length"),
        }, status=201)

    async def big(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", str(len(CHUNK))))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        sent = 0
        while sent < size:
            piece = CHUNK[: min(len(CHUNK), size - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def ranged(self, request: web.Request) -> web.Response:
        body = CHUNK[:10_000]
        rep = Representation(len(body), '"fixed"', 1_700_000_000)
        decision = evaluate(request.method, Conditions(range=request.headers.get("Range")), rep,
                            max_ranges=1)
        headers = {"Accept-Ranges": "bytes", "ETag": rep.etag,
                   "Content-Disposition": 'inline; filename="meeting.wav"',
                   "Content-Type": "audio/wav"}
        if decision.outcome is Outcome.PARTIAL:
            (rng,) = decision.ranges
            headers["Content-Range"] = rng.content_range(len(body))
            return web.Response(status=206, body=body[rng.start: rng.end + 1], headers=headers)
        return web.Response(body=body, headers=headers)

    async def gzipped(self, request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(json.dumps({"compressed": True}).encode()),
                            headers={"Content-Encoding": "gzip",
                                     "Content-Type": "application/json"})

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({"late": True})

    async def headers(self, request: web.Request) -> web.Response:
        self.received_headers.append(dict(request.headers))
        return web.json_response({"raw_path": request.raw_path, "method": request.method,
                                  "headers": dict(request.headers)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # access lines
    api = FakeMeetingApi()
    api.add_recording(42, 1, "demo-session", [(4201, "audio", "wav", "local")])
    web.run_app(api.app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
