"""/recordings: list, read, create, complete, delete; and /transcripts' recordings."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from gateway.access import require_role
from gateway.appkeys import ACCESS, CATALOG, INGEST, RECORDINGS, STORAGES
from gateway.catalog import NewRecording
from gateway.errors import NotFound, Unprocessable
from gateway.models import SESSION_UID_RE, RecordingStatus, Role, Scope
from gateway.routes.params import (
    ID_PATTERN,
    int_field,
    json_object,
    path_id,
    principal,
    query_int,
    text_field,
)

PLATFORM_RE = r"[a-z][a-z0-9_]{0,31}"
NATIVE_MEETING_ID_RE = r"[A-Za-z0-9._~:@+=-]{1,256}"
SOURCE_RE = r"[a-z0-9_-]{1,32}"
STORAGE_NAME_RE = r"[a-z0-9][a-z0-9_-]{0,63}"
ERROR_MESSAGE_MAX = 2000

log = logging.getLogger(__name__)


async def list_recordings(request: web.Request) -> web.Response:
    who = await principal(request)
    limit = query_int(request, "limit", default=50, low=1, high=200)
    offset = query_int(request, "offset", default=0, low=0)
    meeting_id = query_int(request, "meeting_id", default=None, low=0)
    assert limit is not None and offset is not None
    items = await request.app[CATALOG].list_recordings(
        Scope.of(who), limit=limit, offset=offset, meeting_id=meeting_id
    )
    return web.json_response({"recordings": [r.to_json() for r in items]})


async def get_recording(request: web.Request) -> web.Response:
    who = await principal(request)
    recording = await request.app[RECORDINGS].get(path_id(request, "recording_id"),
                                                  Scope.of(who))
    return web.json_response(recording.to_json())


async def create_recording(request: web.Request) -> web.Response:
    who = await principal(request)
    require_role(who, Role.RECORDER)
    body = await json_object(request)
    user_id = int_field(body, "user_id")
    if user_id is not None and user_id != who.user_id:
        require_role(who, Role.ADMIN)  # an admin may file a recording for a user of its tenant
    session_uid = text_field(body, "session_uid", SESSION_UID_RE.pattern)
    storage = text_field(body, "storage", STORAGE_NAME_RE)
    new = NewRecording(
        tenant=who.tenant,
        user_id=who.user_id if user_id is None else user_id,
        meeting_id=int_field(body, "meeting_id"),
        platform=text_field(body, "platform", PLATFORM_RE),
        native_meeting_id=text_field(body, "native_meeting_id", NATIVE_MEETING_ID_RE),
        session_uid=session_uid or str(uuid.uuid4()),
        source=text_field(body, "source", SOURCE_RE, default="bot") or "bot",
        storage_name=request.app[STORAGES].for_new_recording(storage, who.tenant),
    )
    recording = await request.app[INGEST].create(new)
    return web.json_response(recording.to_json(), status=201)


async def complete_recording(request: web.Request) -> web.Response:
    who = await principal(request)
    require_role(who, Role.RECORDER)
    body = await json_object(request)
    status = text_field(body, "status", "completed|failed") or "completed"
    error_message = body.get("error_message")
    if error_message is not None and (
        not isinstance(error_message, str) or len(error_message) > ERROR_MESSAGE_MAX
    ):
        raise Unprocessable(
            f"Field 'error_message' must be a string of at most {ERROR_MESSAGE_MAX} characters"
        )
    recording = await request.app[RECORDINGS].get(path_id(request, "recording_id"),
                                                  Scope.of(who))
    finished = await request.app[INGEST].finish(recording, RecordingStatus(status),
                                                error_message)
    return web.json_response(finished.to_json())


async def delete_recording(request: web.Request) -> web.Response:
    """Storage objects first (the gateway owns the bytes), then the metadata."""
    scope = await request.app[ACCESS].scope(request, Role.RECORDER)  # viewers only read
    recordings = request.app[RECORDINGS]
    recording = await recordings.get(path_id(request, "recording_id"), scope)
    report = await recordings.delete(recording, scope)
    answer: dict[str, object] = {"status": "deleted", "recording_id": report.recording_id}
    if report.storage_errors:
        answer["storage_errors"] = list(report.storage_errors)
    return web.json_response(answer)


async def legal_hold(request: web.Request) -> web.Response:
    """PUT puts the recording on legal hold (kept from every delete), DELETE releases it."""
    who = await principal(request)
    require_role(who, Role.ADMIN)
    recording_id = path_id(request, "recording_id")
    held = request.method == "PUT"
    scope = Scope.of(who)
    recording = await request.app[CATALOG].set_legal_hold(recording_id, scope, held)
    if recording is None:
        raise NotFound("Recording not found")
    request.app[RECORDINGS].invalidate(recording_id, scope)
    log.info("legal hold %s on recording %s by user %s (tenant %s)",
             "set" if held else "released", recording_id, who.user_id, who.tenant)
    return web.json_response(recording.to_json())


async def meeting_recordings(request: web.Request) -> web.Response:
    """A meeting's recordings; the standalone gateway holds no transcript text."""
    who = await principal(request)
    platform = request.match_info["platform"]
    native_meeting_id = request.match_info["native_meeting_id"]
    items = await request.app[CATALOG].meeting_recordings(
        Scope.of(who), platform, native_meeting_id
    )
    if not items:
        raise NotFound("Meeting not found")
    return web.json_response({
        "platform": platform,
        "native_meeting_id": native_meeting_id,
        "recordings": [r.to_json() for r in items],
    })


RECORDING_PATH = f"/recordings/{{recording_id:{ID_PATTERN}}}"
TRANSCRIPT_PATH = (
    f"/transcripts/{{platform:{PLATFORM_RE}}}/{{native_meeting_id:{NATIVE_MEETING_ID_RE}}}")


def setup_delete(app: web.Application) -> None:
    """Deleting is the gateway's in every mode: it owns the bytes."""
    app.router.add_delete(RECORDING_PATH, delete_recording)


def setup_standalone(app: web.Application) -> None:
    """The embedded catalog's read and ingest routes."""
    app.router.add_get("/recordings", list_recordings)
    app.router.add_post("/recordings", create_recording)
    app.router.add_get(RECORDING_PATH, get_recording)
    app.router.add_post(f"{RECORDING_PATH}/complete", complete_recording)
    app.router.add_put(f"{RECORDING_PATH}/legal-hold", legal_hold)
    app.router.add_delete(f"{RECORDING_PATH}/legal-hold", legal_hold)
    app.router.add_get(TRANSCRIPT_PATH, meeting_recordings)
