"""/recordings/{id}/media: upload, raw bytes (Range), and download links."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from gateway.appkeys import RECORDINGS, SETTINGS, SIGNER, STORAGES
from gateway.errors import BadRequest, PayloadTooLarge, Unauthorized, Unprocessable
from gateway.media import (
    FORMATS,
    MEDIA_TYPES,
    content_disposition,
    content_type,
    download_filename,
    is_supported,
)
from gateway.models import UNSCOPED, Role, Scope
from gateway.routes.params import ID_PATTERN, path_id, principal, query_choice, require_role
from gateway.streaming import stream_object

RAW_ROUTE = "media-raw"
_DISPOSITIONS = ("inline", "attachment")


async def upload_media(request: web.Request) -> web.Response:
    who = await principal(request)
    require_role(who, Role.RECORDER)
    media_type = query_choice(request, "type", default="audio")
    media_format = query_choice(request, "format", default=None)
    if media_format is None:
        raise Unprocessable(f"Query parameter 'format' is required ({', '.join(FORMATS)})")
    if media_type not in MEDIA_TYPES or not is_supported(media_type, media_format):
        raise Unprocessable(f"Unsupported media type/format {media_type}/{media_format}")
    limit = request.app[SETTINGS].max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"Upload exceeds the limit of {limit} bytes; nothing was kept")
    recordings = request.app[RECORDINGS]
    recording = await recordings.get(path_id(request, "recording_id"), Scope.of(who))
    media = await recordings.add_media(
        recording, media_type, media_format, _request_body(request), limit=limit
    )
    return web.json_response(media.to_json(), status=201)


async def _request_body(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a broken one becomes a 400 (nothing is kept)."""
    try:
        async for chunk in request.content.iter_any():
            yield chunk
    except (HttpProcessingError, ConnectionError) as exc:
        raise BadRequest(f"The upload was interrupted or malformed ({exc.__class__.__name__});"
                         " nothing was kept") from None


def _signed_request_scope(request: web.Request) -> tuple[Scope, str] | None:
    """Verify a signed URL; None when the request carries no signature."""
    query = request.query
    if "signature" not in query:
        return None
    disposition = query.get("disposition", "")
    request.app[SIGNER].verify(
        request.path, query.get("expires", ""), query["signature"], disposition
    )
    if disposition not in ("", *_DISPOSITIONS):
        raise Unauthorized("Invalid signed URL")
    return UNSCOPED, disposition or "inline"


async def raw_media(request: web.Request) -> web.StreamResponse:
    signed = _signed_request_scope(request)
    if signed is None:
        scope, disposition = Scope.of(await principal(request)), "inline"
    else:
        scope, disposition = signed
    recordings = request.app[RECORDINGS]
    recording, media = await recordings.find_media(
        path_id(request, "recording_id"), path_id(request, "media_id"), scope
    )
    storage = recordings.storages.for_reading_media(media.storage_name, media.storage_backend)
    obj = await storage.open(media.storage_key)
    filename = download_filename(recording.id, media.type, media.format)
    return await stream_object(
        request,
        obj,
        content_type=content_type(media.type, media.format),
        content_disposition=content_disposition(disposition, filename),
        max_ranges=request.app[SETTINGS].max_ranges,
    )


async def download_media(request: web.Request) -> web.Response:
    who = await principal(request)
    recording_id, media_id = path_id(request, "recording_id"), path_id(request, "media_id")
    recordings = request.app[RECORDINGS]
    recording, media = await recordings.find_media(recording_id, media_id, Scope.of(who))
    settings = request.app[SETTINGS]
    filename = download_filename(recording.id, media.type, media.format)
    mime = content_type(media.type, media.format)
    storage = request.app[STORAGES].for_reading_media(media.storage_name, media.storage_backend)
    url = await storage.presigned_url(
        media.storage_key, filename=filename, content_type=mime,
        expires_in=settings.presign_expiry,
    )
    if url is None:
        # The storage cannot sign: hand out our own raw path, signed and time-limited.
        path = request.app.router[RAW_ROUTE].url_for(
            recording_id=str(recording_id), media_id=str(media_id)
        ).path
        query = request.app[SIGNER].sign(path, settings.presign_expiry, "attachment")
        url = settings.public_url + str(URL.build(path=path, query=query))
    return web.json_response({
        "download_url": url,
        "filename": filename,
        "content_type": mime,
        "file_size_bytes": media.file_size_bytes,
        "expires_in": settings.presign_expiry,
    })


def setup(app: web.Application) -> None:
    base = f"/recordings/{{recording_id:{ID_PATTERN}}}/media"
    app.router.add_post(base, upload_media)
    # add_get registers HEAD too; raw_media answers it with GET's headers and no body.
    app.router.add_get(f"{base}/{{media_id:{ID_PATTERN}}}/raw", raw_media, name=RAW_ROUTE)
    app.router.add_get(f"{base}/{{media_id:{ID_PATTERN}}}/download", download_media)
