"""Domain objects: who is asking, and the recordings they ask about.

JSON shapes follow Vexa's recordings API exactly; storage locations never leave
the process.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# Ids are large integers as in Vexa's API, kept below 2**53 so that browsers'
# JSON.parse reads them exactly: milliseconds since 2024 in the high bits and
# 12 random bits, so they sort by creation time and rarely collide.
ID_EPOCH_MS = 1_704_067_200_000
ID_RANDOM_BITS = 12
MAX_ID = 2**53 - 1
SESSION_UID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


_last_id = 0
_id_lock = threading.Lock()  # catalogs call this from their worker threads


def new_id() -> int:
    """A fresh, time-ordered, JavaScript-safe integer id.

    Within one process ids only grow, so two made in the same millisecond keep their
    order too (a list sorted by creation time and id is then in creation order).
    """
    global _last_id
    millis = int(time.time() * 1000) - ID_EPOCH_MS
    candidate = ((millis << ID_RANDOM_BITS) | secrets.randbits(ID_RANDOM_BITS)) & MAX_ID
    with _id_lock:
        _last_id = max(candidate, _last_id + 1)
        return _last_id


Clock = Callable[[], datetime]
"""Where the time comes from; tests inject one they control."""


def system_clock() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """A time as the API writes it: ISO 8601, seconds, 'Z' (so strings sort by time)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now() -> str:
    """The current time as the API writes it."""
    return timestamp(system_clock())


class Role(StrEnum):
    """What a principal may do; each role includes the ones before it."""

    VIEWER = "viewer"
    RECORDER = "recorder"
    ADMIN = "admin"

    def includes(self, other: Role) -> bool:
        order = (Role.VIEWER, Role.RECORDER, Role.ADMIN)
        return order.index(self) >= order.index(other)


class DeletePolicy(StrEnum):
    """Whether a tenant's recordings may be deleted one by one (Voki's audit lock)."""

    ALLOW = "allow"
    DENY = "deny"


class RecordingStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Principal:
    """The one identity every credential becomes; handlers see nothing else."""

    user_id: int
    tenant: str
    role: Role

    @property
    def sees_whole_tenant(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class Scope:
    """Which recordings a lookup may return.

    Standalone: one tenant, and one user unless None. Sidecar: the caller's own
    credentials, forwarded so that the upstream decides (kept out of repr()).
    """

    tenant: str
    user_id: int | None
    credentials: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, principal: Principal) -> Scope:
        return cls(principal.tenant, None if principal.sees_whole_tenant else principal.user_id)

    @property
    def cache_key(self) -> tuple[str, int | None, str]:
        """Identifies the scope in caches without holding the credential itself."""
        digest = hashlib.sha256(repr(self.credentials).encode()).hexdigest() \
            if self.credentials else ""
        return (self.tenant, self.user_id, digest)

    def allows(self, recording: Recording) -> bool:
        return (not self.tenant or recording.tenant == self.tenant) and (
            self.user_id is None or recording.user_id == self.user_id
        )


UNSCOPED = Scope(tenant="", user_id=None)
"""Scope of a request that a signed URL already authorized for one exact path."""


@dataclass(frozen=True, slots=True)
class MediaFile:
    id: int
    recording_id: int
    type: str
    format: str
    storage_backend: str
    storage_name: str
    storage_key: str  # internal: never part of any response
    file_size_bytes: int
    duration_seconds: float | None
    metadata: dict[str, Any]
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "format": self.format,
            "storage_backend": self.storage_backend,
            "file_size_bytes": self.file_size_bytes,
            "duration_seconds": self.duration_seconds,
            "metadata": self.metadata,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class Recording:
    id: int
    tenant: str
    user_id: int
    meeting_id: int | None
    platform: str | None
    native_meeting_id: str | None
    session_uid: str
    source: str
    status: RecordingStatus
    error_message: str | None
    storage_name: str
    created_at: str
    completed_at: str | None
    media_files: tuple[MediaFile, ...] = field(default=())
    legal_hold: bool = False  # standalone only: kept from every delete, retention included

    def media(self, media_id: int) -> MediaFile | None:
        return next((m for m in self.media_files if m.id == media_id), None)

    def key_for(self, media_format: str) -> str:
        """`recordings/<user_id>/<recording_id>/<session_uid>.<ext>`, the same on every backend."""
        return f"recordings/{self.user_id}/{self.id}/{self.session_uid}.{media_format}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "meeting_id": self.meeting_id,
            "user_id": self.user_id,
            "session_uid": self.session_uid,
            "source": self.source,
            "status": str(self.status),
            "error_message": self.error_message,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "media_files": [m.to_json() for m in self.media_files],
            "legal_hold": self.legal_hold,
        }
