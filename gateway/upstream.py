"""The upstream meeting API (sidecar mode): one long-lived client session to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.errors import GatewayError, GatewayTimeout

MAX_JSON_BYTES = 16 * 1024 * 1024
"""Largest JSON answer read for filtering; recording lists are far smaller."""

# RFC 9110 §7.6.1: connection-specific fields a proxy must not forward, plus the
# fields aiohttp sets itself for the next hop (Host, Content-Length when chunked).
HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
    "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
))


class UpstreamError(GatewayError):
    status = 502
    default_detail = "The upstream meeting API did not answer properly"


def end_to_end(headers: CIMultiDictProxy[str] | CIMultiDict[str],
               drop: Iterable[str] = ()) -> CIMultiDict[str]:
    """The headers without hop-by-hop fields, including those named in Connection."""
    named = {token.strip().lower() for value in headers.getall(hdrs.CONNECTION, ())
             for token in value.split(",")}
    skip = HOP_BY_HOP | named | {d.lower() for d in drop}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in skip)


def forwarded_headers(request: web.BaseRequest) -> CIMultiDict[str]:
    """The request's end-to-end headers for the upstream, with X-Forwarded-*."""
    headers = end_to_end(request.headers, drop=("Host", "Expect"))
    peer = request.remote or ""
    previous = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{previous}, {peer}" if previous else peer
    # Behind another proxy, keep what the first one recorded about the client.
    headers.setdefault("X-Forwarded-Proto", request.scheme)
    headers.setdefault("X-Forwarded-Host", request.host)
    return headers


def map_client_error(exc: BaseException) -> GatewayError:
    """aiohttp client failures → 504 for time, 502 for everything else."""
    if isinstance(exc, asyncio.TimeoutError):  # includes aiohttp's ServerTimeoutError
        return GatewayTimeout("The upstream meeting API did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError("The upstream meeting API is unreachable")
    return UpstreamError(f"The upstream meeting API failed ({type(exc).__name__})")


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    status: int
    body: Any  # the parsed JSON; None when the answer had no JSON body
    headers: CIMultiDictProxy[str]


class Upstream:
    """Requests to the meeting API, with explicit timeouts and no cookie jar."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base = URL(base_url)
        self.session = session

    @classmethod
    def session_for(cls, *, timeout: float, connections: int,
                    trace_configs: Sequence[aiohttp.TraceConfig] = ()) -> aiohttp.ClientSession:
        """The session to the meeting API; `trace_configs` see every call (request id, metrics)."""
        return aiohttp.ClientSession(
            # No total limit: a proxied download may last hours; each read and the
            # connect are bounded instead.
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout,
                                          sock_read=timeout),
            connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
            cookie_jar=aiohttp.DummyCookieJar(),  # the gateway is not a user agent
            trace_configs=list(trace_configs) or None,
        )

    def url(self, path_qs: str) -> URL:
        """The upstream URL for a path and query, the base URL's own path kept in front."""
        return URL(str(self.base).rstrip("/") + path_qs, encoded=True)

    async def get_json(self, method: str, path_qs: str,
                       headers: Mapping[str, str]) -> JsonAnswer:
        """One JSON exchange; errors of the network become 502/504."""
        try:
            async with self.session.request(
                method, self.url(path_qs), headers=headers, allow_redirects=False,
            ) as resp:
                # read(n) returns what has arrived so far, not the whole body: gather
                # the chunks to the end, within the limit.
                parts: list[bytes] = []
                size = 0
                async for part in resp.content.iter_any():
                    size += len(part)
                    if size > MAX_JSON_BYTES:
                        raise UpstreamError("The upstream meeting API answered too much JSON")
                    parts.append(part)
                raw = b"".join(parts)
                body = None
                if raw.strip():
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise UpstreamError(
                            f"The upstream meeting API answered {resp.status} without valid "
                            "JSON") from None
                return JsonAnswer(resp.status, body, resp.headers)
        except GatewayError:
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise map_client_error(exc) from None

    async def ping(self) -> None:
        """Any HTTP answer means the meeting API is up; no answer means it is not."""
        try:
            async with self.session.get(self.url("/"), allow_redirects=False) as resp:
                await resp.release()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise map_client_error(exc) from None
