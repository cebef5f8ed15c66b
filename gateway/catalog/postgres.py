"""The catalog on PostgreSQL, shared by stateless replicas (asyncpg, one pool per process).

Behaves as gateway/catalog/sqlite.py does, call for call. Where two replicas can
race, the database decides: completing is an UPDATE conditioned on the status; a
delete locks its recording row, reads the media rows and deletes (they cascade) in
one transaction; a media row can only be inserted while its recording exists (the
foreign key check waits for a delete in flight, then fails). Ids come from one
counter row, so no two processes ever make the same one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from gateway.catalog import pg_schema
from gateway.catalog.base import (
    ApiKeyInfo,
    CatalogUnavailable,
    Expiry,
    NewMediaFile,
    NewRecording,
)
from gateway.catalog.pg_schema import Connection
from gateway.errors import Conflict, GatewayError, ServiceUnavailable
from gateway.models import (
    ID_EPOCH_MS,
    ID_RANDOM_BITS,
    UNSCOPED,
    Clock,
    MediaFile,
    Principal,
    Recording,
    RecordingStatus,
    Role,
    Scope,
    system_clock,
    timestamp,
)

log = logging.getLogger(__name__)

_RECORDING_COLUMNS = (
    "id, tenant, user_id, meeting_id, platform, native_meeting_id, session_uid, source,"
    " status, error_message, storage_name, created_at, completed_at, legal_hold"
)
_MEDIA_FIELDS = ("id", "recording_id", "type", "format", "storage_backend", "storage_name",
                 "storage_key", "file_size_bytes", "duration_seconds", "metadata", "created_at")
_MEDIA_COLUMNS = ", ".join(_MEDIA_FIELDS)
_JOINED_MEDIA = ", ".join(f"m.{name} AS media_{name}" for name in _MEDIA_FIELDS)
# The time part is gateway.models.new_id's; the database's clock is the one clock
# all replicas share, and the counter keeps ids rising when it does not.
_NEXT_ID = (
    "UPDATE id_counter SET last_id = GREATEST(last_id + 1,"
    " (floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1::bigint) << $2::int)"
    " RETURNING last_id"
)
# The database did not answer (in time): the request may be retried, it is no bug.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # cancelled statement, shutdown
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    # What a connection whose server process was terminated can raise instead of a
    # connection error (asyncpg issue 1069); the connection is then dropped.
    asyncpg.InternalClientError,
)
# Opening may fail besides with a refusal (wrong password, no such database) or a URL
# the driver cannot read.
_CANNOT_OPEN: tuple[type[BaseException], ...] = (*_UNAVAILABLE, asyncpg.PostgresError, ValueError)


def describe_url(url: str) -> str:
    """`user@host:port/dbname` of a database URL: what errors may show of it."""
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError:
        return "(an unreadable GATEWAY_DATABASE_URL)"
    host = parts.hostname or "localhost"
    database = unquote(parts.path.lstrip("/")) or parts.username or "postgres"
    user = f"{unquote(parts.username)}@" if parts.username else ""
    return f"{user}{host}:{port}/{database}"


def scrub(text: str, url: str) -> str:
    """`text` without the URL's password, should a driver message ever repeat it."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in filter(None, (password, password and unquote(password))):
        text = text.replace(secret, "***")
    return text


def _scope_sql(first: int) -> str:
    """The scope condition on parameters $first (tenant) and $first+1 (user id)."""
    t, u = f"${first}", f"${first + 1}"
    return f"({t}::text = '' OR tenant = {t}) AND ({u}::bigint IS NULL OR user_id = {u})"


def _media(row: asyncpg.Record, prefix: str = "") -> MediaFile:
    values = {name: row[prefix + name] for name in _MEDIA_FIELDS}
    return MediaFile(**{**values, "metadata": json.loads(values["metadata"])})


def _recording(row: asyncpg.Record, media: Iterable[MediaFile]) -> Recording:
    return Recording(
        id=row["id"], tenant=row["tenant"], user_id=row["user_id"],
        meeting_id=row["meeting_id"], platform=row["platform"],
        native_meeting_id=row["native_meeting_id"], session_uid=row["session_uid"],
        source=row["source"], status=RecordingStatus(row["status"]),
        error_message=row["error_message"], storage_name=row["storage_name"],
        created_at=row["created_at"], completed_at=row["completed_at"],
        media_files=tuple(media), legal_hold=row["legal_hold"],
    )


