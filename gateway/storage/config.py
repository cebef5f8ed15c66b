"""How storages are described: the environment's `default` and named ones from TOML.

Named storages follow Stream's external storage: up to ten per deployment, each
local, minio, s3 or azure with its own bucket, prefix and credentials; a new recording
goes to the storage its request names, else its tenant's, else the default.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.models import DeletePolicy

MAX_STORAGES = 10
MAX_RETENTION_DAYS = 36500
STORAGE_TYPES = ("local", "minio", "s3", "gcs")
"""What STORAGE_BACKEND (the environment's `default`) may be."""
NAMED_STORAGE_TYPES = (*STORAGE_TYPES, "azure")
"""What a named storage of the TOML file may be."""
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_RE = re.compile(r"([A-Za-z0-9_.-]+/)*")


class ConfigError(ValueError):
    """A storage description is wrong; `where` says which key."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """One storage. Secrets are kept out of repr() so they never reach a log."""

    name: str
    type: str
    path: Path | None = None  # local
    fsync: bool = True  # local
    bucket: str = ""
    prefix: str = ""  # object keys are prefix + recordings/...
    region: str = "us-east-1"
    endpoint: str = ""  # full URL; empty means AWS
    public_endpoint: str = ""  # host that presigned URLs carry, for browsers
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    account_name: str = ""  # azure; `bucket` holds the container
    account_key: str = field(default="", repr=False)  # azure
    credentials: str = field(default="", repr=False)  # gcs: service account JSON or its path


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """A tenant's choices: its storage, how long its recordings live, who may delete them."""

    name: str
    storage: str | None = None
    retention_days: float | None = None  # None: GATEWAY_RETENTION_DAYS; 0: keep forever
    delete_policy: DeletePolicy = DeletePolicy.ALLOW


def endpoint_url(value: str, *, secure: bool) -> str:
    """`minio:9000` → `http://minio:9000` (scheme from the *_SECURE flag) unless given."""
    value = value.strip().rstrip("/")
    if not value or "://" in value:
        return value
    return f"{'https' if secure else 'http'}://{value}"


def check_endpoint(where: str, value: str) -> str:
    if value and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[^\s]*)?", value):
        raise ConfigError(where, f"must be a host[:port] or an http(s) URL, got {value!r}")
    return value


def check_bucket(where: str, value: str) -> str:
    if not _BUCKET_RE.fullmatch(value):
        raise ConfigError(where, f"must be an S3 bucket name, got {value!r}")
    return value


def _text(table: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}", "must be a string")
    return value


def _flag(table: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}", "must be true or false")
    return value


def storage_from_table(name: str, table: Mapping[str, Any]) -> StorageConfig:
    """A named storage from its TOML table `[storages.<name>]`."""
    where = f"storages.{name}"
    if table.get("type") == "azure":
        return _azure_from_table(name, table)
    known = {"type", "path", "fsync", "bucket", "prefix", "region", "endpoint",
             "public_endpoint", "secure", "access_key", "secret_key"}
    if table.get("type") == "gcs":
        known = set(_GCS_KEYS)
    if unknown := sorted(set(table) - known):
        raise ConfigError(where, f"unknown key(s) {', '.join(unknown)}")
    kind = _text(table, "type", where)
    if kind not in STORAGE_TYPES:
        raise ConfigError(f"{where}.type", f"must be one of {', '.join(NAMED_STORAGE_TYPES)}")
    if kind == "local":
        path = _text(table, "path", where)
        if not path.startswith("/"):
            raise ConfigError(f"{where}.path", "must be an absolute directory path")
        return StorageConfig(name, kind, path=Path(path), fsync=_flag(table, "fsync", where, True))
    if kind == "gcs":
        return _gcs_from_table(name, table, where)
    prefix = _text(table, "prefix", where)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not _PREFIX_RE.fullmatch(prefix):
        raise ConfigError(f"{where}.prefix", f"must be path segments like 'a/b/', got {prefix!r}")
    secure = _flag(table, "secure", where, True)
    access_key, secret_key = _text(table, "access_key", where), _text(table, "secret_key", where)
    if bool(access_key) != bool(secret_key):
        raise ConfigError(where, "access_key and secret_key go together")
    endpoint = endpoint_url(_text(table, "endpoint", where), secure=secure)
    if kind == "minio" and not endpoint:
        raise ConfigError(f"{where}.endpoint", "is required for minio")
    return StorageConfig(
        name, kind,
        bucket=check_bucket(f"{where}.bucket", _text(table, "bucket", where)),
        prefix=prefix,
        region=_text(table, "region", where, "us-east-1") or "us-east-1",
        endpoint=check_endpoint(f"{where}.endpoint", endpoint),
        public_endpoint=check_endpoint(
            f"{where}.public_endpoint",
            endpoint_url(_text(table, "public_endpoint", where), secure=secure)),
        access_key=access_key,
        secret_key=secret_key,
    )


