"""Storages from settings: local directories, and aiobotocore clients for S3/MinIO."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import aiohttp

from gateway.settings import Settings
from gateway.storage.base import Storage
from gateway.storage.config import StorageConfig
from gateway.storage.local import LocalStorage
from gateway.storage.ranged import STORE_READ_BUFFER
from gateway.storage.registry import StorageRegistry


def _client_args(config: StorageConfig, settings: Settings, endpoint: str) -> dict[str, Any]:
    from aiobotocore.config import AioConfig  # imported with object storage only

    from gateway.storage.s3 import ATTEMPTS

    custom_endpoint = bool(endpoint) or config.type == "minio"
    return {
        "region_name": config.region,
        "endpoint_url": endpoint or None,
        # None lets botocore use its standard credential chain (env, files, IAM role).
        "aws_access_key_id": config.access_key or None,
        "aws_secret_access_key": config.secret_key or None,
        "config": AioConfig(
            connect_timeout=settings.storage_timeout,
            read_timeout=settings.storage_timeout,
            # Tries in all: botocore's `max_attempts` would count retries only.
            retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
            # Each stream holds a connection while it plays: size the pool for them.
            max_pool_connections=settings.s3_max_connections,
            signature_version="s3v4",
            s3={"addressing_style": "path" if custom_endpoint else "auto"},
        ),
    }


def _send_bodies_at_once(client: Any) -> None:
    """Uploads without `Expect: 100-continue`.

    aiohttp times the wait for an answer only once the body is sent, so a store that
    accepts the connection and never says "100 Continue" would hold an upload forever
    (botocore's own HTTP client waits one second, then sends the body anyway). Sent at
    once, the body is followed by the read timeout like any other request.
    """
    from botocore.handlers import add_expect_header

    client.meta.events.unregister("before-call.s3", add_expect_header)


def _read_session(settings: Settings) -> aiohttp.ClientSession:
    """The plain session that ranged GETs of object storage go through."""
    timeout = settings.storage_timeout
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout,
                                      sock_read=timeout),
        connector=aiohttp.TCPConnector(limit=settings.s3_max_connections,
                                       limit_per_host=settings.s3_max_connections),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        # A stream takes each socket read (at most 256 KiB) whole and pauses the store
        # itself while its client is full (gateway/storage/ranged.py), so aiohttp's own
        # pause, at twice this much unread, never comes into play. It must not: resumed
        # after the body's end, aiohttp restarts the read timer of a connection already
        # back in the pool, which then fails the next request that takes it.
        read_bufsize=STORE_READ_BUFFER,
    )


async def _open_azure(config: StorageConfig, settings: Settings,
                      stack: AsyncExitStack) -> Storage:
    # The Azure SDK is imported only when an Azure storage is configured, as botocore is.
    from gateway.storage.azure import open_azure

    http = await stack.enter_async_context(_read_session(settings))
    return await open_azure(config, settings, http, stack)


async def _open_gcs(config: StorageConfig, settings: Settings,
                    stack: AsyncExitStack) -> Storage:
    """A Google Cloud Storage bucket; its clients are imported only when one is configured."""
    from gcloud.aio.storage import Storage as GcloudStorage

    from gateway.storage.gcs import GOOGLE_API, GcsStorage, SignUrl
    from gateway.storage.gcs_auth import AccessTokens, NoTokens, load_service_account

    http = await stack.enter_async_context(_read_session(settings))
    api_root = config.endpoint or GOOGLE_API
    tokens: AccessTokens | None = None
    sign_url: SignUrl | None = None
    if config.credentials:
        account = load_service_account(config.credentials)
        tokens = AccessTokens(account, http, settings.storage_timeout)
        sign_url = _url_signer(account.info, account.project_id, config.bucket,
                               config.public_endpoint or api_root)
    # api_is_dev: with no service account (an emulator) requests carry no token.
    # Both are duck-typed: a token with `get()`, and aiohttp's own session.
    client = GcloudStorage(token=tokens or NoTokens(), session=http,  # type: ignore[arg-type]
                           api_root=api_root, api_is_dev=tokens is None)
    return GcsStorage(
        config.name, client, http, tokens, sign_url, bucket=config.bucket,
        prefix=config.prefix, api_root=api_root, chunk_size=settings.s3_part_size,
        cache_ttl=settings.cache_ttl, location=config.endpoint or "gcs",
        timeout=settings.storage_timeout)


def _url_signer(info: dict[str, Any], project: str, bucket: str, endpoint: str) -> Any:
    """V4 signed GET URLs from google-cloud-storage's signer, with the account's key."""
    from datetime import timedelta

    from google.cloud import storage as google_storage
    from google.oauth2 import service_account

    credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        info)
    # No request is ever sent through this client: it only knows the universe to sign for.
    client = google_storage.Client(project=project or "gateway", credentials=credentials)
    signing_bucket = client.bucket(bucket)

    def sign(name: str, disposition: str, content_type: str, seconds: int) -> str:
        url: str = signing_bucket.blob(name).generate_signed_url(
            version="v4", expiration=timedelta(seconds=seconds), method="GET",
            response_disposition=disposition, response_type=content_type,
            api_access_endpoint=endpoint, credentials=credentials)
        return url

    return sign


async def open_storages(settings: Settings, stack: AsyncExitStack) -> StorageRegistry:
    """Create every configured storage; clients are closed when `stack` unwinds."""
    storages: dict[str, Storage] = {}
    http: aiohttp.ClientSession | None = None
    for config in settings.storage_configs():
        if config.type == "local":
            assert config.path is not None
            storages[config.name] = LocalStorage(config.name, config.path, fsync=config.fsync)
            continue
        if config.type == "azure":
            storages[config.name] = await _open_azure(config, settings, stack)
            continue
        if config.type == "gcs":
            storages[config.name] = await _open_gcs(config, settings, stack)
            continue
        # botocore and its service models cost ~12 MB of memory and startup time:
        # imported only when an object storage is configured.
        from aiobotocore.session import get_session

        from gateway.storage.s3 import S3Storage

        session = get_session()
        client = await stack.enter_async_context(
            session.create_client("s3", **_client_args(config, settings, config.endpoint)))
        _send_bodies_at_once(client)
        signer = client
        if config.public_endpoint:
            # Only signs URLs (no request is ever sent through it), with the host
            # that browsers can reach.
            signer = await stack.enter_async_context(session.create_client(
                "s3", **_client_args(config, settings, config.public_endpoint)))
        if http is None:
            http = await stack.enter_async_context(_read_session(settings))
        storages[config.name] = S3Storage(
            config.name, config.type, client, signer, http, bucket=config.bucket,
            prefix=config.prefix, part_size=settings.s3_part_size,
            cache_ttl=settings.cache_ttl,
            location=config.endpoint or f"aws:{config.region}",
            timeout=settings.storage_timeout,
        )
    tenants = {t.name: t.storage for t in settings.tenants if t.storage}
    return StorageRegistry(storages, settings.default_storage, tenants)
