"""Recordings in an Azure Blob Storage container, through the official async SDK.

Reads work as on S3 (docs/storage.md): the blob's validators come from its
properties, kept for the cache TTL, so the gateway decides ranges and preconditions
itself, then fetches exactly one normalized range per GET with `If-Match`, through a
read-only SAS URL it signs for itself and a plain aiohttp session (the SDK's
downloader reads whole chunks of megabytes into memory before handing them on).
Writes: blocks of GATEWAY_S3_PART_SIZE staged one by one and committed only once
the body is complete, with `If-None-Match: *`. Until the commit nothing is visible;
the blocks of a write that failed stay uncommitted, and the service discards them
(after a week on Azure). A small body too is one staged block and a commit, not a
Put Blob: under `If-None-Match: *`, Azurite takes the uncommitted blocks of an
earlier failed write for an existing blob and refuses a Put Blob, not a commit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import enum
import io
import logging
import uuid
from collections.abc import AsyncIterable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.storage.blob import (
    BlobBlock,
    BlobSasPermissions,
    ContentSettings,
    generate_blob_sas,
)
from azure.storage.blob.aio import BlobServiceClient, ContainerClient, LinearRetry

from gateway.cache import TtlCache
from gateway.errors import (
    Conflict,
    GatewayError,
    GatewayTimeout,
    RangeNotSatisfiable,
    ServiceUnavailable,
    StorageUnavailable,
)
from gateway.media import content_disposition
from gateway.storage.base import CheckReport, ObjectInfo, ObjectNotFound, check_key
from gateway.storage.ranged import HttpRange, RemoteObject, ranged_answer

if TYPE_CHECKING:
    from gateway.settings import Settings
    from gateway.storage.config import StorageConfig

log = logging.getLogger(__name__)

SIGNED_GET_LIFETIME = 900
"""SAS URLs the gateway signs for its own reads are reused for two thirds of their life."""
ATTEMPTS = 2
"""Tries per SDK call; the SDK's default (four tries, 15 s apart and more) would hold a
request far beyond any client's patience."""
_MIB = 1024 * 1024
_NOT_FOUND = frozenset({"BlobNotFound", "ContainerNotFound", "ResourceNotFound"})
_THROTTLED = frozenset({"ServerBusy", "OperationTimedOut", "IngressOverAccountLimit",
                        "EgressOverAccountLimit", "TpsOverAccountLimit"})
_STALE_SAS = frozenset({"AuthenticationFailed", "AuthorizationFailure"})
_WRITER = "gateway_write"
"""Blob metadata naming the write that stored it (metadata names are C# identifiers).
When the answer to a commit is lost, the SDK's retry meets the blob its first try
stored (409 under If-None-Match); this tells that apart from another writer's blob."""


def _code(exc: HttpResponseError) -> str:
    """The service's error code (`x-ms-error-code`), e.g. BlobNotFound."""
    code = getattr(exc, "error_code", None)
    if isinstance(code, enum.Enum):  # the SDK's StorageErrorCode, a str Enum
        code = code.value
    return str(code or exc.status_code or "")


def _message(exc: HttpResponseError) -> str:
    """The first line of the service's message: no request ids, XML or headers."""
    message = str(getattr(exc, "reason", "") or "")
    if exc.message:
        message = str(exc.message).splitlines()[0]
    return message.strip()


def storage_error(exc: BaseException, storage: str, *, size: int | None = None,
                  status: int | None = None, code: str = "") -> GatewayError:
    """Map an SDK or aiohttp failure (or a plain answer's status and code) to the
    gateway's answer, never a 500."""
    if isinstance(exc, GatewayError):
        return exc
    message = f"HTTP {status}"
    if isinstance(exc, HttpResponseError):
        status, code, message = exc.status_code, _code(exc), _message(exc) or _code(exc)
    if status is not None:
        if code in _NOT_FOUND or status == 404:
            if code == "ContainerNotFound":
                log.error("storage %r: the container does not exist", storage)
            return ObjectNotFound()
        if code == "InvalidRange" or status == 416:
            return RangeNotSatisfiable(
                headers={"Content-Range": f"bytes */{size}"} if size is not None else None)
        if code in _THROTTLED or status == 503:
            return ServiceUnavailable(f"Storage {storage!r} is throttling requests; retry",
                                      headers={"Retry-After": "1"})
        if code == "ConditionNotMet" or status == 412:
            return ServiceUnavailable(f"The object changed in storage {storage!r}; retry",
                                      headers={"Retry-After": "0"})
        return StorageUnavailable(f"Storage {storage!r} answered {code or status}: {message}")
    if isinstance(exc, ServiceResponseTimeoutError | ServiceRequestTimeoutError
                  | asyncio.TimeoutError):
        return GatewayTimeout(f"Storage {storage!r} did not answer in time")
    if isinstance(exc, ServiceRequestError | ServiceResponseError | AzureError
                  | aiohttp.ClientError | OSError):
        return StorageUnavailable(f"Storage {storage!r} is unreachable ({type(exc).__name__})")
    raise exc