_GCS_KEYS = frozenset({"type", "bucket", "prefix", "credentials", "endpoint", "public_endpoint"})


def check_gcs_credentials(where: str, value: str, endpoint: str) -> str:
    """A service account key (JSON text or a file's path) that loads; required on Google's
    own endpoint, optional with an emulator's. Errors never quote the key."""
    from gateway.storage.gcs_auth import CredentialsError, load_service_account

    if not value:
        if not endpoint:
            raise ConfigError(where, "a service account JSON key (or its path) is required")
        return value
    try:
        load_service_account(value)
    except CredentialsError as exc:
        raise ConfigError(where, str(exc)) from None
    return value


def _gcs_from_table(name: str, table: Mapping[str, Any], where: str) -> StorageConfig:
    """`[storages.<name>]` of type gcs: bucket, prefix, service account, endpoints."""
    prefix = _text(table, "prefix", where)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not _PREFIX_RE.fullmatch(prefix):
        raise ConfigError(f"{where}.prefix", f"must be path segments like 'a/b/', got {prefix!r}")
    endpoint = check_endpoint(f"{where}.endpoint",
                              endpoint_url(_text(table, "endpoint", where), secure=True))
    return StorageConfig(
        name, "gcs",
        bucket=check_bucket(f"{where}.bucket", _text(table, "bucket", where)),
        prefix=prefix,
        endpoint=endpoint,
        public_endpoint=check_endpoint(
            f"{where}.public_endpoint",
            endpoint_url(_text(table, "public_endpoint", where), secure=True)),
        credentials=check_gcs_credentials(f"{where}.credentials",
                                          _text(table, "credentials", where), endpoint),
    )


_CONTAINER_RE = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_ACCOUNT_RE = re.compile(r"[a-z0-9]{3,24}")


def _connection_string(where: str, value: str) -> dict[str, str]:
    """`AccountName=...;AccountKey=...;BlobEndpoint=...` as a dict; never echoes the value."""
    parts: dict[str, str] = {}
    for piece in value.strip().strip(";").split(";"):
        key, sep, item = piece.partition("=")
        if not sep or not key.strip():
            raise ConfigError(where, "is not a connection string (Name=value pairs joined by ;)")
        parts[key.strip()] = item.strip()
    if not parts.get("AccountName") or not parts.get("AccountKey"):
        raise ConfigError(where, "must hold AccountName and AccountKey (download links are "
                                 "SAS URLs signed with the account key)")
    return parts


def _azure_from_table(name: str, table: Mapping[str, Any]) -> StorageConfig:
    """An Azure Blob Storage container: account name and key, or a connection string."""
    where = f"storages.{name}"
    known = {"type", "container", "prefix", "account_name", "account_key",
             "connection_string", "endpoint", "public_endpoint"}
    if unknown := sorted(set(table) - known):
        raise ConfigError(where, f"unknown key(s) {', '.join(unknown)}")
    account, key = _text(table, "account_name", where), _text(table, "account_key", where)
    endpoint = _text(table, "endpoint", where)
    if connection := _text(table, "connection_string", where):
        if account or key:
            raise ConfigError(where, "give either connection_string or account_name and "
                                     "account_key, not both")
        parts = _connection_string(f"{where}.connection_string", connection)
        account, key = parts["AccountName"], parts["AccountKey"]
        endpoint = endpoint or parts.get("BlobEndpoint", "")
        if not endpoint and "EndpointSuffix" in parts:
            scheme = parts.get("DefaultEndpointsProtocol", "https")
            endpoint = f"{scheme}://{account}.blob.{parts['EndpointSuffix']}"
    elif not account or not key:
        raise ConfigError(where, "needs account_name and account_key, or connection_string")
    # Azurite's and Azure Stack's accounts (devstoreaccount1) are not bound by the
    # public cloud's naming rule, so only its shape is checked when an endpoint is given.
    if not (_ACCOUNT_RE.fullmatch(account) or (endpoint and re.fullmatch(r"[A-Za-z0-9]{1,64}",
                                                                          account))):
        raise ConfigError(f"{where}.account_name",
                          f"must be 3 to 24 lowercase letters and digits, got {account!r}")
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}.account_key", "must be the base64 account key") from None
    container = _text(table, "container", where)
    if not _CONTAINER_RE.fullmatch(container):
        raise ConfigError(f"{where}.container",
                          f"must be an Azure container name (3 to 63 lowercase letters, "
                          f"digits and single hyphens), got {container!r}")
    prefix = _text(table, "prefix", where)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not _PREFIX_RE.fullmatch(prefix):
        raise ConfigError(f"{where}.prefix", f"must be path segments like 'a/b/', got {prefix!r}")
    endpoint = endpoint_url(endpoint, secure=True) or f"https://{account}.blob.core.windows.net"
    return StorageConfig(
        name, "azure", bucket=container, prefix=prefix,
        endpoint=check_endpoint(f"{where}.endpoint", endpoint),
        public_endpoint=check_endpoint(
            f"{where}.public_endpoint",
            endpoint_url(_text(table, "public_endpoint", where), secure=True)),
        account_name=account, account_key=key,
    )


