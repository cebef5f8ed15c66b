-- The catalog as the SQLite one holds it after its own migrations, for PostgreSQL.
-- Times are text in the API's own form (ISO 8601, seconds, 'Z'), compared bytewise
-- (COLLATE "C"), so that cutoffs and keyset pages behave as on SQLite.

CREATE TABLE users (
    id BIGINT PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE api_keys (
    key_hash TEXT COLLATE "C" PRIMARY KEY,
    prefix TEXT COLLATE "C" NOT NULL UNIQUE,
    user_id BIGINT NOT NULL REFERENCES users (id),
    tenant TEXT COLLATE "C" NOT NULL,
    role TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    revoked_at TEXT COLLATE "C"
);

CREATE TABLE recordings (
    id BIGINT PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    user_id BIGINT NOT NULL,
    meeting_id BIGINT,
    platform TEXT COLLATE "C",
    native_meeting_id TEXT COLLATE "C",
    session_uid TEXT COLLATE "C" NOT NULL,
    source TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    error_message TEXT,
    storage_name TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    completed_at TEXT COLLATE "C",
    legal_hold BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX recordings_by_owner ON recordings (tenant, user_id, created_at, id);
CREATE INDEX recordings_by_tenant ON recordings (tenant, created_at, id);
CREATE INDEX recordings_by_meeting ON recordings (tenant, platform, native_meeting_id);
CREATE INDEX recordings_by_age ON recordings (created_at, id);

-- A media row cannot outlive its recording: the foreign key makes an insert wait for
-- a concurrent delete of the recording (and then fail), and the delete takes its
-- media rows with it in the same statement.
CREATE TABLE media_files (
    id BIGINT PRIMARY KEY,
    recording_id BIGINT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    type TEXT COLLATE "C" NOT NULL,
    format TEXT COLLATE "C" NOT NULL,
    storage_backend TEXT COLLATE "C" NOT NULL,
    storage_name TEXT COLLATE "C" NOT NULL,
    storage_key TEXT COLLATE "C" NOT NULL,
    file_size_bytes BIGINT NOT NULL,
    duration_seconds DOUBLE PRECISION,
    metadata TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    UNIQUE (recording_id, format)
);

-- Ids for every replica from one row: milliseconds since 2024 in the high bits, as
-- gateway.models.new_id makes them, but never below the last one given, so ids from
-- several processes neither collide nor go back in time. At most 2**53 - 1, which
-- browsers read exactly.
CREATE TABLE id_counter (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    last_id BIGINT NOT NULL CHECK (last_id BETWEEN 0 AND 9007199254740991)
);
INSERT INTO id_counter (singleton, last_id) VALUES (TRUE, 0);
