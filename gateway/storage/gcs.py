"""Recordings in Google Cloud Storage, through gcloud-aio-storage and aiohttp.

The same design as the S3 backend: an object's validators (size, generation,
update time) come from its metadata, kept for the cache TTL, so the gateway decides
ranges and preconditions itself (RFC 9110) and then asks GCS for exactly one
normalized range per GET, with `ifGenerationMatch` so that the bytes belong to the
validators it announced.

gcloud-aio-storage makes the metadata, delete, bucket and small upload calls. Three
things it cannot do go straight to the JSON API on the same aiohttp session: ranged
reads with `ifGenerationMatch` (its download_stream takes no query parameters),
uploads of unknown length streamed in chunks (its upload wants the whole body), and
V4 signed URLs for another host than storage.googleapis.com (those come from
google-cloud-storage's signer, with the service account's key).

Writes: a resumable upload fed in fixed-size chunks (a single request when the body
is smaller than one chunk), with `ifGenerationMatch=0` so that no object is ever
replaced. The object exists only once the last chunk is in; any failure cancels the
upload session, so nothing partial is ever visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import uuid
from collections.abc import AsyncIterable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.cache import TtlCache
from gateway.errors import (
    GatewayError,
    StorageUnavailable,
)
from gateway.media import content_disposition
from gateway.storage.base import CheckReport, ObjectInfo, ObjectNotFound, check_key
from gateway.storage.gcs_auth import AccessTokens, TokenRefused
from gateway.storage.gcs_errors import GoogleError, check_detail, error_of, storage_error
from gateway.storage.ranged import HttpRange, RemoteObject, ranged_answer

log = logging.getLogger(__name__)

CHUNK_GRANULE = 256 * 1024
"""Every chunk of a resumable upload but the last is a multiple of 256 KiB (GCS rule)."""
GOOGLE_API = "https://storage.googleapis.com"
_MIB = 1024 * 1024
_WRITER = "gateway-write"
"""Custom metadata naming the write that stored an object: when the answer to the
last request of an upload is lost, the gateway tells its own object from another's."""

SignUrl = Callable[[str, str, str, int], str]
"""(object name, Content-Disposition, Content-Type, seconds) → a V4 signed URL."""


def _timestamp(value: Any) -> int:
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return int(datetime.now(UTC).timestamp())


def object_info(meta: dict[str, Any]) -> ObjectInfo:
    """Validators from an object resource: the generation changes whenever the bytes do."""
    return ObjectInfo(int(meta["size"]), f'"{meta["generation"]}"',
                      _timestamp(meta.get("updated") or meta.get("timeCreated")))


