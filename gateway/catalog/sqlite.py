"""The embedded catalog: one SQLite file under the data dir.

Uses the standard library's sqlite3 on one dedicated thread: each catalog call
is one function run there as one transaction, so the event loop never blocks and
no statement needs its own hop (aiosqlite would add a hop per cursor call).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.catalog.base import ApiKeyInfo, Expiry, NewMediaFile, NewRecording
from gateway.errors import Conflict
from gateway.models import (
    UNSCOPED,
    Clock,
    MediaFile,
    Principal,
    Recording,
    RecordingStatus,
    Role,
    Scope,
    new_id,
    system_clock,
    timestamp,
)

_T = TypeVar("_T")

# Each entry moves the schema one version up; PRAGMA user_version records where it is.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY,
        prefix TEXT NOT NULL UNIQUE,
        user_id INTEGER NOT NULL REFERENCES users(id),
        tenant TEXT NOT NULL,
        role TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE recordings (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        meeting_id INTEGER,
        platform TEXT,
        native_meeting_id TEXT,
        session_uid TEXT NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL,
        error_message TEXT,
        storage_name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        completed_at TEXT
    );
    CREATE INDEX recordings_by_owner ON recordings (tenant, user_id, created_at, id);
    CREATE INDEX recordings_by_tenant ON recordings (tenant, created_at, id);
    CREATE INDEX recordings_by_meeting ON recordings (tenant, platform, native_meeting_id);
    CREATE TABLE media_files (
        id INTEGER PRIMARY KEY,
        recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
        type TEXT NOT NULL,
        format TEXT NOT NULL,
        storage_backend TEXT NOT NULL,
        storage_name TEXT NOT NULL,
        storage_key TEXT NOT NULL,
        file_size_bytes INTEGER NOT NULL,
        duration_seconds REAL,
        metadata TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (recording_id, format)
    );
    """,
    """
    ALTER TABLE recordings ADD COLUMN legal_hold INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX recordings_by_age ON recordings (created_at, id);
    """,
)

_RECORDING_COLUMNS = (
    "id, tenant, user_id, meeting_id, platform, native_meeting_id, session_uid, source,"
    " status, error_message, storage_name, created_at, completed_at, legal_hold"
)
_MEDIA_COLUMNS = (
    "id, recording_id, type, format, storage_backend, storage_name, storage_key,"
    " file_size_bytes, duration_seconds, metadata, created_at"
)
_SCOPE_SQL = "(:tenant = '' OR tenant = :tenant) AND (:user_id IS NULL OR user_id = :user_id)"


def _scope_params(scope: Scope) -> dict[str, Any]:
    return {"tenant": scope.tenant, "user_id": scope.user_id}


def _media(row: sqlite3.Row) -> MediaFile:
    return MediaFile(
        id=row["id"],
        recording_id=row["recording_id"],
        type=row["type"],
        format=row["format"],
        storage_backend=row["storage_backend"],
        storage_name=row["storage_name"],
        storage_key=row["storage_key"],
        file_size_bytes=row["file_size_bytes"],
        duration_seconds=row["duration_seconds"],
        metadata=json.loads(row["metadata"]),
        created_at=row["created_at"],
    )