def _block_id(write_id: str, number: int) -> str:
    # Every block id of a blob has the same length: a uuid and a six-digit number.
    return base64.b64encode(f"{write_id}-{number:06d}".encode()).decode()


class AzureBlobStorage:
    """A container (and blob name prefix) of an Azure storage account."""

    backend = "azure"

    def __init__(
        self, name: str, container: ContainerClient, http: aiohttp.ClientSession, *,
        account_name: str, account_key: str, endpoint: str, public_endpoint: str,
        prefix: str, block_size: int, cache_ttl: float, timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._container = container
        self._http = http
        self._account = account_name
        self._key_secret = account_key
        self._endpoint = endpoint.rstrip("/")
        self._public_endpoint = (public_endpoint or endpoint).rstrip("/")
        self._prefix = prefix
        self._block_size = block_size
        self._timeout = timeout
        self._heads: TtlCache[str, ObjectInfo] = TtlCache(cache_ttl)
        self._get_urls: TtlCache[str, str] = TtlCache(SIGNED_GET_LIFETIME * 2 / 3)

    def __repr__(self) -> str:
        return f"AzureBlobStorage({self.name!r}, container={self._container.container_name!r})"

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    def caches(self) -> dict[str, TtlCache[str, Any]]:
        """For metrics: blob validators (properties) and the SAS URLs signed for reads."""
        return {"object_info": self._heads, "signed_urls": self._get_urls}

    def _sas_url(self, base: str, blob: str, expires_in: int, *,
                 content_disposition: str | None = None,
                 content_type: str | None = None) -> str:
        sas = generate_blob_sas(
            self._account, self._container.container_name, blob,
            account_key=self._key_secret, permission=BlobSasPermissions(read=True),
            expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expires_in),
            content_disposition=content_disposition, content_type=content_type)
        return f"{base}/{self._container.container_name}/{quote(blob, safe='/')}?{sas}"

    async def _head(self, full_key: str) -> ObjectInfo:
        try:
            props = await self._container.get_blob_client(full_key).get_blob_properties()
        except Exception as exc:
            raise storage_error(exc, self.name) from None
        etag = str(props.etag)
        return ObjectInfo(int(props.size), etag if etag.startswith('"') else f'"{etag}"',
                          int(props.last_modified.timestamp()))

    async def open(self, key: str) -> RemoteObject:
        full_key = self._key(key)
        info = await self._heads.get(full_key, lambda: self._head(full_key))
        assert info is not None  # _head raises instead of returning None
        return RemoteObject(self, full_key, info)

    async def _signed_get(self, full_key: str) -> str:
        return self._sas_url(self._endpoint, full_key, SIGNED_GET_LIFETIME)

    async def get_range(self, full_key: str, info: ObjectInfo, start: int,
                        length: int) -> HttpRange:
        """One ranged GET, with If-Match so the bytes match the validators we announced."""
        headers = {"If-Match": info.etag}
        if length != info.size:
            headers["Range"] = f"bytes={start}-{start + length - 1}"
        for attempt in (1, 2):
            url = await self._get_urls.get(full_key, lambda: self._signed_get(full_key))
            assert url is not None
            try:
                answer = await self._http.get(url, headers=headers)
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise storage_error(exc, self.name) from None
            source = ranged_answer(answer, start, length, info.size, self.name,
                                   storage_error, self._http.timeout.sock_read)
            if source is not None:
                return source
            code = answer.headers.get("x-ms-error-code", "")
            answer.close()
            self._heads.invalidate(full_key)  # gone or changed: ask again next time
            if code in _STALE_SAS and attempt == 1:
                self._get_urls.invalidate(full_key)  # our URL went stale: sign anew, once
                continue
            raise storage_error(Exception(), self.name, size=info.size, status=answer.status,
                                code=code)
        raise AssertionError("unreachable")  # pragma: no cover

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        full_key = self._key(key)
        blob = self._container.get_blob_client(full_key)
        write_id = uuid.uuid4().hex
        metadata = {_WRITER: write_id}
        # Bodies go to the SDK as files: aiohttp warns that a large bytes body blocks the loop.
        buffer = bytearray()
        size = 0
        blocks: list[BlobBlock] = []
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                while len(buffer) >= self._block_size:
                    block = bytes(buffer[: self._block_size])
                    del buffer[: self._block_size]
                    blocks.append(BlobBlock(_block_id(write_id, len(blocks) + 1)))
                    async with asyncio.timeout(self._send_deadline(len(block))):
                        await blob.stage_block(blocks[-1].id, io.BytesIO(block), length=len(block))
            if buffer or not blocks:
                blocks.append(BlobBlock(_block_id(write_id, len(blocks) + 1)))
                async with asyncio.timeout(self._send_deadline(len(buffer))):
                    await blob.stage_block(blocks[-1].id, io.BytesIO(buffer), length=len(buffer))
            try:
                # If-None-Match: *: never replace a blob, as link() does on local disk.
                await blob.commit_block_list(blocks, metadata=metadata,
                                             match_condition=MatchConditions.IfMissing)
            except (AzureError, aiohttp.ClientError, TimeoutError):
                if not await self._stored_by(full_key, write_id):
                    raise
        except (AzureError, aiohttp.ClientError, TimeoutError) as exc:
            # Staged blocks stay uncommitted, invisible; the service discards them.
            if isinstance(exc, HttpResponseError) and _code(exc) in ("BlobAlreadyExists",
                                                                     "ConditionNotMet"):
                raise Conflict("A media file of this format already exists for the recording")\
                    from None
            raise storage_error(exc, self.name) from None
        finally:
            self._heads.invalidate(full_key)
        return size

    async def _stored_by(self, full_key: str, write_id: str) -> bool:
        """Whether the blob under the key is the one this write stored, its answer lost."""
        try:
            props = await self._container.get_blob_client(full_key).get_blob_properties()
        except (AzureError, aiohttp.ClientError, TimeoutError) as exc:
            error = storage_error(exc, self.name)
            if not isinstance(error, ObjectNotFound):
                log.error("storage %r: a write of %s failed and the store cannot say whether "
                          "it was stored (%s); if it was, no recording refers to it",
                          self.name, full_key, error.detail)
            return False
        return bool((props.metadata or {}).get(_WRITER) == write_id)

    def _send_deadline(self, size: int) -> float:
        """Seconds one upload request may take, tries included (see S3Storage)."""
        return ATTEMPTS * self._timeout * (1 + size / _MIB) + 1

    async def delete(self, key: str) -> None:
        full_key = self._key(key)
        try:
            await self._container.get_blob_client(full_key).delete_blob(
                delete_snapshots="include")
        except Exception as exc:
            error = storage_error(exc, self.name)
            if not isinstance(error, ObjectNotFound):
                raise error from None
        finally:
            self._heads.invalidate(full_key)

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int
    ) -> str | None:
        # rscd and rsct: the blob service answers with these headers (SAS overrides).
        return self._sas_url(self._public_endpoint, self._key(key), expires_in,
                             content_disposition=content_disposition("attachment", filename),
                             content_type=content_type)

    async def ping(self) -> None:
        try:
            await self._container.get_container_properties()
        except Exception as exc:
            raise storage_error(exc, self.name) from None

    async def check(self) -> CheckReport:
        name = f"{self._prefix}gateway-check-{uuid.uuid4()}.md"
        body = f"# Storage check\n\nWritten by the recordings gateway to test {self.name!r}.\n"
        blob = self._container.get_blob_client(name)
        step = "write"
        try:
            await blob.upload_blob(body.encode(), overwrite=False,
                                   content_settings=ContentSettings(content_type="text/markdown"))
            step = "read"
            download = await blob.download_blob()
            if await download.readall() != body.encode():
                raise StorageUnavailable(f"Storage {self.name!r} returned other bytes")
            step = "delete"
            await blob.delete_blob()
        except Exception as exc:
            if step != "write":
                with contextlib.suppress(Exception):
                    await blob.delete_blob()
            detail = _check_detail(exc, self.name)
            raise StorageUnavailable(f"Storage {self.name!r} check failed at {step}: {detail}")\
                from None
        return CheckReport(name, ("write", "read", "delete"))

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "type": self.backend,
                "container": self._container.container_name, "prefix": self._prefix,
                "endpoint": self._endpoint}

    async def close(self) -> None:
        return None  # the clients are closed by whoever opened them


