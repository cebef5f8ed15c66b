"""The Catalog protocol: who holds which key, and which recordings exist."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from gateway.models import MediaFile, Principal, Recording, RecordingStatus, Role, Scope


class CatalogUnavailable(Exception):
    """The catalog database cannot be used: unreachable, refused, or the wrong schema.

    The message names host, port, database and user; never a password.
    """


@dataclass(frozen=True, slots=True)
class NewRecording:
    tenant: str
    user_id: int
    meeting_id: int | None
    platform: str | None
    native_meeting_id: str | None
    session_uid: str
    source: str
    storage_name: str


@dataclass(frozen=True, slots=True)
class NewMediaFile:
    recording_id: int
    type: str
    format: str
    storage_backend: str
    storage_name: str
    storage_key: str
    file_size_bytes: int
    duration_seconds: float | None
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Expiry:
    """Which recordings retention removes: created before a cutoff (API timestamps).

    `tenants` overrides `default` per tenant; None there means that tenant keeps
    everything. Recordings on legal hold are never expired.
    """

    default: str | None
    tenants: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def expires_anything(self) -> bool:
        return self.default is not None or any(v is not None for v in self.tenants.values())


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """An API key as listed to operators: never the key itself."""

    prefix: str
    user_id: int
    tenant: str
    role: Role
    created_at: str
    revoked_at: str | None


class RecordingCatalog(Protocol):
    """What serving and deleting bytes needs; an upstream meeting API provides this much."""

    decides_deletes: bool
    """True when only delete_recording itself can tell whether a delete is allowed (an
    upstream's policy): then it runs before any byte is removed."""

    def lookup_scope(self, scope: Scope) -> Scope:
        """The scope to fetch a recording with (and to cache it under) for a caller."""

    async def get_recording(self, recording_id: int, scope: Scope) -> Recording | None: ...

    async def delete_recording(self, recording_id: int, scope: Scope) -> bool: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class DeletesWithMedia(Protocol):
    """A catalog that can say which media files a delete took with it."""

    async def delete_recording_media(
        self, recording_id: int, scope: Scope
    ) -> tuple[MediaFile, ...] | None:
        """Delete a recording; return the media files it had at that moment (None: the
        scope sees no such recording). Media added concurrently is either in the answer
        or refused, never dropped unseen."""


class Catalog(RecordingCatalog, DeletesWithMedia, Protocol):
    """The embedded catalog: keys, recordings, media files; every lookup within a Scope."""

    async def principal_for_key(self, key_hash: str) -> Principal | None:
        """The principal whose (unrevoked) API key hashes to `key_hash`."""

    async def add_api_key(self, key_hash: str, prefix: str, principal: Principal) -> None:
        """Store a new key's hash; creates the user in its tenant if new."""

    async def list_api_keys(self) -> list[ApiKeyInfo]: ...

    async def revoke_api_key(self, prefix: str) -> bool: ...

    async def create_recording(self, new: NewRecording) -> Recording: ...

    async def list_recordings(
        self, scope: Scope, *, limit: int, offset: int, meeting_id: int | None
    ) -> list[Recording]:
        """Newest first."""

    async def meeting_recordings(
        self, scope: Scope, platform: str, native_meeting_id: str
    ) -> list[Recording]: ...

    async def add_media_file(self, new: NewMediaFile) -> MediaFile: ...

    async def finish_recording(
        self, recording_id: int, status: RecordingStatus, error_message: str | None
    ) -> Recording | None: ...

    async def set_legal_hold(
        self, recording_id: int, scope: Scope, held: bool
    ) -> Recording | None:
        """Put a recording on legal hold or release it; None if the scope cannot see it."""

    async def expired_recordings(
        self, expiry: Expiry, *, limit: int, after: tuple[str, int] | None = None
    ) -> list[Recording]:
        """Expired, unheld recordings of every tenant, oldest first, after (created_at, id)."""

