"""Recordings in S3 or an S3-compatible store (MinIO), through aiobotocore.

Reads: the object's validators come from a HEAD kept for the cache TTL, so the
gateway decides ranges and preconditions itself (RFC 9110, the same as for local
files) and then asks S3 for exactly one normalized range per GET (the whole object
without a Range), with If-Match so that the bytes belong to the validators it
announced.
Writes: a multipart upload of fixed-size parts (a single PUT when the body is
smaller than one part), aborted on any failure, so nothing partial ever exists; a
write whose answer was lost after the store kept the object still counts as done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterable, Collection
from typing import Any

import aiohttp
from aiobotocore.response import AioReadTimeoutError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    ReadTimeoutError,
)

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
from gateway.storage.base import KEY_RE, CheckReport, ObjectInfo, ObjectNotFound, check_key
from gateway.storage.ranged import HttpRange, RemoteObject, ranged_answer

log = logging.getLogger(__name__)

SIGNED_GET_LIFETIME = 900
"""Presigned GETs the gateway makes for itself are reused for most of their life."""
ATTEMPTS = 2
"""Tries per storage call (botocore's standard retry mode); its backoff is under 1 s."""
_MIB = 1024 * 1024
_XML_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchBucket"})
_THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                        "ServiceUnavailable", "503", "TooManyRequests"})
_CHANGED = frozenset({"PreconditionFailed", "412"})
_WRITER = "gateway-write"
"""Object metadata naming the write that stored it. When the answer to a PUT or to a
multipart completion is lost, botocore's retry meets the object its first try stored
(412 under If-None-Match); this tells that apart from another writer's object."""


