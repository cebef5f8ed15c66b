"""A stored object → an HTTP response, with ranges and preconditions decided first."""

from __future__ import annotations

import asyncio
import logging
import secrets

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import PreconditionFailed, RangeNotSatisfiable
from gateway.http_range import (
    ByteRange,
    Conditions,
    Decision,
    MultipartBody,
    Outcome,
    Representation,
    evaluate,
    multipart_body,
)
from gateway.storage import ByteSource, StoredObject

log = logging.getLogger(__name__)


class _BodyResponse(web.StreamResponse):
    """A streamed response whose status line and headers wait for the body's first
    bytes, to go out with them in one packet, as web.Response's do: for a small range
    the client is woken once, not twice. A source that writes past the writer
    (sendfile, the transport itself, splice) sends them first with
    `writer.send_headers()`; write_eof() sends them for an answer without a body."""

    _send_headers_immediately = False  # aiohttp's switch, web.Response sets it so too


def _field(headers: CIMultiDictProxy[str], name: str) -> str | None:
    values = headers.getall(name, ())
    # Repeated list fields combine into one value (RFC 9110 §5.3).
    return ", ".join(values) if values else None


def request_conditions(request: web.BaseRequest) -> Conditions:
    headers = request.headers
    return Conditions(
        range=_field(headers, hdrs.RANGE),
        if_range=_field(headers, hdrs.IF_RANGE),
        if_match=_field(headers, hdrs.IF_MATCH),
        if_none_match=_field(headers, hdrs.IF_NONE_MATCH),
        if_modified_since=_field(headers, hdrs.IF_MODIFIED_SINCE),
        if_unmodified_since=_field(headers, hdrs.IF_UNMODIFIED_SINCE),
    )


async def stream_object(
    request: web.Request,
    obj: StoredObject,
    *,
    content_type: str,
    content_disposition: str,
    max_ranges: int,
) -> web.StreamResponse:
    """Answer a GET or HEAD for `obj`; closes it in every case."""
    try:
        info = obj.info
        rep = Representation(info.size, info.etag, info.last_modified)
        decision = evaluate(request.method, request_conditions(request), rep,
                            max_ranges=max_ranges)
        validators: dict[str, str] = {
            hdrs.ETAG: rep.etag,
            hdrs.LAST_MODIFIED: rep.last_modified_http,
            hdrs.CACHE_CONTROL: "private",
        }
        if decision.outcome is Outcome.NOT_MODIFIED:
            # RFC 9110 §15.4.5: a 304 repeats the validators and Cache-Control, no content.
            response = web.StreamResponse(status=304, headers=validators)
            await response.prepare(request)
            await response.write_eof()
            return response
        if decision.outcome is Outcome.PRECONDITION_FAILED:
            raise PreconditionFailed()
        if decision.outcome is Outcome.NOT_SATISFIABLE:
            raise RangeNotSatisfiable(headers={
                hdrs.CONTENT_RANGE: f"bytes */{rep.size}", hdrs.ACCEPT_RANGES: "bytes",
            })
        return await _send(request, obj, decision, rep, validators, content_type,
                           content_disposition)
    finally:
        await obj.close()


async def _send(
    request: web.Request,
    obj: StoredObject,
    decision: Decision,
    rep: Representation,
    validators: dict[str, str],
    content_type: str,
    content_disposition: str,
) -> web.StreamResponse:
    headers = CIMultiDict(validators)
    headers[hdrs.ACCEPT_RANGES] = "bytes"
    headers[hdrs.CONTENT_DISPOSITION] = content_disposition
    headers["X-Content-Type-Options"] = "nosniff"
    multipart = None
    if decision.outcome is Outcome.FULL:
        status, length = 200, rep.size
        headers[hdrs.CONTENT_TYPE] = content_type
    elif decision.outcome is Outcome.PARTIAL:
        (rng,) = decision.ranges
        status, length = 206, rng.length
        headers[hdrs.CONTENT_TYPE] = content_type
        headers[hdrs.CONTENT_RANGE] = rng.content_range(rep.size)
    else:
        multipart = multipart_body(decision.ranges, rep.size, content_type, secrets.token_hex(12))
        status, length = 206, multipart.content_length
        headers[hdrs.CONTENT_TYPE] = multipart.content_type
    # The first (often only) range is fetched before the status line goes out, so
    # that a storage failure can still be answered with a proper error.
    first = None
    if request.method != hdrs.METH_HEAD and length:
        rng = decision.ranges[0] if decision.ranges else ByteRange(0, rep.size - 1)
        first = await obj.read(rng.start, rng.length)
    try:
        return await _write(request, obj, status, headers, length, first, multipart)
    finally:
        if first is not None:
            await first.close()


async def _write(
    request: web.Request,
    obj: StoredObject,
    status: int,
    headers: CIMultiDict[str],
    length: int,
    first: ByteSource | None,
    multipart: MultipartBody | None,
) -> web.StreamResponse:
    response = _BodyResponse(status=status, headers=headers)
    response.content_length = length
    writer = await response.prepare(request)
    assert writer is not None
    if first is None:  # HEAD, or nothing to send
        await response.write_eof()
        return response
    # From here on only bytes flow: a failure can no longer become an error response.
    # Bytes sent past the writer (sendfile) are added to its count for the access log.
    try:
        # (`sent` first: `output_size += await ...` would read the count before the
        # send and write back a stale value over what response.write() added.)
        if multipart is None:
            sent = await first.send(request, response)
            writer.output_size += sent
        else:
            for index, (head, rng) in enumerate(multipart.parts):
                await response.write(head)
                source = first if index == 0 else await obj.read(rng.start, rng.length)
                try:
                    sent = await source.send(request, response)
                    writer.output_size += sent
                finally:
                    if source is not first:
                        await source.close()
            await response.write(multipart.closing)
        await response.write_eof()
    except ConnectionError:
        log.debug("client went away during %s", request.path)
    except asyncio.CancelledError:
        raise
    except Exception:
        # The status line is out; the only honest signal left is a cut connection.
        log.exception("streaming %s failed after the headers were sent", request.path)
        if request.transport is not None:
            request.transport.close()
    return response
