"""Environment → one frozen Settings object.

Variable names follow Vexa's recording-storage documentation (``STORAGE_BACKEND``,
``LOCAL_STORAGE_DIR``, ``LOCAL_STORAGE_FSYNC``); everything the gateway adds is
prefixed ``GATEWAY_``. Nothing else in the package reads ``os.environ``.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from gateway.models import DeletePolicy
from gateway.storage.config import (
    MAX_RETENTION_DAYS,
    STORAGE_TYPES,
    ConfigError,
    FileConfig,
    StorageConfig,
    TenantConfig,
    check_bucket,
    check_endpoint,
    check_gcs_credentials,
    endpoint_url,
    parse_config,
)

SIGNING_KEY_FILE = "signing.key"
_SIZE_SUFFIXES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("text", "json")
_STORAGE_BACKENDS = STORAGE_TYPES
_CATALOGS = ("sqlite", "upstream", "postgres")
_N = TypeVar("_N", int, float)


class SettingsError(Exception):
    """A setting is missing or wrong; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _number_parser(
    convert: Callable[[str], _N], low: _N, high: _N, kind: str
) -> Callable[[str], _N]:
    def parse(raw: str) -> _N:
        problem = f"must be {kind} from {low:g} to {high:g}, got {raw!r}"
        try:
            value = convert(raw.strip())
        except ValueError:
            raise ValueError(problem) from None
        if not low <= value <= high:
            raise ValueError(problem)
        return value

    return parse


def _int_parser(low: int, high: int) -> Callable[[str], int]:
    return _number_parser(int, low, high, "an integer")


def _float_parser(low: float, high: float) -> Callable[[str], float]:
    return _number_parser(float, low, high, "a number")


def _parse_size(raw: str) -> int:
    text = raw.strip().upper().removesuffix("B").removesuffix("I")
    suffix = text[-1:] if text[-1:] in _SIZE_SUFFIXES else ""
    number = text[: len(text) - len(suffix)].strip()
    if not (number.isascii() and number.isdigit()) or int(number) == 0:
        raise ValueError(f"must be a positive size such as 2147483648 or 2G, got {raw!r}")
    return int(number) * _SIZE_SUFFIXES[suffix]


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _text(raw: str) -> str:
    return raw.strip()


def _parse_upstream_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1]) == 0:
        raise ValueError(f"must be an http(s) URL, got {raw!r}")
    return value


def _parse_origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"each origin must be * or scheme://host[:port], got {origin!r}")
    return origins


def _parse_database_url(raw: str) -> str:
    # The URL holds a password: no message here ever repeats it.
    value = raw.strip()
    problem = "must be a postgresql://user:password@host:port/dbname URL"
    scheme, sep, rest = value.partition("://")
    if scheme not in ("postgres", "postgresql") or not sep or not rest:
        raise ValueError(problem)
    try:
        urlsplit(value).port  # noqa: B018  raises for a port that is no number
    except ValueError:
        raise ValueError(problem) from None
    return value


def _parse_path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("must not be empty")
    return Path(raw.strip()).expanduser().absolute()


def _parse_host(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"must be a host name or address, got {raw!r}")
    return value


def _parse_signing_keys(raw: str) -> tuple[bytes, ...]:
    keys = tuple(part.strip().encode() for part in raw.split(",") if part.strip())
    if not keys:
        raise ValueError("must hold at least one key")
    if any(len(key) < 32 for key in keys):
        raise ValueError("each comma-separated key must be at least 32 characters long")
    return keys


def _parse_jwt_secrets(raw: str) -> tuple[bytes, ...]:
    secrets_ = tuple(part.strip().encode() for part in raw.split(",") if part.strip())
    if any(len(secret) < 32 for secret in secrets_):
        raise ValueError("each comma-separated secret must be at least 32 characters long "
                         "(256 bits for HS256)")
    return secrets_


def _parse_pem(raw: str) -> str:
    """PEM text, or the path of a file holding it; checked to hold public keys only."""
    text = raw.strip().replace("\\n", "\n")
    if not text.startswith("-----BEGIN"):
        try:
            text = Path(text).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"is neither PEM text nor a readable PEM file ({exc})") from None
    from gateway.tokens import load_public_keys  # cryptography only when tokens are used

    load_public_keys(text)
    return text


def _parse_algorithms(raw: str) -> tuple[str, ...]:
    from gateway.tokens import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS

    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    for name in names:
        if name.lower() == "none":
            raise ValueError("'none' is never accepted: unsigned tokens prove nothing")
        if name not in HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS:
            raise ValueError(f"unknown algorithm {name!r} (one of "
                             f"{', '.join(HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS)})")
    return names