def _check_detail(exc: BaseException, storage: str) -> str:
    """The storage's own words for a failed check (code and message), no secrets."""
    if isinstance(exc, HttpResponseError):
        return f"{_code(exc) or 'Error'}: {_message(exc)}".rstrip(": ")
    if isinstance(exc, GatewayError):
        return exc.detail
    try:
        return storage_error(exc, storage).detail
    except BaseException:
        return type(exc).__name__


async def open_azure(config: StorageConfig, settings: Settings, http: aiohttp.ClientSession,
                     stack: AsyncExitStack) -> AzureBlobStorage:
    """An Azure storage whose SDK client closes when `stack` unwinds."""
    service = BlobServiceClient(
        config.endpoint,
        credential={"account_name": config.account_name, "account_key": config.account_key},
        retry_policy=LinearRetry(backoff=1, random_jitter_range=0, retry_total=ATTEMPTS - 1),
        connection_timeout=settings.storage_timeout, read_timeout=settings.storage_timeout,
    )
    await stack.enter_async_context(service)
    return AzureBlobStorage(
        config.name, service.get_container_client(config.bucket), http,
        account_name=config.account_name, account_key=config.account_key,
        endpoint=config.endpoint, public_endpoint=config.public_endpoint,
        prefix=config.prefix, block_size=settings.s3_part_size,
        cache_ttl=settings.cache_ttl, timeout=settings.storage_timeout,
    )