class GcsStorage:
    """A bucket (and object name prefix) of Google Cloud Storage."""

    backend = "gcs"

    def __init__(
        self, name: str, client: Any, http: aiohttp.ClientSession,
        tokens: AccessTokens | None, sign_url: SignUrl | None, *, bucket: str, prefix: str,
        api_root: str, chunk_size: int, cache_ttl: float, location: str,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._client = client  # gcloud.aio.storage.Storage
        self._http = http
        self._tokens = tokens
        self._sign_url = sign_url
        self._bucket = bucket
        self._prefix = prefix
        self._api_root = api_root.rstrip("/")
        # Resumable chunks are whole multiples of 256 KiB.
        self._chunk = max(CHUNK_GRANULE, chunk_size // CHUNK_GRANULE * CHUNK_GRANULE)
        self._location = location
        self._timeout = timeout
        self._heads: TtlCache[str, ObjectInfo] = TtlCache(cache_ttl)

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    def caches(self) -> dict[str, TtlCache[str, Any]]:
        """For metrics: object validators (metadata answers)."""
        return {"object_info": self._heads}

    def _object_url(self, full_key: str, *, upload: bool = False) -> str:
        base = f"{self._api_root}/upload/storage/v1" if upload else \
            f"{self._api_root}/storage/v1"
        if upload:
            return f"{base}/b/{quote(self._bucket, safe='')}/o"
        return f"{base}/b/{quote(self._bucket, safe='')}/o/{quote(full_key, safe='')}"

    async def _auth(self) -> dict[str, str]:
        if self._tokens is None:
            return {}  # an emulator, with no service account configured
        return {"Authorization": f"Bearer {await self._tokens.get()}"}

    def _client_timeout(self) -> aiohttp.ClientTimeout:
        t = self._timeout
        return aiohttp.ClientTimeout(total=None, connect=t, sock_connect=t, sock_read=t)

    async def _stat(self, full_key: str) -> ObjectInfo:
        try:
            meta = await self._client.download_metadata(
                self._bucket, full_key, timeout=self._client_timeout())
            return object_info(meta)
        except Exception as exc:
            raise self._error(exc) from None

    def _error(self, exc: BaseException, **kwargs: Any) -> GatewayError:
        if isinstance(exc, GoogleError | aiohttp.ClientResponseError) and self._tokens and \
                getattr(exc, "status", 0) == 401:
            self._tokens.forget()  # the token went stale: the next call gets a new one
        return storage_error(exc, self.name, **kwargs)

    async def open(self, key: str) -> RemoteObject:
        full_key = self._key(key)
        info = await self._heads.get(full_key, lambda: self._stat(full_key))
        assert info is not None  # _stat raises instead of returning None
        return RemoteObject(self, full_key, info)

    async def get_range(self, full_key: str, info: ObjectInfo, start: int,
                        length: int) -> HttpRange:
        """One ranged GET of the generation whose validators were announced."""
        generation = info.etag.strip('"')
        try:
            headers = {"Range": f"bytes={start}-{start + length - 1}", **await self._auth()}
            answer = await self._http.get(
                self._object_url(full_key), headers=headers,
                params={"alt": "media", "ifGenerationMatch": generation})
        except Exception as exc:
            raise self._error(exc) from None
        source = ranged_answer(answer, start, length, info.size, self.name, storage_error,
                               self._http.timeout.sock_read)
        if source is not None:
            return source
        self._heads.invalidate(full_key)  # gone or changed: ask again next time
        raise self._error(await error_of(answer), size=info.size)

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        full_key = self._key(key)
        buffer = bytearray()
        size = 0
        session_uri: str | None = None
        write_id = uuid.uuid4().hex
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                # Strictly more than a chunk: the last request always carries bytes.
                while len(buffer) > self._chunk:
                    if session_uri is None:
                        session_uri = await self._start_upload(full_key, write_id)
                    part = bytes(buffer[: self._chunk])
                    del buffer[: self._chunk]
                    await self._send_chunk(session_uri, part, size - len(buffer) - len(part),
                                           None)
            try:
                if session_uri is None:
                    await self._upload_at_once(full_key, bytes(buffer), write_id)
                else:
                    await self._send_chunk(session_uri, bytes(buffer), size - len(buffer),
                                           size)
            except (GoogleError, aiohttp.ClientError, TimeoutError) as exc:
                if (isinstance(exc, GoogleError) and exc.status == 412) or \
                        not await self._stored_by(full_key, write_id):
                    raise
        except BaseException as exc:
            if session_uri is not None:
                await asyncio.shield(self._cancel(full_key, session_uri))
            if isinstance(exc, GoogleError | aiohttp.ClientError | TimeoutError |
                          TokenRefused | ValueError):
                raise self._error(exc, writing=True) from None
            raise
        finally:
            self._heads.invalidate(full_key)
        return size

    async def _upload_at_once(self, full_key: str, body: bytes, write_id: str) -> None:
        try:
            async with asyncio.timeout(self._send_deadline(len(body))):
                # ifGenerationMatch=0: only if no object has the name (never replace).
                await self._client.upload(
                    self._bucket, full_key, body, content_type="application/octet-stream",
                    parameters={"ifGenerationMatch": "0"},
                    metadata={"metadata": {_WRITER: write_id}},
                    timeout=self._client_timeout())
        except aiohttp.ClientResponseError as exc:
            raise GoogleError.from_client_error(exc) from None

    async def _start_upload(self, full_key: str, write_id: str) -> str:
        """Open a resumable upload session; its URI receives the chunks."""
        headers = {"Content-Type": "application/json; charset=UTF-8",
                   "X-Upload-Content-Type": "application/octet-stream", **await self._auth()}
        body = json.dumps({"name": full_key, "metadata": {_WRITER: write_id}})
        async with asyncio.timeout(self._send_deadline(0)), self._http.post(
                self._object_url(full_key, upload=True), data=body, headers=headers,
                params={"uploadType": "resumable", "ifGenerationMatch": "0"}) as answer:
            if answer.status != 200 or "Location" not in answer.headers:
                raise await error_of(answer)
            return answer.headers["Location"]

    async def _send_chunk(self, session_uri: str, body: bytes, start: int,
                          total: int | None) -> None:
        """PUT one chunk: 308 means "go on", 200/201 that the object now exists."""
        end = start + len(body) - 1
        content_range = f"bytes {start}-{end}/{'*' if total is None else total}"
        headers = {"Content-Range": content_range, **await self._auth()}
        async with asyncio.timeout(self._send_deadline(len(body))), self._http.put(
                session_uri, data=io.BytesIO(body), headers=headers) as answer:
            if total is None and answer.status == 308:
                if answer.headers.get("Range", "") != f"bytes=0-{end}":
                    raise GoogleError(502, "incompleteChunk",
                                      "the store did not keep the whole chunk")
                return
            if total is not None and answer.status in (200, 201):
                return
            raise await error_of(answer)

    async def _cancel(self, full_key: str, session_uri: str) -> None:
        """Cancel an upload session (GCS answers 499): its bytes are dropped."""
        try:
            async with asyncio.timeout(self._timeout + 1), self._http.delete(
                    session_uri, headers=await self._auth()) as answer:
                if answer.status not in (204, 404, 410, 499):
                    raise await error_of(answer)
        except Exception as exc:
            # Unfinished sessions are never visible, and GCS drops them after a week.
            log.error("storage %r: could not cancel the upload of %s: %s", self.name,
                      full_key, storage_error(exc, self.name).detail)

    async def _stored_by(self, full_key: str, write_id: str) -> bool:
        """Whether the object under the key is the one this write stored, its answer lost."""
        try:
            meta = await self._client.download_metadata(
                self._bucket, full_key, timeout=self._client_timeout())
        except Exception as exc:
            error = storage_error(exc, self.name)
            if not isinstance(error, ObjectNotFound):
                log.error("storage %r: a write of %s failed and the store cannot say whether "
                          "it was stored (%s); if it was, no recording refers to it",
                          self.name, full_key, error.detail)
            return False
        return bool((meta.get("metadata") or {}).get(_WRITER) == write_id)

    def _send_deadline(self, size: int) -> float:
        """Seconds one upload request may take: the timeout, and once more per MiB.

        aiohttp times reads, not writes: a store that stops taking bytes would hold
        the upload until TCP gives up.
        """
        return self._timeout * (1 + size / _MIB) + 1

    async def delete(self, key: str) -> None:
        full_key = self._key(key)
        try:
            await self._client.delete(self._bucket, full_key, timeout=self._client_timeout())
        except Exception as exc:
            error = self._error(exc)
            if not isinstance(error, ObjectNotFound):
                raise error from None
        finally:
            self._heads.invalidate(full_key)

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int
    ) -> str | None:
        if self._sign_url is None:
            return None  # no service account (an emulator): signed raw paths instead
        try:
            return self._sign_url(self._key(key), content_disposition("attachment", filename),
                                  content_type, expires_in)
        except ValueError as exc:
            raise self._error(exc) from None

    async def ping(self) -> None:
        try:
            await self._client.get_bucket_metadata(self._bucket,
                                                   timeout=self._client_timeout())
        except Exception as exc:
            raise self._error(exc) from None

    async def check(self) -> CheckReport:
        name = f"{self._prefix}gateway-check-{uuid.uuid4()}.md"
        body = f"# Storage check\n\nWritten by the recordings gateway to test {self.name!r}.\n"
        step = "write"
        try:
            await self._client.upload(self._bucket, name, body.encode(),
                                      content_type="text/markdown",
                                      timeout=self._client_timeout())
            step = "read"
            data = await self._read_back(name)
            if data != body.encode():
                raise StorageUnavailable(f"Storage {self.name!r} returned other bytes")
            step = "delete"
            await self._client.delete(self._bucket, name, timeout=self._client_timeout())
        except Exception as exc:
            if step != "write":
                with contextlib.suppress(Exception):
                    await self._client.delete(self._bucket, name,
                                              timeout=self._client_timeout())
            detail = check_detail(exc, self.name)
            raise StorageUnavailable(f"Storage {self.name!r} check failed at {step}: {detail}")\
                from None
        return CheckReport(name, ("write", "read", "delete"))

    async def _read_back(self, name: str) -> bytes:
        """The test object's bytes: through a signed URL when the storage signs them, so
        that the check also proves the key can sign."""
        if self._sign_url is None:
            data: bytes = await self._client.download(self._bucket, name,
                                                      timeout=self._client_timeout())
            return data
        url = self._sign_url(name, content_disposition("attachment", "check.md"),
                             "text/markdown", 60)
        async with self._http.get(url) as answer:
            if answer.status != 200:
                raise await error_of(answer)
            return await answer.read()

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "type": self.backend, "bucket": self._bucket,
                "prefix": self._prefix, "endpoint": self._location}

    async def close(self) -> None:
        return None  # the session is closed by whoever opened it