def tenant_from_table(name: str, table: Mapping[str, Any], storages: set[str]) -> TenantConfig:
    """A tenant from its TOML table `[tenants.<name>]`."""
    where = f"tenants.{name}"
    if unknown := sorted(set(table) - {"storage", "retention_days", "delete_policy"}):
        raise ConfigError(where, f"unknown key(s) {', '.join(unknown)}")
    storage = table.get("storage")
    if storage is not None and storage not in storages:
        raise ConfigError(f"{where}.storage", f"names no storage: {storage!r}")
    days = table.get("retention_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int | float)
                             or not 0 <= days <= MAX_RETENTION_DAYS):
        raise ConfigError(f"{where}.retention_days",
                          f"must be a number of days from 0 (keep forever) to "
                          f"{MAX_RETENTION_DAYS}, got {days!r}")
    policy = table.get("delete_policy", DeletePolicy.ALLOW.value)
    if policy not in tuple(DeletePolicy):
        raise ConfigError(f"{where}.delete_policy",
                          f"must be one of {', '.join(DeletePolicy)}, got {policy!r}")
    return TenantConfig(name, storage, None if days is None else float(days),
                        DeletePolicy(policy))


@dataclass(frozen=True, slots=True)
class FileConfig:
    """What the optional TOML file (GATEWAY_CONFIG) adds to the environment."""

    storages: tuple[StorageConfig, ...] = ()
    tenants: tuple[TenantConfig, ...] = ()
    default_storage: str | None = None


def parse_config(data: Mapping[str, Any]) -> FileConfig:
    """Validate the parsed TOML document; raise ConfigError naming the key."""
    if unknown := sorted(set(data) - {"storages", "tenants", "default_storage"}):
        raise ConfigError("top level", f"unknown key(s) {', '.join(unknown)}")
    storages_table = data.get("storages", {})
    tenants_table = data.get("tenants", {})
    if not isinstance(storages_table, dict) or not isinstance(tenants_table, dict):
        raise ConfigError("top level", "storages and tenants must be tables")
    storages = []
    for name, table in storages_table.items():
        if not NAME_RE.fullmatch(name):
            raise ConfigError(f"storages.{name}", f"the name must match {NAME_RE.pattern}")
        if name == "default":
            raise ConfigError("storages.default",
                              "the name is taken by the storage the environment describes")
        if not isinstance(table, dict):
            raise ConfigError(f"storages.{name}", "must be a table")
        storages.append(storage_from_table(name, table))
    if len(storages) + 1 > MAX_STORAGES:
        raise ConfigError("storages", f"at most {MAX_STORAGES} storages, 'default' included")
    names = {"default", *(s.name for s in storages)}
    default = data.get("default_storage")
    if default is not None and default not in names:
        raise ConfigError("default_storage", f"names no storage: {default!r}")
    tenants = []
    for name, table in tenants_table.items():
        if not NAME_RE.fullmatch(name) or not isinstance(table, dict):
            raise ConfigError(f"tenants.{name}", "must be a table named like a tenant")
        tenants.append(tenant_from_table(name, table, names))
    return FileConfig(tuple(storages), tuple(tenants), default)