async def _recordings(conn: Connection, query: str, order: str, *params: Any) -> list[Recording]:
    """The recordings `query` selects, with their media files, in one statement.

    One statement is one snapshot: no transaction (and none of its round trips) is
    needed for the recordings and their media files to agree. `order` repeats the
    query's ORDER BY on the alias `r`, which a join does not keep by itself.
    """
    rows = await conn.fetch(
        f"SELECT r.*, {_JOINED_MEDIA} FROM ({query}) AS r"  # noqa: S608
        f" LEFT JOIN media_files AS m ON m.recording_id = r.id ORDER BY {order}, m.id",
        *params)
    found: dict[int, tuple[asyncpg.Record, list[MediaFile]]] = {}
    for row in rows:
        _, media = found.setdefault(row["id"], (row, []))
        if row["media_id"] is not None:
            media.append(_media(row, "media_"))
    return [_recording(row, media) for row, media in found.values()]


def _count(status: str) -> int:
    """Rows an INSERT/UPDATE/DELETE touched, from its command tag ("DELETE 1")."""
    return int(status.rsplit(" ", 1)[-1])


async def connect(url: str, *, wait: float) -> asyncpg.Connection:
    """One connection, for schema commands; CatalogUnavailable when it cannot be had."""
    try:
        return await asyncpg.connect(url, timeout=wait, command_timeout=None)
    except _CANNOT_OPEN as exc:
        raise _unavailable(url, exc) from None


def _unavailable(url: str, exc: BaseException) -> CatalogUnavailable:
    if isinstance(exc, ValueError | asyncpg.exceptions.ClientConfigurationError):
        reason = "GATEWAY_DATABASE_URL is not a usable PostgreSQL URL"
    else:
        reason = scrub(str(exc) or type(exc).__name__, url)
    return CatalogUnavailable(f"cannot use the catalog database {describe_url(url)}: {reason}")


