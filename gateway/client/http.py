"""GatewayClient: the gateway's HTTP API as the command line uses it.

One aiohttp session per command; every failure becomes a ClientFailure that names
what went wrong in a person's words and carries the exit status it ends with.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from enum import IntEnum
from typing import Any

import aiohttp
from yarl import URL

from gateway import __version__
from gateway.auth import API_KEY_HEADER
from gateway.settings import ClientSettings

CONNECT_TIMEOUT = 10.0
"""Seconds to open a connection: a gateway that takes longer is as good as down."""
READ_TIMEOUT = 300.0
"""Seconds to wait for data once a request is sent; an upload's answer comes only after
the gateway has stored (and, on local disk, fsynced) the whole file."""
MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""Largest JSON answer read; a page of 200 recordings is far smaller."""


class ExitStatus(IntEnum):
    """How a client command ends; scripts can tell these apart (docs/cli.md)."""

    OK = 0
    FAILURE = 1  # the gateway refused the request (409, 413, 422, ...) or failed (5xx)
    USAGE = 2  # bad arguments or settings, no key given, a missing or empty file
    NOT_FOUND = 3  # 404: no such recording or media file, or one this key may not see
    REFUSED = 4  # 401, 403, 429: a wrong or revoked key, a role too low, too many tries
    UNREACHABLE = 5  # no answer: connection refused, unknown host, timeout, broken TLS


