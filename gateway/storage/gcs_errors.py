"""How Google Cloud Storage fails, in the gateway's terms (docs/storage.md, Error mapping).

The JSON API answers errors as `{"error": {"code", "message", "errors": [{"reason"}]}}`;
they become the gateway's own errors, never a 500, with GCS's reason and message in
the detail and no secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiohttp

from gateway.errors import (
    Conflict,
    GatewayError,
    GatewayTimeout,
    RangeNotSatisfiable,
    ServiceUnavailable,
    StorageUnavailable,
)
from gateway.storage.base import ObjectNotFound
from gateway.storage.gcs_auth import TokenRefused

log = logging.getLogger(__name__)


class GoogleError(Exception):
    """An error answer of the JSON API: its status, reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_body(cls, status: int, body: str) -> GoogleError:
        """Parse `{"error": {"message": ..., "errors": [{"reason": ...}]}}`, or keep a line."""
        reason, message = "", ""
        with contextlib.suppress(ValueError, AttributeError, TypeError, IndexError):
            error = json.loads(body)["error"]
            message = str(error.get("message", ""))
            errors = error.get("errors") or [{}]
            reason = str(errors[0].get("reason", ""))
        if not message:
            message = body.strip().splitlines()[0][:200] if body.strip() else ""
        return cls(status, reason or str(status), message[:300])

    @classmethod
    def from_client_error(cls, exc: aiohttp.ClientResponseError) -> GoogleError:
        # gcloud-aio puts "<reason phrase>: <body>" in the message.
        _, _, body = exc.message.partition(": ")
        return cls.from_body(exc.status, body)


def storage_error(exc: BaseException, storage: str, *, size: int | None = None,
                  writing: bool = False) -> GatewayError:
    """Map a GCS/aiohttp failure to the gateway's answer (never a 500)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, aiohttp.ClientResponseError):
        exc = GoogleError.from_client_error(exc)
    if isinstance(exc, GoogleError):
        if exc.status == 404:
            if "bucket" in exc.message.lower():
                log.error("storage %r: the bucket does not exist", storage)
            return ObjectNotFound()
        if exc.status == 416:
            return RangeNotSatisfiable(
                headers={"Content-Range": f"bytes */{size}"} if size is not None else None)
        if exc.status in (429, 503):
            return ServiceUnavailable(f"Storage {storage!r} is throttling requests; retry",
                                      headers={"Retry-After": "1"})
        if exc.status == 412:
            if writing:
                return Conflict("A media file of this format already exists for the recording")
            return ServiceUnavailable(f"The object changed in storage {storage!r}; retry",
                                      headers={"Retry-After": "0"})
        return StorageUnavailable(f"Storage {storage!r} answered {exc.status} {exc.reason}: "
                                  f"{exc.message}".rstrip(": "))
    if isinstance(exc, TokenRefused):
        return StorageUnavailable(f"Storage {storage!r} refused the service account: {exc}")
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return GatewayTimeout(f"Storage {storage!r} did not answer in time")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return StorageUnavailable(f"Storage {storage!r} is unreachable ({type(exc).__name__})")
    if isinstance(exc, ValueError):  # a key pyjwt or the signer cannot use
        return StorageUnavailable(f"Storage {storage!r} cannot sign with its service account "
                                  f"key ({type(exc).__name__})")
    raise exc


async def error_of(answer: aiohttp.ClientResponse) -> GoogleError:
    try:
        body = (await answer.content.read(8192)).decode(errors="replace")
    except (TimeoutError, aiohttp.ClientError):
        body = ""
    finally:
        answer.close()
    return GoogleError.from_body(answer.status, body)


def check_detail(exc: BaseException, storage: str) -> str:
    """The storage's own words for a failed check (status, reason, message), no secrets."""
    if isinstance(exc, aiohttp.ClientResponseError):
        exc = GoogleError.from_client_error(exc)
    if isinstance(exc, GoogleError):
        return f"{exc.status} {exc.reason}: {exc.message}".rstrip(": ")
    if isinstance(exc, TokenRefused):
        return f"the service account was refused ({exc})"
    if isinstance(exc, GatewayError):
        return exc.detail
    try:
        return storage_error(exc, storage).detail
    except BaseException:
        return type(exc).__name__