def storage_error(exc: BaseException, storage: str, *, size: int | None = None) -> GatewayError:
    """Map a botocore/aiohttp failure to the gateway's answer (never a 500)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or code
        if code in _NOT_FOUND:
            if code == "NoSuchBucket":
                log.error("storage %r: the bucket does not exist", storage)
            return ObjectNotFound()
        if code == "InvalidRange":
            return RangeNotSatisfiable(
                headers={"Content-Range": f"bytes */{size}"} if size is not None else None)
        if code in _THROTTLED:
            return ServiceUnavailable(f"Storage {storage!r} is throttling requests; retry",
                                      headers={"Retry-After": "1"})
        if code in _CHANGED:
            return ServiceUnavailable(f"The object changed in storage {storage!r}; retry",
                                      headers={"Retry-After": "0"})
        return StorageUnavailable(f"Storage {storage!r} answered {code}: {message}")
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | AioReadTimeoutError
                  | asyncio.TimeoutError):
        return GatewayTimeout(f"Storage {storage!r} did not answer in time")
    if isinstance(exc, NoCredentialsError):
        return StorageUnavailable(f"Storage {storage!r} has no credentials")
    if isinstance(exc, BotoCoreError | aiohttp.ClientError | OSError):
        return StorageUnavailable(f"Storage {storage!r} is unreachable ({type(exc).__name__})")
    raise exc


async def _error_body(answer: aiohttp.ClientResponse) -> bytes:
    try:
        return await answer.content.read(4096)
    except (TimeoutError, aiohttp.ClientError):
        return b""
    finally:
        answer.close()


def _error_code(body: bytes, status: int) -> str:
    match = _XML_CODE.search(body)
    return match[1].decode(errors="replace") if match else str(status)


def _http_error(status: int, code: str) -> ClientError:
    """A botocore-shaped error for an answer of the plain session, mapped like the rest."""
    return ClientError({"Error": {"Code": code, "Message": f"HTTP {status}"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def _etag(value: str) -> str:
    value = value.strip()
    return value if value.startswith('"') else f'"{value}"'


class S3Storage:
    """A bucket (and key prefix) of S3 or an S3-compatible store."""

    def __init__(
        self, name: str, backend: str, client: Any, signing_client: Any,
        http: aiohttp.ClientSession, *, bucket: str, prefix: str, part_size: int,
        cache_ttl: float, location: str, timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.backend = backend
        self._client = client
        self._signer = signing_client
        self._bucket = bucket
        self._prefix = prefix
        self._part_size = part_size
        self._location = location
        self._http = http
        self._timeout = timeout
        self._heads: TtlCache[str, ObjectInfo] = TtlCache(cache_ttl)
        self._get_urls: TtlCache[str, str] = TtlCache(SIGNED_GET_LIFETIME * 2 / 3)

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    def caches(self) -> dict[str, TtlCache[str, Any]]:
        """For metrics: object validators (HEAD answers) and the GET URLs signed for reads."""
        return {"object_info": self._heads, "signed_urls": self._get_urls}

    async def _head(self, full_key: str) -> ObjectInfo:
        try:
            head = await self._client.head_object(Bucket=self._bucket, Key=full_key)
        except Exception as exc:
            raise storage_error(exc, self.name) from None
        return ObjectInfo(int(head["ContentLength"]), _etag(head["ETag"]),
                          int(head["LastModified"].timestamp()))

    async def open(self, key: str) -> RemoteObject:
        full_key = self._key(key)
        info = await self._heads.get(full_key, lambda: self._head(full_key))
        assert info is not None  # _head raises instead of returning None
        return RemoteObject(self, full_key, info)

    async def _signed_get(self, full_key: str) -> str:
        url: str = await self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": full_key},
            ExpiresIn=SIGNED_GET_LIFETIME)
        return url

    async def get_range(self, full_key: str, info: ObjectInfo, start: int,
                        length: int) -> HttpRange:
        """One ranged GET, with If-Match so the bytes match the validators we announced.

        It goes through a presigned URL kept for a while and a plain aiohttp session:
        botocore costs milliseconds of CPU per call (building, signing, parsing), which
        a request for 64 KiB of a seek cannot afford.
        """
        headers = {"If-Match": info.etag}
        if length != info.size:  # the whole object is a plain GET, as a download is
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
            body = await _error_body(answer)
            self._heads.invalidate(full_key)  # gone or changed: ask again next time
            code = _error_code(body, answer.status)
            if code in ("AccessDenied", "ExpiredToken", "SignatureDoesNotMatch",
                        "TokenRefreshRequired") and attempt == 1:
                self._get_urls.invalidate(full_key)  # our URL went stale: sign anew, once
                continue
            raise storage_error(_http_error(answer.status, code), self.name, size=info.size)
        raise AssertionError("unreachable")  # pragma: no cover

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        full_key = self._key(key)
        buffer = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        metadata = {_WRITER: uuid.uuid4().hex}
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                while len(buffer) >= self._part_size:
                    if upload_id is None:
                        created = await self._client.create_multipart_upload(
                            Bucket=self._bucket, Key=full_key, Metadata=metadata)
                        upload_id = created["UploadId"]
                    part = bytes(buffer[: self._part_size])
                    del buffer[: self._part_size]
                    parts.append(await self._upload_part(full_key, upload_id, len(parts) + 1,
                                                         part))
            if upload_id is not None and buffer:
                parts.append(await self._upload_part(full_key, upload_id, len(parts) + 1,
                                                     bytes(buffer)))
            try:
                # If-None-Match: *: never replace an object (S3 conditional writes), as
                # link() does on local disk.
                if upload_id is None:
                    async with asyncio.timeout(self._send_deadline(len(buffer))):
                        await self._client.put_object(Bucket=self._bucket, Key=full_key,
                                                      Body=bytes(buffer), Metadata=metadata,
                                                      IfNoneMatch="*")
                else:
                    await self._client.complete_multipart_upload(
                        Bucket=self._bucket, Key=full_key, UploadId=upload_id,
                        MultipartUpload={"Parts": parts}, IfNoneMatch="*")
            except (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError):
                if not await self._stored_by(full_key, metadata[_WRITER]):
                    raise
        except BaseException as exc:
            if upload_id is not None:
                await asyncio.shield(self._abort(full_key, upload_id))
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get(
                    "Code") in _CHANGED:
                raise Conflict("A media file of this format already exists for the recording")\
                    from None
            if isinstance(exc, ClientError | BotoCoreError | aiohttp.ClientError | TimeoutError):
                raise storage_error(exc, self.name) from None
            raise
        finally:
            self._heads.invalidate(full_key)
        return size

    async def _stored_by(self, full_key: str, write_id: str) -> bool:
        """Whether the object under the key is the one this write stored, its answer lost."""
        try:
            head = await self._client.head_object(Bucket=self._bucket, Key=full_key)
        except (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
            error = storage_error(exc, self.name)
            if not isinstance(error, ObjectNotFound):
                log.error("storage %r: a write of %s failed and the store cannot say whether "
                          "it was stored (%s); if it was, no recording refers to it",
                          self.name, full_key, error.detail)
            return False
        return bool(head.get("Metadata", {}).get(_WRITER) == write_id)

    async def _upload_part(self, full_key: str, upload_id: str, number: int,
                           body: bytes) -> dict[str, Any]:
        async with asyncio.timeout(self._send_deadline(len(body))):
            answer = await self._client.upload_part(
                Bucket=self._bucket, Key=full_key, UploadId=upload_id, PartNumber=number,
                Body=body)
        return {"ETag": answer["ETag"], "PartNumber": number}

    def _send_deadline(self, size: int) -> float:
        """Seconds one upload request may take, tries included: the timeout once, and
        once more per MiB of body.

        aiohttp times reads, not writes: a store that stops taking bytes (a dead network
        path) would hold the upload until TCP gives up, many minutes later.
        """
        return ATTEMPTS * self._timeout * (1 + size / _MIB) + 1

    async def _abort(self, full_key: str, upload_id: str) -> None:
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=full_key, UploadId=upload_id)
        except Exception as exc:
            # A lifecycle rule for incomplete multipart uploads is the last resort.
            log.error("storage %r: could not abort multipart upload of %s: %s",
                      self.name, full_key, storage_error(exc, self.name).detail)

    async def remove_partial_uploads(self, *, keys: Collection[str],
                                     started_before: float) -> int:
        """Abort unfinished multipart uploads to `keys`, and of any recording key started
        before `started_before`; how many.

        S3 has no lock that dies with a process: for uploads nobody is known to have
        abandoned, age is the only sign that none will finish them. Keys of any other
        shape under the prefix are not ours.
        """
        doomed = {self._key(key) for key in keys}
        removed = 0
        paginator = self._client.get_paginator("list_multipart_uploads")
        try:
            async for page in paginator.paginate(Bucket=self._bucket,
                                                 Prefix=f"{self._prefix}recordings/"):
                for upload in page.get("Uploads", []):
                    key: str = upload["Key"]
                    if key not in doomed and (
                            not KEY_RE.fullmatch(key[len(self._prefix):])
                            or upload["Initiated"].timestamp() >= started_before):
                        continue
                    try:
                        await self._client.abort_multipart_upload(
                            Bucket=self._bucket, Key=key, UploadId=upload["UploadId"])
                    except ClientError as exc:
                        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                            raise
                        continue  # another worker aborted it first
                    log.info("storage %r: aborted the unfinished upload of %s, started %s",
                             self.name, key, upload["Initiated"].isoformat())
                    removed += 1
        except Exception as exc:
            raise storage_error(exc, self.name) from None
        return removed

    async def delete(self, key: str) -> None:
        full_key = self._key(key)
        try:
            await self._client.delete_object(Bucket=self._bucket, Key=full_key)
        except Exception as exc:
            error = storage_error(exc, self.name)
            if not isinstance(error, ObjectNotFound):
                raise error from None
        finally:
            self._heads.invalidate(full_key)

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int
    ) -> str | None:
        url: str = await self._signer.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self._bucket,
                "Key": self._key(key),
                "ResponseContentDisposition": content_disposition("attachment", filename),
                "ResponseContentType": content_type,
            },
            ExpiresIn=expires_in,
        )
        return url

    async def ping(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self._bucket)
        except Exception as exc:
            raise storage_error(exc, self.name) from None

    async def check(self) -> CheckReport:
        name = f"{self._prefix}gateway-check-{uuid.uuid4()}.md"
        body = f"# Storage check\n\nWritten by the recordings gateway to test {self.name!r}.\n"
        step = "write"
        try:
            await self._client.put_object(Bucket=self._bucket, Key=name, Body=body.encode(),
                                          ContentType="text/markdown")
            step = "read"
            answer = await self._client.get_object(Bucket=self._bucket, Key=name)
            async with answer["Body"] as stream:
                if await stream.read() != body.encode():
                    raise StorageUnavailable(f"Storage {self.name!r} returned other bytes")
            step = "delete"
            await self._client.delete_object(Bucket=self._bucket, Key=name)
        except Exception as exc:
            if step != "write":
                with contextlib.suppress(Exception):
                    await self._client.delete_object(Bucket=self._bucket, Key=name)
            detail = _check_detail(exc, self.name)
            raise StorageUnavailable(f"Storage {self.name!r} check failed at {step}: {detail}")\
                from None
        return CheckReport(name, ("write", "read", "delete"))

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "type": self.backend, "bucket": self._bucket,
                "prefix": self._prefix, "endpoint": self._location}

    async def close(self) -> None:
        return None  # the clients are closed by whoever opened them


def _check_detail(exc: BaseException, storage: str) -> str:
    """The storage's own words for a failed check (code and message), no secrets."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Error')}: {error.get('Message', '')}".rstrip(": ")
    if isinstance(exc, GatewayError):
        return exc.detail
    try:
        return storage_error(exc, storage).detail
    except BaseException:
        return type(exc).__name__