class PostgresCatalog:
    """Catalog in PostgreSQL; every call takes one pooled connection for its statements."""

    decides_deletes = False  # as SQLite: the audit lock, checked in process, decides

    def __init__(self, pool: asyncpg.Pool, url: str, timeout: float, clock: Clock) -> None:
        self._pool = pool
        self._url = url
        self._timeout = timeout
        self._clock = clock

    def __repr__(self) -> str:
        return f"PostgresCatalog({describe_url(self._url)})"

    @classmethod
    async def open(cls, url: str, *, pool_size: int, wait: float, migrate: bool = False,
                   clock: Clock = system_clock) -> PostgresCatalog:
        """Connect; bring the schema up to date when `migrate`, else insist it is.

        `wait`: seconds to connect, to get a pooled connection, or for one statement.

        Raises CatalogUnavailable (no password in it) when the database cannot be used.
        """
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=pool_size, timeout=wait,
                command_timeout=wait, server_settings={"application_name": "gateway"})
        except _CANNOT_OPEN as exc:
            raise _unavailable(url, exc) from None
        try:
            async with pool.acquire(timeout=wait) as conn:
                if migrate:
                    start, end = await pg_schema.upgrade(conn)
                    if start != end:
                        log.info("catalog schema upgraded from version %d to %d", start, end)
                else:
                    await pg_schema.check(conn)
        except pg_schema.SchemaMismatch as exc:
            await pool.close()
            raise CatalogUnavailable(f"{describe_url(url)}: {exc}") from None
        except _CANNOT_OPEN as exc:
            await pool.close()
            raise _unavailable(url, exc) from None
        return cls(pool, url, wait, clock)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                try:
                    yield conn
                except _UNAVAILABLE:
                    # Never lent out again: the pool opens a new one. A connection that
                    # is closed already has been taken from us (InterfaceError).
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()
                    raise
        except GatewayError:
            raise
        except _UNAVAILABLE as exc:
            log.warning("the catalog database %s did not answer: %s", describe_url(self._url),
                        scrub(str(exc) or type(exc).__name__, self._url))
            raise ServiceUnavailable("The catalog database is unavailable; retry") from None

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Connection]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    def _now(self) -> str:
        return timestamp(self._clock())

    async def _next_id(self, conn: Connection) -> int:
        # Its own statement, outside the caller's transaction: the counter row is
        # locked for this statement only, not until the caller commits.
        value: int = await conn.fetchval(_NEXT_ID, ID_EPOCH_MS, ID_RANDOM_BITS)
        return value

    def lookup_scope(self, scope: Scope) -> Scope:
        return UNSCOPED  # as SQLite: one cached entry per recording; Scope.allows decides

    async def principal_for_key(self, key_hash: str) -> Principal | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT user_id, tenant, role FROM api_keys"
                " WHERE key_hash = $1 AND revoked_at IS NULL", key_hash)
        return None if row is None else Principal(row[0], row[1], Role(row[2]))

    async def add_api_key(self, key_hash: str, prefix: str, principal: Principal) -> None:
        async with self._write() as conn:
            # Two replicas adding a first key for one user both get here: one inserts,
            # and both then read the same tenant.
            await conn.execute(
                "INSERT INTO users (id, tenant, created_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (id) DO NOTHING",
                principal.user_id, principal.tenant, self._now())
            tenant = await conn.fetchval("SELECT tenant FROM users WHERE id = $1 FOR SHARE",
                                         principal.user_id)
            if tenant != principal.tenant:
                raise Conflict(f"user {principal.user_id} belongs to tenant {tenant!r}")
            await conn.execute(
                "INSERT INTO api_keys (key_hash, prefix, user_id, tenant, role, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                key_hash, prefix, principal.user_id, principal.tenant, str(principal.role),
                self._now())

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT prefix, user_id, tenant, role, created_at, revoked_at"
                " FROM api_keys ORDER BY created_at, prefix")
        return [ApiKeyInfo(r[0], r[1], r[2], Role(r[3]), r[4], r[5]) for r in rows]

    async def revoke_api_key(self, prefix: str) -> bool:
        async with self._connection() as conn:
            status = await conn.execute(
                "UPDATE api_keys SET revoked_at = $1 WHERE prefix = $2 AND revoked_at IS NULL",
                self._now(), prefix)
        return _count(status) > 0

    async def create_recording(self, new: NewRecording) -> Recording:
        async with self._connection() as conn:
            recording_id = await self._next_id(conn)
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO recordings ({_RECORDING_COLUMNS})"  # noqa: S608
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11, NULL, FALSE)",
                    recording_id, new.tenant, new.user_id, new.meeting_id, new.platform,
                    new.native_meeting_id, new.session_uid, new.source,
                    str(RecordingStatus.IN_PROGRESS), new.storage_name, self._now())
                recording = await self._get(conn, recording_id, Scope(new.tenant, None))
        assert recording is not None
        return recording

    @staticmethod
    async def _get(conn: Connection, recording_id: int,
                   scope: Scope) -> Recording | None:
        found = await _recordings(
            conn, f"SELECT {_RECORDING_COLUMNS} FROM recordings"  # noqa: S608
            f" WHERE id = $1 AND {_scope_sql(2)}", "r.id",
            recording_id, scope.tenant, scope.user_id)
        return found[0] if found else None

    async def get_recording(self, recording_id: int, scope: Scope) -> Recording | None:
        async with self._connection() as conn:
            return await self._get(conn, recording_id, scope)

    async def list_recordings(
        self, scope: Scope, *, limit: int, offset: int, meeting_id: int | None
    ) -> list[Recording]:
        async with self._connection() as conn:
            return await _recordings(
                conn, f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE {_scope_sql(1)}"  # noqa: S608
                " AND ($3::bigint IS NULL OR meeting_id = $3)"
                " ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5",
                "r.created_at DESC, r.id DESC",
                scope.tenant, scope.user_id, meeting_id, limit, offset)

    async def meeting_recordings(
        self, scope: Scope, platform: str, native_meeting_id: str
    ) -> list[Recording]:
        async with self._connection() as conn:
            return await _recordings(
                conn, f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE {_scope_sql(1)}"  # noqa: S608
                " AND platform = $3 AND native_meeting_id = $4",
                "r.created_at DESC, r.id DESC",
                scope.tenant, scope.user_id, platform, native_meeting_id)

    async def add_media_file(self, new: NewMediaFile) -> MediaFile:
        created_at = self._now()
        async with self._connection() as conn:
            media_id = await self._next_id(conn)
            try:
                await conn.execute(
                    f"INSERT INTO media_files ({_MEDIA_COLUMNS})"  # noqa: S608
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    media_id, new.recording_id, new.type, new.format, new.storage_backend,
                    new.storage_name, new.storage_key, new.file_size_bytes,
                    new.duration_seconds, json.dumps(new.metadata), created_at)
            except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError):
                raise Conflict(
                    "A media file of this format already exists for the recording, "
                    "or the recording was deleted"
                ) from None
        return MediaFile(media_id, new.recording_id, new.type, new.format,
                         new.storage_backend, new.storage_name, new.storage_key,
                         new.file_size_bytes, new.duration_seconds, new.metadata, created_at)

    async def finish_recording(
        self, recording_id: int, status: RecordingStatus, error_message: str | None
    ) -> Recording | None:
        async with self._write() as conn:
            await conn.execute(
                "UPDATE recordings SET status = $1, error_message = $2, completed_at = $3"
                " WHERE id = $4 AND status = $5",
                str(status), error_message, self._now(), recording_id,
                str(RecordingStatus.IN_PROGRESS))
            return await self._get(conn, recording_id, UNSCOPED)

    async def set_legal_hold(
        self, recording_id: int, scope: Scope, held: bool
    ) -> Recording | None:
        async with self._write() as conn:
            await conn.execute(
                f"UPDATE recordings SET legal_hold = $1 WHERE id = $2 AND {_scope_sql(3)}",  # noqa: S608
                held, recording_id, scope.tenant, scope.user_id)
            return await self._get(conn, recording_id, scope)

    async def expired_recordings(
        self, expiry: Expiry, *, limit: int, after: tuple[str, int] | None = None
    ) -> list[Recording]:
        clauses: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        for tenant, cutoff in expiry.tenants.items():
            if cutoff is not None:
                clauses.append(f"(tenant = {param(tenant)} AND created_at < {param(cutoff)})")
        if expiry.default is not None:
            others = param(list(expiry.tenants))
            clauses.append(f"(tenant <> ALL({others}::text[])"
                           f" AND created_at < {param(expiry.default)})")
        if not clauses:
            return []
        # Keyset pagination, as on SQLite: a recording that failed to go is not
        # fetched again within the same sweep.
        start, start_id = after or ("", -1)
        sql = (
            f"SELECT {_RECORDING_COLUMNS} FROM recordings"  # noqa: S608
            f" WHERE NOT legal_hold AND ({' OR '.join(clauses)})"
            f" AND (created_at, id) > ({param(start)}::text COLLATE \"C\", {param(start_id)})"
            f" ORDER BY created_at, id LIMIT {param(limit)}"
        )
        async with self._connection() as conn:
            return await _recordings(conn, sql, "r.created_at, r.id", *params)

    async def delete_recording(self, recording_id: int, scope: Scope) -> bool:
        return await self.delete_recording_media(recording_id, scope) is not None

    async def delete_recording_media(
        self, recording_id: int, scope: Scope
    ) -> tuple[MediaFile, ...] | None:
        async with self._write() as conn:
            # FOR UPDATE conflicts with the key-share lock that inserting a media row
            # takes on its recording: an insert in flight commits first (and is read
            # below), a later one waits and then fails on the foreign key.
            found = await conn.fetchval(
                f"SELECT id FROM recordings WHERE id = $1 AND {_scope_sql(2)}"  # noqa: S608
                " FOR UPDATE", recording_id, scope.tenant, scope.user_id)
            if found is None:
                return None
            rows = await conn.fetch(f"SELECT {_MEDIA_COLUMNS} FROM media_files"  # noqa: S608
                                    " WHERE recording_id = $1 ORDER BY id", recording_id)
            await conn.execute("DELETE FROM recordings WHERE id = $1", recording_id)
        return tuple(_media(row) for row in rows)

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    async def close(self) -> None:
        await self._pool.close()
