"""Sidecar mode: recording JSON from the upstream (internal fields removed), and a
transparent streaming reverse proxy for every route the gateway does not own."""

from __future__ import annotations

import logging
import re
from typing import Any

import aiohttp
from aiohttp import hdrs, web

from gateway.appkeys import UPSTREAM
from gateway.middlewares import json_error
from gateway.routes.recordings import RECORDING_PATH, TRANSCRIPT_PATH
from gateway.upstream import UpstreamError, end_to_end, forwarded_headers, map_client_error

log = logging.getLogger(__name__)

# Storage locations that an upstream may keep in its recording JSON and that no
# client should see (storage_backend, which the API documents, stays).
_INTERNAL_KEY = re.compile(
    r"(storage_(path|key|uri|url|location)|.*path|.*_key|key|bucket|object_name)", re.I)
_RECORD_LISTS = ("recordings", "media_files")
PROXY_CHUNK = 256 * 1024


def strip_internal(value: Any, *, inside: bool = False) -> Any:
    """Drop storage paths and keys from recordings and their media files, at any depth."""
    if isinstance(value, list):
        return [strip_internal(item, inside=inside) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        key: strip_internal(item, inside=inside or key in _RECORD_LISTS)
        for key, item in value.items()
        if not (inside and _INTERNAL_KEY.fullmatch(key))
    }


async def _filtered(request: web.Request, *, whole_is_recording: bool) -> web.Response:
    headers = forwarded_headers(request)
    headers["Accept-Encoding"] = "identity"  # the JSON is read here, so no compression
    headers.popall(hdrs.CONTENT_LENGTH, None)
    answer = await request.app[UPSTREAM].get_json("GET", request.path_qs, headers)
    if answer.status >= 500:
        # The upstream failed, not the gateway: a 500 from here would say otherwise.
        log.warning("upstream answered %s to GET %s", answer.status, request.path)
        raise UpstreamError(f"The upstream meeting API answered {answer.status}")
    if answer.body is None:
        if answer.status >= 400:  # errors are JSON, even when the upstream's had no body
            return json_error(answer.status,
                              f"The upstream meeting API answered {answer.status}")
        return web.Response(status=answer.status)
    body = strip_internal(answer.body, inside=whole_is_recording and 200 <= answer.status < 300)
    return web.json_response(body, status=answer.status)


async def list_recordings(request: web.Request) -> web.Response:
    return await _filtered(request, whole_is_recording=False)


async def get_recording(request: web.Request) -> web.Response:
    return await _filtered(request, whole_is_recording=True)


async def transcript(request: web.Request) -> web.Response:
    return await _filtered(request, whole_is_recording=False)


async def proxy(request: web.Request) -> web.StreamResponse:
    """Any other method and path, to the upstream and back, streamed both ways."""
    upstream = request.app[UPSTREAM]
    try:
        # Bodies pass as they are (no decompression); the request body is streamed.
        upstream_response = await upstream.session.request(
            request.method, upstream.url(request.raw_path),
            headers=forwarded_headers(request),
            data=request.content if request.body_exists else None,
            allow_redirects=False, auto_decompress=False,
            skip_auto_headers=(hdrs.USER_AGENT, hdrs.ACCEPT, hdrs.ACCEPT_ENCODING,
                               hdrs.CONTENT_TYPE),
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise map_client_error(exc) from None
    async with upstream_response:
        return await _relay(request, upstream_response)


async def _relay(request: web.Request,
                 upstream_response: aiohttp.ClientResponse) -> web.StreamResponse:
    headers = end_to_end(upstream_response.headers)
    response = web.StreamResponse(status=upstream_response.status,
                                  reason=upstream_response.reason, headers=headers)
    await response.prepare(request)
    try:
        async for chunk in upstream_response.content.iter_chunked(PROXY_CHUNK):
            await response.write(chunk)  # waits while the client is slower
        await response.write_eof()
    except ConnectionError:
        log.debug("client went away during proxied %s", request.path)
    except (TimeoutError, aiohttp.ClientError) as exc:
        # The status line is out: cutting the connection is the only signal left.
        log.warning("upstream failed during proxied %s: %s", request.path,
                    type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
    return response


def setup(app: web.Application) -> None:
    """The JSON routes, then the proxy for everything else (registered last)."""
    app.router.add_get("/recordings", list_recordings)
    app.router.add_get(RECORDING_PATH, get_recording)
    app.router.add_get(TRANSCRIPT_PATH, transcript)


def setup_proxy(app: web.Application) -> None:
    app.router.add_route("*", "/{path:.*}", proxy)