class ClientFailure(Exception):
    """A failure the command reports on one line and ends with `status`."""

    def __init__(self, message: str, status: ExitStatus = ExitStatus.FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class HttpFailure(ClientFailure):
    """The gateway answered with an error status and its `{"detail": ...}`."""

    def __init__(self, http_status: int, detail: str) -> None:
        self.http_status = http_status
        self.detail = detail
        super().__init__(f"the gateway answered {http_status}: {detail}",
                         status_for(http_status))


def status_for(http_status: int) -> ExitStatus:
    """The exit status an HTTP error status ends a command with."""
    if http_status == 404:
        return ExitStatus.NOT_FOUND
    if http_status in (401, 403, 429):
        return ExitStatus.REFUSED
    return ExitStatus.FAILURE


def _network_failure(exc: BaseException, url: URL) -> ClientFailure:
    where = f"{url.scheme}://{url.raw_authority}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        reason = os.strerror(error.errno) if error.errno else str(error) or type(error).__name__
        return ClientFailure(f"cannot reach the gateway at {where} ({reason})",
                             ExitStatus.UNREACHABLE)
    if isinstance(exc, asyncio.TimeoutError):  # includes aiohttp's ServerTimeoutError
        return ClientFailure(f"the gateway at {where} did not answer in time",
                             ExitStatus.UNREACHABLE)
    return ClientFailure(f"the connection to the gateway at {where} broke "
                         f"({type(exc).__name__}: {exc})", ExitStatus.UNREACHABLE)


class GatewayClient:
    """Requests to one gateway with one API key; answers are the API's JSON."""

    def __init__(self, settings: ClientSettings, session: aiohttp.ClientSession) -> None:
        self.base = URL(settings.url)
        self._session = session

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: ClientSettings) -> AsyncIterator[GatewayClient]:
        """A client whose session closes when the block ends."""
        headers = {"User-Agent": f"recordings-gateway-cli/{__version__}"}
        if settings.api_key:
            headers[API_KEY_HEADER] = settings.api_key
        async with aiohttp.ClientSession(
            headers=headers,
            # No total limit: an upload of gigabytes takes what it takes; the connect
            # and each wait for data are bounded instead.
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT,
                                          sock_connect=CONNECT_TIMEOUT,
                                          sock_read=READ_TIMEOUT),
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as session:
            yield cls(settings, session)

    def url(self, *segments: str | int) -> URL:
        """The URL of an API path below the base URL (whose own path is kept)."""
        url = self.base
        for segment in segments:
            url = url / str(segment)
        return url

    async def list_recordings(self, *, limit: int, offset: int,
                              meeting_id: int | None = None) -> list[dict[str, Any]]:
        """One page of `GET /recordings`, newest first."""
        params = {"limit": str(limit), "offset": str(offset)}
        if meeting_id is not None:
            params["meeting_id"] = str(meeting_id)
        answer = await self._json("GET", self.url("recordings"), params=params)
        recordings = answer.get("recordings") if isinstance(answer, dict) else None
        if not isinstance(recordings, list):
            raise ClientFailure("the gateway's answer to GET /recordings has no "
                                "'recordings' list")
        return [r for r in recordings if isinstance(r, dict)]

    async def get_recording(self, recording_id: int) -> dict[str, Any]:
        """`GET /recordings/{id}`."""
        return await self._object("GET", self.url("recordings", recording_id))

    async def create_recording(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /recordings`: a new recording, `in_progress`."""
        return await self._object("POST", self.url("recordings"), json=dict(fields))

    async def complete_recording(self, recording_id: int) -> dict[str, Any]:
        """`POST /recordings/{id}/complete`."""
        return await self._object("POST", self.url("recordings", recording_id, "complete"))

    async def upload_media(self, recording_id: int, body: AsyncIterable[bytes], size: int,
                           *, media_type: str, media_format: str) -> dict[str, Any]:
        """`POST /recordings/{id}/media`, the body streamed with its exact length.

        Content-Length rather than chunked: the gateway can refuse an upload over its
        limit (413) before a byte of it is sent.
        """
        return await self._object(
            "POST", self.url("recordings", recording_id, "media"),
            params={"type": media_type, "format": media_format}, data=body,
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )

    async def playback_url(self, recording_id: int, media_id: int) -> tuple[str, int]:
        """A signed link that plays the media file in a browser, and its lifetime (s)."""
        answer = await self._object(
            "GET", self.url("recordings", recording_id, "media", media_id, "playback-url"))
        link, expires_in = answer.get("playback_url"), answer.get("expires_in")
        if not isinstance(link, str) or not isinstance(expires_in, int):
            raise ClientFailure("the gateway's playback-url answer lacks playback_url or "
                                "expires_in")
        # A bare path (no GATEWAY_PUBLIC_URL) is on the host the client talks to. Joined
        # as text: the signed query must reach the gateway exactly as it was signed.
        if link.startswith("/"):
            link = f"{self.base.scheme}://{self.base.raw_authority}{link}"
        return link, expires_in

    async def _object(self, method: str, url: URL, **kwargs: Any) -> dict[str, Any]:
        answer = await self._json(method, url, **kwargs)
        if not isinstance(answer, dict):
            raise ClientFailure(f"the gateway's answer to {method} {url.path} is not a "
                                "JSON object")
        return answer

    async def _json(self, method: str, url: URL, **kwargs: Any) -> Any:
        """One request; its JSON answer, or a ClientFailure for an error or no answer."""
        try:
            async with self._session.request(method, url, allow_redirects=False,
                                             **kwargs) as resp:
                if 300 <= resp.status < 400:
                    resp.close()
                    raise ClientFailure(
                        f"{url} redirects to {resp.headers.get('Location', 'elsewhere')}: "
                        "give the gateway's own URL with --url or GATEWAY_URL")
                raw = await _read_limited(resp)
                if resp.status >= 400:
                    # An upload refused early must not send the rest of its file.
                    resp.close()
                    raise HttpFailure(resp.status, _detail(raw, resp.reason))
                try:
                    return json.loads(raw)
                except ValueError:
                    raise ClientFailure(
                        f"{url.scheme}://{url.raw_authority} answered {method} {url.path} "
                        f"with {resp.status} and no JSON: is it a recordings gateway?"
                    ) from None
        except ClientFailure:
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _network_failure(exc, url) from None


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for part in resp.content.iter_any():
        size += len(part)
        if size > MAX_ANSWER_BYTES:
            raise ClientFailure(f"the answer to {resp.method} {resp.url.path} is larger "
                                f"than {MAX_ANSWER_BYTES} bytes")
        parts.append(part)
    return b"".join(parts)


def _detail(raw: bytes, reason: str | None) -> str:
    """The gateway's `detail`, or what a non-gateway answer said instead."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    return reason or "no detail"