def _recording(row: sqlite3.Row, media: Iterable[MediaFile]) -> Recording:
    return Recording(
        id=row["id"],
        tenant=row["tenant"],
        user_id=row["user_id"],
        meeting_id=row["meeting_id"],
        platform=row["platform"],
        native_meeting_id=row["native_meeting_id"],
        session_uid=row["session_uid"],
        source=row["source"],
        status=RecordingStatus(row["status"]),
        error_message=row["error_message"],
        storage_name=row["storage_name"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        media_files=tuple(media),
        legal_hold=bool(row["legal_hold"]),
    )


def _with_media(db: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[Recording]:
    if not rows:
        return []
    ids = [row["id"] for row in rows]
    marks = ",".join("?" * len(ids))
    by_recording: dict[int, list[MediaFile]] = {i: [] for i in ids}
    query = f"SELECT {_MEDIA_COLUMNS} FROM media_files WHERE recording_id IN ({marks}) ORDER BY id"  # noqa: S608
    for media_row in db.execute(query, ids):
        by_recording[media_row["recording_id"]].append(_media(media_row))
    return [_recording(row, by_recording[row["id"]]) for row in rows]


class SqliteCatalog:
    """Catalog in an SQLite file, in WAL mode so that worker processes can share it."""

    decides_deletes = False  # the audit lock, checked in process, decides

    def __init__(self, path: Path, clock: Clock = system_clock) -> None:
        self._path = path
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog")
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path, *, clock: Clock = system_clock) -> SqliteCatalog:
        """Open (creating or migrating) the catalog; `clock` stamps every time it writes."""
        catalog = cls(path, clock)
        await catalog._run(catalog._connect)
        return catalog

    def _connect(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, timeout=30, isolation_level=None,
                             check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 30000")
        self._db = db
        self._migrate(db)

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _transaction(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        def run() -> _T:
            db = self._db
            assert db is not None, "catalog is closed"
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self._run(run)

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        def run() -> _T:
            db = self._db
            assert db is not None, "catalog is closed"
            db.execute("BEGIN")  # one snapshot for all statements of the call
            try:
                return fn(db)
            finally:
                db.execute("COMMIT")

        return await self._run(run)

    def _now(self) -> str:
        return timestamp(self._clock())

    def lookup_scope(self, scope: Scope) -> Scope:
        # The catalog is the authority: one cached entry per recording serves every
        # caller, and Scope.allows() decides who sees it.
        return UNSCOPED

    async def principal_for_key(self, key_hash: str) -> Principal | None:
        def query(db: sqlite3.Connection) -> Principal | None:
            row = db.execute(
                "SELECT user_id, tenant, role FROM api_keys"
                " WHERE key_hash = ? AND revoked_at IS NULL",
                (key_hash,),
            ).fetchone()
            return None if row is None else Principal(row[0], row[1], Role(row[2]))

        return await self._read(query)

    async def add_api_key(self, key_hash: str, prefix: str, principal: Principal) -> None:
        def insert(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT tenant FROM users WHERE id = ?", (principal.user_id,))\
                .fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO users (id, tenant, created_at) VALUES (?, ?, ?)",
                    (principal.user_id, principal.tenant, self._now()),
                )
            elif row[0] != principal.tenant:
                raise Conflict(f"user {principal.user_id} belongs to tenant {row[0]!r}")
            db.execute(
                "INSERT INTO api_keys (key_hash, prefix, user_id, tenant, role, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key_hash, prefix, principal.user_id, principal.tenant, str(principal.role),
                 self._now()),
            )

        await self._transaction(insert)

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        def query(db: sqlite3.Connection) -> list[ApiKeyInfo]:
            rows = db.execute(
                "SELECT prefix, user_id, tenant, role, created_at, revoked_at"
                " FROM api_keys ORDER BY created_at, prefix"
            ).fetchall()
            return [ApiKeyInfo(r[0], r[1], r[2], Role(r[3]), r[4], r[5]) for r in rows]

        return await self._read(query)

    async def revoke_api_key(self, prefix: str) -> bool:
        def update(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL",
                (self._now(), prefix),
            )
            return cursor.rowcount > 0

        return await self._transaction(update)

    async def create_recording(self, new: NewRecording) -> Recording:
        def insert(db: sqlite3.Connection) -> Recording:
            recording_id = new_id()
            while db.execute("SELECT 1 FROM recordings WHERE id = ?", (recording_id,))\
                    .fetchone():
                recording_id = new_id()
            db.execute(
                f"INSERT INTO recordings ({_RECORDING_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, NULL, 0)",
                (recording_id, new.tenant, new.user_id, new.meeting_id, new.platform,
                 new.native_meeting_id, new.session_uid, new.source,
                 str(RecordingStatus.IN_PROGRESS), new.storage_name, self._now()),
            )
            return self._get(db, recording_id, Scope(new.tenant, None))  # type: ignore[return-value]

        return await self._transaction(insert)

    @staticmethod
    def _get(db: sqlite3.Connection, recording_id: int, scope: Scope) -> Recording | None:
        row = db.execute(
            f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE id = :id AND {_SCOPE_SQL}",  # noqa: S608
            {"id": recording_id, **_scope_params(scope)},
        ).fetchone()
        return None if row is None else _with_media(db, [row])[0]

    async def get_recording(self, recording_id: int, scope: Scope) -> Recording | None:
        return await self._read(lambda db: self._get(db, recording_id, scope))

    async def list_recordings(
        self, scope: Scope, *, limit: int, offset: int, meeting_id: int | None
    ) -> list[Recording]:
        def query(db: sqlite3.Connection) -> list[Recording]:
            rows = db.execute(
                f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE {_SCOPE_SQL}"  # noqa: S608
                " AND (:meeting_id IS NULL OR meeting_id = :meeting_id)"
                " ORDER BY created_at DESC, id DESC LIMIT :limit OFFSET :offset",
                {**_scope_params(scope), "meeting_id": meeting_id, "limit": limit,
                 "offset": offset},
            ).fetchall()
            return _with_media(db, rows)

        return await self._read(query)

    async def meeting_recordings(
        self, scope: Scope, platform: str, native_meeting_id: str
    ) -> list[Recording]:
        def query(db: sqlite3.Connection) -> list[Recording]:
            rows = db.execute(
                f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE {_SCOPE_SQL}"  # noqa: S608
                " AND platform = :platform AND native_meeting_id = :native"
                " ORDER BY created_at DESC, id DESC",
                {**_scope_params(scope), "platform": platform, "native": native_meeting_id},
            ).fetchall()
            return _with_media(db, rows)

        return await self._read(query)

    async def add_media_file(self, new: NewMediaFile) -> MediaFile:
        def insert(db: sqlite3.Connection) -> MediaFile:
            media_id = new_id()
            created_at = self._now()
            try:
                db.execute(
                    f"INSERT INTO media_files ({_MEDIA_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (media_id, new.recording_id, new.type, new.format, new.storage_backend,
                     new.storage_name, new.storage_key, new.file_size_bytes,
                     new.duration_seconds, json.dumps(new.metadata), created_at),
                )
            except sqlite3.IntegrityError:
                raise Conflict(
                    "A media file of this format already exists for the recording, "
                    "or the recording was deleted"
                ) from None
            return MediaFile(media_id, new.recording_id, new.type, new.format,
                             new.storage_backend, new.storage_name, new.storage_key,
                             new.file_size_bytes, new.duration_seconds, new.metadata,
                             created_at)

        return await self._transaction(insert)

    async def finish_recording(
        self, recording_id: int, status: RecordingStatus, error_message: str | None
    ) -> Recording | None:
        def update(db: sqlite3.Connection) -> Recording | None:
            db.execute(
                "UPDATE recordings SET status = ?, error_message = ?, completed_at = ?"
                " WHERE id = ? AND status = ?",
                (str(status), error_message, self._now(), recording_id,
                 str(RecordingStatus.IN_PROGRESS)),
            )
            return self._get(db, recording_id, UNSCOPED)

        return await self._transaction(update)

    async def set_legal_hold(
        self, recording_id: int, scope: Scope, held: bool
    ) -> Recording | None:
        def update(db: sqlite3.Connection) -> Recording | None:
            db.execute(
                f"UPDATE recordings SET legal_hold = :held WHERE id = :id AND {_SCOPE_SQL}",  # noqa: S608
                {"held": int(held), "id": recording_id, **_scope_params(scope)},
            )
            return self._get(db, recording_id, scope)

        return await self._transaction(update)

    async def expired_recordings(
        self, expiry: Expiry, *, limit: int, after: tuple[str, int] | None = None
    ) -> list[Recording]:
        clauses: list[str] = []
        params: list[Any] = []
        for tenant, cutoff in expiry.tenants.items():
            if cutoff is not None:
                clauses.append("(tenant = ? AND created_at < ?)")
                params += [tenant, cutoff]
        if expiry.default is not None:
            others = ", ".join("?" * len(expiry.tenants))
            clauses.append(f"(tenant NOT IN ({others}) AND created_at < ?)")
            params += [*expiry.tenants, expiry.default]
        if not clauses:
            return []
        # Keyset pagination: a dry run deletes nothing, and a recording that failed
        # to go must not be fetched again within the same sweep.
        start, start_id = after or ("", -1)
        sql = (
            f"SELECT {_RECORDING_COLUMNS} FROM recordings"  # noqa: S608
            f" WHERE legal_hold = 0 AND ({' OR '.join(clauses)})"
            " AND (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?"
        )

        def query(db: sqlite3.Connection) -> list[Recording]:
            return _with_media(db, db.execute(sql, [*params, start, start_id, limit])
                               .fetchall())

        return await self._read(query)

    async def delete_recording(self, recording_id: int, scope: Scope) -> bool:
        return await self.delete_recording_media(recording_id, scope) is not None

    async def delete_recording_media(
        self, recording_id: int, scope: Scope
    ) -> tuple[MediaFile, ...] | None:
        def delete(db: sqlite3.Connection) -> tuple[MediaFile, ...] | None:
            # One write transaction (BEGIN IMMEDIATE): no media row can come in between.
            recording = self._get(db, recording_id, scope)
            if recording is None:
                return None
            db.execute("DELETE FROM recordings WHERE id = ?", (recording_id,))
            return recording.media_files

        return await self._transaction(delete)

    async def ping(self) -> None:
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(close)
        self._executor.shutdown(wait=True)