def _parse_metrics_tokens(raw: str) -> tuple[bytes, ...]:
    tokens = tuple(part.strip().encode() for part in raw.split(",") if part.strip())
    if any(len(token) < 16 or not token.isascii() or b" " in token for token in tokens):
        raise ValueError("each comma-separated token must be at least 16 ASCII characters "
                         "without spaces")
    return tokens


def _parse_claim(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 64 or any(c.isspace() for c in value):
        raise ValueError(f"must be a claim name, got {raw!r}")
    return value


def _parse_public_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if value and not (value.startswith(("http://", "https://", "/"))):
        raise ValueError(f"must be an absolute URL or a path starting with '/', got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable: its name, the Settings field it fills, and its doc."""

    name: str
    field: str
    parse: Callable[[str], Any]
    default: str
    doc: str


# The single list of variables the gateway reads; docs are generated from it.
VARIABLES: tuple[Variable, ...] = (
    Variable("GATEWAY_HOST", "host", _parse_host, "127.0.0.1",
             "Address to listen on (use 0.0.0.0 in a container)."),
    Variable("GATEWAY_PORT", "port", _int_parser(0, 65535), "8080", "TCP port to listen on."),
    Variable("GATEWAY_WORKERS", "workers", _int_parser(1, 64), "1",
             "Worker processes sharing the port with SO_REUSEPORT."),
    Variable("GATEWAY_SHUTDOWN_GRACE", "shutdown_grace", _float_parser(0, 3600), "25",
             "Seconds requests in flight (streams, uploads) may take to finish after SIGTERM "
             "or SIGINT; meanwhile new connections are refused and /readyz answers 503. "
             "Keep it below the orchestrator's kill timeout (Kubernetes: 30 s by default)."),
    Variable("GATEWAY_DATA_DIR", "data_dir", _parse_path, "./data",
             "Directory for the catalog, the signing key and (by default) local recordings."),
    Variable("GATEWAY_CATALOG", "catalog", _choice(*_CATALOGS), "sqlite",
             "sqlite: standalone, the embedded catalog; upstream: sidecar in front of the "
             "meeting API at GATEWAY_UPSTREAM_URL; postgres: standalone on PostgreSQL at "
             "GATEWAY_DATABASE_URL, shared by several replicas (docs/deployment.md)."),
    Variable("GATEWAY_UPSTREAM_URL", "upstream_url", _parse_upstream_url, "",
             "Sidecar mode: base URL of the meeting API (e.g. http://meeting-api:8080)."),
    Variable("GATEWAY_UPSTREAM_TIMEOUT", "upstream_timeout", _float_parser(0.1, 3600), "30",
             "Sidecar mode: seconds to connect to, or wait for data from, the meeting API."),
    Variable("GATEWAY_UPSTREAM_CONNECTIONS", "upstream_connections", _int_parser(1, 10000),
             "100", "Sidecar mode: most connections open to the meeting API."),
    Variable("GATEWAY_CORS_ORIGINS", "cors_origins", _parse_origins, "",
             "Browser origins allowed to call the gateway, comma-separated, or * (off: "
             "empty)."),
    Variable("GATEWAY_CATALOG_PATH", "catalog_path", _parse_path, "",
             "SQLite catalog file (default: <data dir>/catalog.sqlite3)."),
    Variable("GATEWAY_DATABASE_URL", "database_url", _parse_database_url, "",
             "postgres: postgresql://user:password@host:port/dbname of the catalog (a secret: "
             "never logged; errors name only host, port, database and user)."),
    Variable("GATEWAY_DATABASE_POOL_SIZE", "database_pool_size", _int_parser(1, 1000), "10",
             "postgres: most connections each worker process keeps open to the database; "
             "replicas x workers x this must stay below the server's max_connections."),
    Variable("GATEWAY_DATABASE_TIMEOUT", "database_timeout", _float_parser(0.1, 600), "10",
             "postgres: seconds to connect, to wait for a free pooled connection, or for "
             "one statement; then the request gets 503."),
    Variable("GATEWAY_DATABASE_MIGRATE", "database_migrate", _parse_bool, "false",
             "postgres: bring the schema up to date as the gateway starts (as `gateway db "
             "upgrade` does); otherwise it refuses to start on an older schema."),
    Variable("GATEWAY_CONFIG", "config_path", _parse_path, "",
             "Optional TOML file with named storages and tenants (see config/gateway.toml)."),
    Variable("STORAGE_BACKEND", "storage_backend", _choice(*_STORAGE_BACKENDS), "local",
             "The `default` storage: local, minio, s3 or gcs."),
    Variable("LOCAL_STORAGE_DIR", "local_storage_dir", _parse_path, "",
             "Root directory of the local backend (default: <data dir>/recordings)."),
    Variable("LOCAL_STORAGE_FSYNC", "local_storage_fsync", _parse_bool, "true",
             "fsync each uploaded file and its directory before it becomes visible."),
    Variable("MINIO_ENDPOINT", "minio_endpoint", _text, "",
             "minio: host:port (or URL) of the MinIO server."),
    Variable("MINIO_ACCESS_KEY", "minio_access_key", _text, "", "minio: access key."),
    Variable("MINIO_SECRET_KEY", "minio_secret_key", _text, "", "minio: secret key."),
    Variable("MINIO_BUCKET", "minio_bucket", _text, "", "minio: bucket."),
    Variable("MINIO_SECURE", "minio_secure", _parse_bool, "true",
             "minio: use https for MINIO_ENDPOINT without a scheme."),
    Variable("MINIO_PUBLIC_ENDPOINT", "minio_public_endpoint", _text, "",
             "minio: host:port (or URL) that presigned URLs carry, reachable by browsers."),
    Variable("AWS_REGION", "aws_region", _text, "us-east-1", "s3: region."),
    Variable("AWS_ACCESS_KEY_ID", "aws_access_key_id", _text, "",
             "s3: access key (unset: the standard AWS credential chain)."),
    Variable("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", _text, "", "s3: secret key."),
    Variable("S3_BUCKET", "s3_bucket", _text, "", "s3: bucket."),
    Variable("S3_ENDPOINT", "s3_endpoint", _text, "",
             "s3: endpoint of a non-AWS provider (unset for AWS)."),
    Variable("S3_SECURE", "s3_secure", _parse_bool, "true",
             "s3: use https for S3_ENDPOINT without a scheme."),
    Variable("S3_PUBLIC_ENDPOINT", "s3_public_endpoint", _text, "",
             "s3: endpoint that presigned URLs carry, when browsers reach the store elsewhere."),
    Variable("GCS_BUCKET", "gcs_bucket", _text, "", "gcs: Google Cloud Storage bucket."),
    Variable("GCS_CREDENTIALS", "gcs_credentials", _text, "",
             "gcs: the service account's JSON key, as its text or its file's path (required "
             "unless GCS_ENDPOINT names an emulator)."),
    Variable("GCS_ENDPOINT", "gcs_endpoint", _text, "",
             "gcs: JSON API endpoint of an emulator or a private endpoint (unset: Google)."),
    Variable("GCS_PUBLIC_ENDPOINT", "gcs_public_endpoint", _text, "",
             "gcs: endpoint that signed URLs carry (unset: GCS_ENDPOINT, else Google)."),
    Variable("GATEWAY_S3_PART_SIZE", "s3_part_size", _parse_size, "8M",
             "Part size of multipart uploads to object storage (at least 5M); "
             "memory per upload is about one part."),
    Variable("GATEWAY_S3_MAX_CONNECTIONS", "s3_max_connections", _int_parser(1, 10000), "256",
             "Connections to each object store; every playing stream holds one."),
    Variable("GATEWAY_STORAGE_TIMEOUT", "storage_timeout", _float_parser(0.1, 600), "10",
             "Seconds to connect to, or wait for data from, object storage."),
    Variable("GATEWAY_PRESIGN_EXPIRY", "presign_expiry", _int_parser(1, 604800), "3600",
             "Lifetime in seconds of download and signed raw URLs."),
    Variable("GATEWAY_SIGNING_KEY", "signing_keys", _parse_signing_keys, "",
             "HMAC key(s) for signed URLs, comma-separated: the first signs, all verify. "
             "Default: generated once into <data dir>/signing.key (mode 0600); required with "
             "GATEWAY_CATALOG=postgres, where every replica must verify every link."),
    Variable("GATEWAY_PUBLIC_URL", "public_url", _parse_public_url, "",
             "Prefix put before signed raw paths in download_url (e.g. https://api.example.com "
             "or /api when a proxy mounts the gateway there), and the server URL that "
             "/openapi.json states. Default: bare paths, and `/`."),
    Variable("GATEWAY_MAX_UPLOAD_BYTES", "max_upload_bytes", _parse_size, "8G",
             "Largest accepted media upload; larger ones get 413 and nothing is kept."),
    Variable("GATEWAY_STALE_UPLOAD_AGE", "stale_upload_age", _float_parser(0, 31536000),
             "86400", "Standalone, object storage: each worker, as it starts, aborts unfinished "
             "multipart uploads of recording keys started more than this many seconds ago "
             "(left by a killed process; 0: all of them, when no other process uploads to "
             "the bucket). Local temporary files need no age: they go once no process "
             "holds them."),
    Variable("GATEWAY_MAX_RANGES", "max_ranges", _int_parser(1, 1000), "16",
             "Most byte ranges served as multipart/byteranges; more are ignored (200)."),
    Variable("GATEWAY_KEEPALIVE_TIMEOUT", "keepalive_timeout", _float_parser(0.1, 86400), "75",
             "Seconds an idle keep-alive connection stays open between requests; keep it "
             "above the idle timeout of a proxy in front (60 s on nginx and AWS ALB)."),
    Variable("GATEWAY_HEADER_TIMEOUT", "header_timeout", _float_parser(0.1, 3600), "15",
             "Seconds a client has to send a request line and headers, from its connection "
             "or its first byte; then 408 and the connection closes (slowloris). Bodies "
             "and responses are not timed."),
    Variable("GATEWAY_SEND_TIMEOUT", "send_timeout", _float_parser(0.1, 86400), "60",
             "Seconds a client may acknowledge none of the bytes waiting for it before its "
             "connection is reset, releasing the stream's file or storage connection (a "
             "paused player asks for its range again). Read from the kernel's TCP counters "
             "(Linux), checked every that many seconds. Slow readers that progress are kept."),
    Variable("GATEWAY_CACHE_TTL", "cache_ttl", _float_parser(0, 3600), "5",
             "Seconds an API key or recording lookup is reused from memory (0: never)."),
    Variable("GATEWAY_JWT_SECRET", "jwt_secrets", _parse_jwt_secrets, "",
             "Standalone: HMAC secret(s) for `Authorization: Bearer` tokens (HS256/384/512), "
             "comma-separated, each at least 32 characters; every one verifies (rotation)."),
    Variable("GATEWAY_JWT_PUBLIC_KEY", "jwt_public_key_pem", _parse_pem, "",
             "Standalone: PEM public key(s) (RSA, EC or Ed25519) for Bearer tokens, as text "
             "or the path of a PEM file; several PEM blocks all verify (rotation)."),
    Variable("GATEWAY_JWT_JWKS_URL", "jwt_jwks_url", _parse_upstream_url, "",
             "Standalone: JWKS URL of the identity provider, fetched with aiohttp, cached, "
             "refetched for an unknown `kid`."),
    Variable("GATEWAY_JWT_ALGORITHMS", "jwt_algorithms", _parse_algorithms, "",
             "Accepted token algorithms, comma-separated (never `none`). Default: HS256 with "
             "a secret; RS256 and ES256 with a public key or JWKS."),
    Variable("GATEWAY_JWT_AUDIENCE", "jwt_audience", _text, "",
             "Required `aud` of tokens (unset: tokens carrying an `aud` are refused)."),
    Variable("GATEWAY_JWT_ISSUER", "jwt_issuer", _text, "", "Required `iss` of tokens."),
    Variable("GATEWAY_JWT_LEEWAY", "jwt_leeway", _float_parser(0, 600), "30",
             "Seconds of clock skew allowed on `exp`, `nbf` and `iat` (`exp` is required)."),
    Variable("GATEWAY_JWT_USER_CLAIM", "jwt_user_claim", _parse_claim, "sub",
             "Claim holding the numeric user id."),
    Variable("GATEWAY_JWT_TENANT_CLAIM", "jwt_tenant_claim", _parse_claim, "tenant",
             "Claim holding the tenant, or a list of tenants of which X-Tenant picks one."),
    Variable("GATEWAY_JWT_REQUIRE_TENANT", "jwt_require_tenant", _parse_bool, "false",
             "Refuse tokens without the tenant claim (otherwise they belong to `default`)."),
    Variable("GATEWAY_JWT_ROLE_CLAIM", "jwt_role_claim", _parse_claim, "role",
             "Claim holding the role (viewer, recorder, admin; a list: the highest counts). "
             "A token without it is a viewer."),
    Variable("GATEWAY_JWT_JWKS_REFRESH", "jwt_jwks_refresh", _float_parser(1, 86400), "60",
             "Least seconds between two JWKS fetches caused by unknown `kid`s."),
    Variable("GATEWAY_JWT_JWKS_MAX_AGE", "jwt_jwks_max_age", _float_parser(1, 604800),
             "3600", "Seconds a fetched JWKS is used before it is fetched again."),
    Variable("GATEWAY_AUTH_FAILURE_BURST", "auth_failure_burst", _int_parser(0, 100000), "20",
             "Failed authentications (401) one client address may have in a row before it "
             "gets 429 (0: no limit). Behind a proxy every client shares its address."),
    Variable("GATEWAY_AUTH_FAILURE_RATE", "auth_failure_rate", _float_parser(0.001, 10000),
             "0.5", "Failed authentications per second given back to an address."),
    Variable("GATEWAY_RETENTION_DAYS", "retention_days", _float_parser(0, MAX_RETENTION_DAYS),
             "0", "Standalone: recordings older than this many days (fractions allowed, "
             "counted from `created_at`) are deleted, storage first; 0 keeps them forever. "
             "A tenant's `retention_days` in GATEWAY_CONFIG overrides it. See "
             "docs/retention.md."),
    Variable("GATEWAY_RETENTION_INTERVAL", "retention_interval", _float_parser(1, 604800),
             "3600", "Standalone: seconds between two retention sweeps (each worker sweeps; "
             "deletes are idempotent)."),
    Variable("GATEWAY_RETENTION_BATCH", "retention_batch", _int_parser(1, 10000), "100",
             "Recordings fetched from the catalog and deleted per retention batch."),
    Variable("GATEWAY_METRICS_TOKEN", "metrics_tokens", _parse_metrics_tokens, "",
             "Bearer token(s) that GET /metrics requires, comma-separated, each at least 16 "
             "characters; every one is accepted (rotation). Unset: /metrics is open to anyone "
             "who reaches the listening address. See docs/observability.md."),
    Variable("GATEWAY_LOG_FORMAT", "log_format", _choice(*_LOG_FORMATS), "text",
             "text: one readable line per record; json: one JSON object per line (access "
             "lines with method, route, status, bytes, duration, request id...)."),
    Variable("GATEWAY_LOG_LEVEL", "log_level", _choice(*_LOG_LEVELS), "info", "Log level."),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the gateway, validated once at startup."""

    data_dir: Path
    signing_keys: tuple[bytes, ...] = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    shutdown_grace: float = 25.0
    catalog: str = "sqlite"
    upstream_url: str = ""
    upstream_timeout: float = 30.0
    upstream_connections: int = 100
    cors_origins: tuple[str, ...] = ()
    catalog_path: Path = field(default=Path())
    database_url: str = field(default="", repr=False)
    database_pool_size: int = 10
    database_timeout: float = 10.0
    database_migrate: bool = False
    storage_backend: str = "local"
    local_storage_dir: Path = field(default=Path())
    local_storage_fsync: bool = True
    minio_endpoint: str = ""
    minio_access_key: str = field(default="", repr=False)
    minio_secret_key: str = field(default="", repr=False)
    minio_bucket: str = ""
    minio_secure: bool = True
    minio_public_endpoint: str = ""
    aws_region: str = "us-east-1"
    aws_access_key_id: str = field(default="", repr=False)
    aws_secret_access_key: str = field(default="", repr=False)
    s3_bucket: str = ""
    s3_endpoint: str = ""
    s3_secure: bool = True
    s3_public_endpoint: str = ""
    gcs_bucket: str = ""
    gcs_credentials: str = field(default="", repr=False)
    gcs_endpoint: str = ""
    gcs_public_endpoint: str = ""
    s3_part_size: int = 8 * 1024**2
    s3_max_connections: int = 256
    storage_timeout: float = 10.0
    config_path: Path | None = None
    extra_storages: tuple[StorageConfig, ...] = ()
    tenants: tuple[TenantConfig, ...] = ()
    default_storage: str = "default"
    presign_expiry: int = 3600
    public_url: str = ""
    max_upload_bytes: int = 8 * 1024**3
    stale_upload_age: float = 86400.0
    max_ranges: int = 16
    keepalive_timeout: float = 75.0
    header_timeout: float = 15.0
    send_timeout: float = 60.0
    cache_ttl: float = 5.0
    jwt_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    jwt_public_key_pem: str = ""
    jwt_jwks_url: str = ""
    jwt_algorithms: tuple[str, ...] = ()
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_leeway: float = 30.0
    jwt_user_claim: str = "sub"
    jwt_tenant_claim: str = "tenant"
    jwt_require_tenant: bool = False
    jwt_role_claim: str = "role"
    jwt_jwks_refresh: float = 60.0
    jwt_jwks_max_age: float = 3600.0
    auth_failure_burst: int = 20
    auth_failure_rate: float = 0.5
    retention_days: float = 0.0
    retention_interval: float = 3600.0
    retention_batch: int = 100
    metrics_tokens: tuple[bytes, ...] = field(default=(), repr=False)
    log_format: str = "text"
    log_level: str = "info"

    def __post_init__(self) -> None:
        # Paths left empty derive from the data dir, so tests can pass just a data dir.
        if self.catalog_path == Path():
            object.__setattr__(self, "catalog_path", self.data_dir / "catalog.sqlite3")
        if self.local_storage_dir == Path():
            object.__setattr__(self, "local_storage_dir", self.data_dir / "recordings")

    @property
    def bearer_tokens(self) -> bool:
        """Whether `Authorization: Bearer` tokens are verified (standalone mode)."""
        return bool(self.jwt_secrets or self.jwt_public_key_pem or self.jwt_jwks_url)

    def token_algorithms(self) -> tuple[str, ...]:
        """The pinned algorithms: as set, or the usual ones for the keys configured."""
        if self.jwt_algorithms:
            return self.jwt_algorithms
        asymmetric = ("RS256", "ES256") if self.jwt_public_key_pem or self.jwt_jwks_url else ()
        return ("HS256",) * bool(self.jwt_secrets) + asymmetric

    @property
    def sidecar(self) -> bool:
        """In front of an upstream meeting API, rather than standalone."""
        return self.catalog == "upstream"

    def env_storage(self) -> StorageConfig:
        """The storage called `default`, as the environment describes it."""
        if self.storage_backend == "minio":
            secure = self.minio_secure
            return StorageConfig(
                "default", "minio", bucket=self.minio_bucket,
                endpoint=endpoint_url(self.minio_endpoint, secure=secure),
                public_endpoint=endpoint_url(self.minio_public_endpoint, secure=secure),
                access_key=self.minio_access_key, secret_key=self.minio_secret_key,
            )
        if self.storage_backend == "s3":
            secure = self.s3_secure
            return StorageConfig(
                "default", "s3", bucket=self.s3_bucket, region=self.aws_region,
                endpoint=endpoint_url(self.s3_endpoint, secure=secure),
                public_endpoint=endpoint_url(self.s3_public_endpoint, secure=secure),
                access_key=self.aws_access_key_id, secret_key=self.aws_secret_access_key,
            )
        if self.storage_backend == "gcs":
            return StorageConfig(
                "default", "gcs", bucket=self.gcs_bucket,
                endpoint=endpoint_url(self.gcs_endpoint, secure=True),
                public_endpoint=endpoint_url(self.gcs_public_endpoint, secure=True),
                credentials=self.gcs_credentials,
            )
        return StorageConfig("default", "local", path=self.local_storage_dir,
                             fsync=self.local_storage_fsync)

    def storage_configs(self) -> tuple[StorageConfig, ...]:
        """Every configured storage, `default` first."""
        return (self.env_storage(), *self.extra_storages)

    def tenant(self, name: str) -> TenantConfig:
        """A tenant's configuration; tenants absent from GATEWAY_CONFIG get the defaults."""
        return next((t for t in self.tenants if t.name == name), TenantConfig(name))

    def tenant_storage(self, tenant: str) -> str | None:
        return next((t.storage for t in self.tenants if t.name == tenant), None)

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (CLI flags override the environment)."""
        return replace(self, **changes)


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build Settings from an environment mapping, or raise SettingsError naming the variable."""
    values: dict[str, Any] = {}
    for var in VARIABLES:
        raw = environ.get(var.name, "")
        if raw == "" and var.default == "":
            continue
        try:
            values[var.field] = var.parse(raw if raw != "" else var.default)
        except ValueError as exc:
            raise SettingsError(var.name, str(exc)) from None
    data_dir: Path = values.pop("data_dir")
    _ensure_writable_dir(data_dir, "GATEWAY_DATA_DIR")
    if values.get("catalog") == "postgres" and "database_url" not in values:
        raise SettingsError("GATEWAY_DATABASE_URL", "is required when GATEWAY_CATALOG=postgres")
    if "signing_keys" not in values and values.get("catalog") == "postgres":
        # A key generated on one replica's disk would not verify another one's links.
        raise SettingsError("GATEWAY_SIGNING_KEY", "is required when GATEWAY_CATALOG=postgres: "
                            "every replica must sign and verify links with the same key")
    if "signing_keys" not in values:
        values["signing_keys"] = (_load_or_create_signing_key(data_dir),)
    if "config_path" in values:
        values.update(_file_settings(values["config_path"]))
    settings = Settings(data_dir=data_dir, **values)
    if settings.catalog == "upstream" and not settings.upstream_url:
        raise SettingsError("GATEWAY_UPSTREAM_URL", "is required when GATEWAY_CATALOG=upstream")
    _check_env_storage(settings)
    _check_tokens(settings)
    _check_standalone_only(settings)
    if settings.s3_part_size < 5 * 1024**2:
        raise SettingsError("GATEWAY_S3_PART_SIZE", "must be at least 5M (the S3 minimum)")
    if settings.storage_backend == "local":
        _ensure_writable_dir(settings.local_storage_dir, "LOCAL_STORAGE_DIR")
    for extra in settings.extra_storages:
        if extra.path is not None:
            _ensure_writable_dir(extra.path, "GATEWAY_CONFIG")
    _ensure_writable_dir(settings.catalog_path.parent, "GATEWAY_CATALOG_PATH")
    return settings


def _file_settings(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            config: FileConfig = parse_config(tomllib.load(handle))
    except OSError as exc:
        raise SettingsError("GATEWAY_CONFIG", f"cannot read {str(path)!r} ({exc.strerror})")\
            from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError("GATEWAY_CONFIG", f"{str(path)!r} is not valid TOML ({exc})")\
            from None
    except ConfigError as exc:
        raise SettingsError("GATEWAY_CONFIG", f"{path.name}: {exc}") from None
    values: dict[str, Any] = {"extra_storages": config.storages, "tenants": config.tenants}
    if config.default_storage is not None:
        values["default_storage"] = config.default_storage
    return values


def _check_env_storage(settings: Settings) -> None:
    """The variables the chosen STORAGE_BACKEND needs, each named when missing or wrong."""
    required = {
        "minio": ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_BUCKET"),
        "s3": ("S3_BUCKET",),
        "gcs": ("GCS_BUCKET",),
    }.get(settings.storage_backend, ())
    fields = {v.name: v.field for v in VARIABLES}
    for name in required:
        if not getattr(settings, fields[name]):
            raise SettingsError(
                name, f"is required when STORAGE_BACKEND={settings.storage_backend}")
    if settings.storage_backend == "local":
        return
    if settings.storage_backend == "s3" and (
        bool(settings.aws_access_key_id) != bool(settings.aws_secret_access_key)
    ):
        raise SettingsError("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY are set together, or neither")
    storage = settings.env_storage()
    if storage.type == "gcs":
        _check_gcs_storage(storage)
        return
    prefix = "MINIO" if storage.type == "minio" else "S3"
    try:
        check_bucket(f"{prefix}_BUCKET", storage.bucket)
        check_endpoint(f"{prefix}_ENDPOINT", storage.endpoint)
        check_endpoint(f"{prefix}_PUBLIC_ENDPOINT", storage.public_endpoint)
    except ConfigError as exc:
        variable, _, problem = str(exc).partition(": ")
        raise SettingsError(variable, problem) from None


def _check_gcs_storage(storage: StorageConfig) -> None:
    try:
        check_bucket("GCS_BUCKET", storage.bucket)
        check_endpoint("GCS_ENDPOINT", storage.endpoint)
        check_endpoint("GCS_PUBLIC_ENDPOINT", storage.public_endpoint)
        check_gcs_credentials("GCS_CREDENTIALS", storage.credentials, storage.endpoint)
    except ConfigError as exc:
        variable, _, problem = str(exc).partition(": ")
        raise SettingsError(variable, problem) from None


def _check_tokens(settings: Settings) -> None:
    """Every algorithm has keys of its own family, and the mode verifies tokens at all."""
    if not settings.bearer_tokens:
        if settings.jwt_algorithms:
            raise SettingsError("GATEWAY_JWT_ALGORITHMS", "needs GATEWAY_JWT_SECRET, "
                                "GATEWAY_JWT_PUBLIC_KEY or GATEWAY_JWT_JWKS_URL")
        return
    if settings.sidecar:
        raise SettingsError("GATEWAY_JWT_SECRET" if settings.jwt_secrets else
                            "GATEWAY_JWT_PUBLIC_KEY" if settings.jwt_public_key_pem else
                            "GATEWAY_JWT_JWKS_URL",
                            "sidecar mode forwards Bearer tokens to the upstream, which "
                            "verifies them; unset the GATEWAY_JWT_* keys")
    from gateway.tokens import HMAC_ALGORITHMS

    for name in settings.jwt_algorithms:
        if name in HMAC_ALGORITHMS and not settings.jwt_secrets:
            raise SettingsError("GATEWAY_JWT_ALGORITHMS", f"{name} needs GATEWAY_JWT_SECRET")
        if name not in HMAC_ALGORITHMS and not (settings.jwt_public_key_pem
                                                or settings.jwt_jwks_url):
            raise SettingsError("GATEWAY_JWT_ALGORITHMS", f"{name} needs "
                                "GATEWAY_JWT_PUBLIC_KEY or GATEWAY_JWT_JWKS_URL")


def _check_standalone_only(settings: Settings) -> None:
    """Retention and the audit lock need the embedded catalog; a sidecar refuses them."""
    if not settings.sidecar:
        return
    upstream_owns = "in sidecar mode the upstream meeting API owns its recordings' lifetime"
    if settings.retention_days:
        raise SettingsError("GATEWAY_RETENTION_DAYS", f"{upstream_owns}; unset it")
    for tenant in settings.tenants:
        if tenant.retention_days is not None or tenant.delete_policy is not DeletePolicy.ALLOW:
            raise SettingsError("GATEWAY_CONFIG", f"tenants.{tenant.name}: retention_days and "
                                f"delete_policy are standalone settings; {upstream_owns}")


def _ensure_writable_dir(path: Path, variable: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise SettingsError(variable, f"directory {str(path)!r} is not writable ({exc.strerror})")\
            from None


def _load_or_create_signing_key(data_dir: Path) -> bytes:
    path = data_dir / SIGNING_KEY_FILE
    if not path.exists():
        # Write a private temporary file, then link it into place: link() fails when
        # another process won the race, and nobody ever reads a half-written key.
        key = secrets.token_hex(32).encode()
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".signing-")
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(key + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.link(tmp, path)
            return key
        except FileExistsError:
            pass
        except OSError as exc:
            raise SettingsError(
                "GATEWAY_DATA_DIR", f"cannot create {str(path)!r} ({exc.strerror})"
            ) from None
        finally:
            os.unlink(tmp)
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise SettingsError("GATEWAY_SIGNING_KEY", f"the key file {str(path)!r} is damaged")
    return key


def _parse_api_key(raw: str) -> str:
    value = raw.strip()
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError("must be printable ASCII without spaces")
    return value


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Where the client commands (`gateway upload`, `gateway recordings list|get`) find
    a running gateway, and the key they send."""

    url: str
    api_key: str = field(default="", repr=False)


# The client commands' variables. They talk HTTP to a gateway that may run elsewhere,
# so they read no data dir and create nothing: load_settings is not theirs.
CLIENT_VARIABLES: tuple[Variable, ...] = (
    Variable("GATEWAY_URL", "url", _parse_upstream_url, "",
             "Base URL of the gateway (default: http://GATEWAY_HOST:GATEWAY_PORT, with "
             "127.0.0.1 for a wildcard host). `--url` overrides it."),
    Variable("GATEWAY_API_KEY", "api_key", _parse_api_key, "",
             "API key sent as `X-API-Key`. `--key` overrides it."),
    Variable("API_KEY", "api_key", _parse_api_key, "",
             "The key when GATEWAY_API_KEY is unset (the name Vexa's documentation uses)."),
)


def local_url(host: str, port: int) -> str:
    """The URL that reaches a gateway listening on host:port from this machine."""
    if host in ("0.0.0.0", "::"):  # noqa: S104
        host = "127.0.0.1"  # a wildcard address is reached on loopback
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def load_client_settings(environ: Mapping[str, str]) -> ClientSettings:
    """The client commands' settings, or SettingsError naming the variable."""
    known = {v.name: v for v in VARIABLES + CLIENT_VARIABLES}

    def read(name: str) -> Any:
        var = known[name]
        raw = environ.get(name, "").strip() or var.default
        try:
            return var.parse(raw) if raw else None
        except ValueError as exc:
            raise SettingsError(name, str(exc)) from None

    url = read("GATEWAY_URL")
    if url is None:
        port = read("GATEWAY_PORT")
        if port == 0:
            raise SettingsError("GATEWAY_URL", "is required when GATEWAY_PORT is 0")
        url = local_url(read("GATEWAY_HOST"), port)
    return ClientSettings(url, read("GATEWAY_API_KEY") or read("API_KEY") or "")


def reference_markdown() -> str:
    """docs/configuration.md, generated from VARIABLES so it cannot fall behind."""
    rows = "\n".join(
        f"| `{v.name}` | {f'`{v.default}`' if v.default else '(see description)'} | {v.doc} |"
        for v in VARIABLES
    )
    client_rows = "\n".join(f"| `{v.name}` | (unset) | {v.doc} |" for v in CLIENT_VARIABLES)
    return (
        "# Configuration reference\n\n"
        "Every setting is an environment variable, read once at startup. A wrong value\n"
        "stops the gateway with one line naming the variable and exit status 2.\n"
        "Storage variables keep the names of Vexa's recording-storage documentation.\n\n"
        "Regenerate this file after changing `gateway/settings.py`:\n\n"
        "```\npython -c 'from gateway.settings import reference_markdown as r; "
        "print(r(), end=\"\")' > docs/configuration.md\n```\n\n"
        "| variable | default | meaning |\n|---|---|---|\n"
        f"{rows}\n"
        "\n## Client commands\n\n"
        "`gateway upload` and `gateway recordings list|get` talk to a running gateway over\n"
        "HTTP and read only these variables (and GATEWAY_HOST / GATEWAY_PORT for the default\n"
        "URL); see docs/cli.md.\n\n"
        "| variable | default | meaning |\n|---|---|---|\n"
        f"{client_rows}\n"
    )
