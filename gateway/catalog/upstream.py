"""Recording metadata from the upstream meeting API (sidecar mode).

The caller's own credentials go with every request, so the upstream decides who
sees what; its 401 stays 401, and 403 or 404 become our 404. Where the bytes are
is derived from the upstream's JSON alone: `recordings/<user_id>/<id>/<session_uid>.<format>`
in the storage whose backend the media file names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gateway.errors import Conflict, Forbidden, Unauthorized
from gateway.media import is_supported
from gateway.models import (
    MAX_ID,
    SESSION_UID_RE,
    MediaFile,
    Recording,
    RecordingStatus,
    Scope,
)
from gateway.upstream import Upstream, UpstreamError

log = logging.getLogger(__name__)

StorageResolver = Callable[[str, str | None], str | None]
"""(storage_backend, storage name hint) → the name of a configured storage, or None."""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 0 <= value <= MAX_ID else None


def recording_from_json(body: Any, resolve_storage: StorageResolver) -> Recording:
    """A Recording from the upstream's JSON, validated as strictly as our own input."""
    if not isinstance(body, dict):
        raise UpstreamError("The upstream meeting API answered a recording that is not an "
                            "object")
    recording_id, user_id = _int(body.get("id")), _int(body.get("user_id"))
    session_uid = body.get("session_uid")
    if recording_id is None or user_id is None or not isinstance(session_uid, str) \
            or not SESSION_UID_RE.fullmatch(session_uid):
        raise UpstreamError("The upstream meeting API answered a recording without a valid "
                            "id, user_id or session_uid")
    try:
        status = RecordingStatus(str(body.get("status")))
    except ValueError:
        status = RecordingStatus.IN_PROGRESS  # statuses of its own: not ours to judge
    media: list[MediaFile] = []
    for item in body.get("media_files") or []:
        if not isinstance(item, dict):
            continue
        media_id, media_type, media_format = (_int(item.get("id")), item.get("type"),
                                              item.get("format"))
        backend = item.get("storage_backend")
        if media_id is None or not isinstance(media_type, str) \
                or not isinstance(media_format, str) or not isinstance(backend, str) \
                or not is_supported(media_type, media_format):
            log.warning("recording %s: skipped media file %r that we cannot serve",
                        recording_id, item.get("id"))
            continue
        hint = item.get("storage") if isinstance(item.get("storage"), str) else None
        storage_name = resolve_storage(backend, hint) or ""
        size = _int(item.get("file_size_bytes"))
        media.append(MediaFile(
            id=media_id, recording_id=recording_id, type=media_type, format=media_format,
            storage_backend=backend, storage_name=storage_name,
            storage_key=f"recordings/{user_id}/{recording_id}/{session_uid}.{media_format}",
            file_size_bytes=size or 0, duration_seconds=None, metadata={},
            created_at=str(item.get("created_at") or ""),
        ))
    return Recording(
        id=recording_id, tenant="", user_id=user_id,
        meeting_id=_int(body.get("meeting_id")), platform=None, native_meeting_id=None,
        session_uid=session_uid, source=str(body.get("source") or ""), status=status,
        error_message=None, storage_name="", created_at=str(body.get("created_at") or ""),
        completed_at=None, media_files=tuple(media),
    )


class UpstreamCatalog:
    """The meeting API as the catalog: read and delete, with the caller's credentials."""

    decides_deletes = True  # its DELETE is the only way to learn whether one is allowed

    def __init__(self, upstream: Upstream, resolve_storage: StorageResolver) -> None:
        self._upstream = upstream
        self._resolve_storage = resolve_storage

    def lookup_scope(self, scope: Scope) -> Scope:
        return scope  # each caller's answer is its own: cached per credential

    @staticmethod
    def _headers(scope: Scope) -> dict[str, str]:
        return {**dict(scope.credentials), "Accept": "application/json"}

    async def get_recording(self, recording_id: int, scope: Scope) -> Recording | None:
        answer = await self._upstream.get_json("GET", f"/recordings/{recording_id}",
                                               self._headers(scope))
        if answer.status == 401:
            raise Unauthorized()
        if answer.status in (403, 404):
            return None
        if answer.status != 200:
            raise UpstreamError(f"The upstream meeting API answered {answer.status}")
        return recording_from_json(answer.body, self._resolve_storage)

    async def delete_recording(self, recording_id: int, scope: Scope) -> bool:
        """True if the upstream deleted it; 403 and 409 when it refuses a caller that
        could read the recording (so its existence tells that caller nothing new)."""
        answer = await self._upstream.get_json("DELETE", f"/recordings/{recording_id}",
                                               self._headers(scope))
        if answer.status == 401:
            raise Unauthorized()
        if answer.status == 403:
            raise Forbidden("The upstream meeting API does not let this caller delete the "
                            "recording")
        if answer.status == 409:
            raise Conflict("The upstream meeting API refused to delete the recording (409)")
        if answer.status == 404:
            return False
        if not 200 <= answer.status < 300:
            raise UpstreamError(f"The upstream meeting API answered {answer.status}")
        return True

    async def ping(self) -> None:
        await self._upstream.ping()

    async def close(self) -> None:
        return None  # the session belongs to the app's cleanup context
