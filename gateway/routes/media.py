"""/recordings/{id}/media: upload, raw bytes (Range), and download links."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.access import require_role
from gateway.access_log import principal_name, remember_principal
from gateway.appkeys import ACCESS, INGEST, RECORDINGS, SETTINGS, SIGNER, STORAGES
from gateway.errors import BadRequest, PayloadTooLarge, Unprocessable
from gateway.links import MediaLocation, signed_raw_url, verify_signed_raw
from gateway.media import (
    FORMATS,
    MEDIA_TYPES,
    content_disposition,
    content_type,
    download_filename,
    is_supported,
)
from gateway.models import Role, Scope
from gateway.routes.params import ID_PATTERN, path_id, principal, query_choice
from gateway.streaming import stream_object

RAW_ROUTE = "media-raw"


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
    recording = await request.app[RECORDINGS].get(path_id(request, "recording_id"),
                                                  Scope.of(who))
    media = await request.app[INGEST].add_media(
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


async def raw_media(request: web.Request) -> web.StreamResponse:
    recording_id = path_id(request, "recording_id")
    if "signature" in request.query:
        # A signed link says where the bytes are: no catalog or upstream call.
        link = verify_signed_raw(request.app[SIGNER], request.method, request.path,
                                 dict(request.query))
        remember_principal(request, f"link:{link.by}")
        location, disposition = link.location, link.disposition
        storage = request.app[STORAGES].for_reading_media(location.storage_name,
                                                          location.storage_backend)
        key, media_type, media_format = (location.key(recording_id), location.type,
                                         location.format)
    else:
        scope = await request.app[ACCESS].scope(request, Role.VIEWER)
        _, media = await request.app[RECORDINGS].find_media(
            recording_id, path_id(request, "media_id"), scope)
        storage = request.app[STORAGES].for_reading_media(media.storage_name,
                                                          media.storage_backend)
        key, media_type, media_format, disposition = (media.storage_key, media.type,
                                                      media.format, "inline")
    obj = await storage.open(key)
    filename = download_filename(recording_id, media_type, media_format)
    return await stream_object(
        request,
        obj,
        content_type=content_type(media_type, media_format),
        content_disposition=content_disposition(disposition, filename),
        max_ranges=request.app[SETTINGS].max_ranges,
    )


async def download_media(request: web.Request) -> web.Response:
    scope = await request.app[ACCESS].scope(request, Role.VIEWER)
    recording_id, media_id = path_id(request, "recording_id"), path_id(request, "media_id")
    recording, media = await request.app[RECORDINGS].find_media(recording_id, media_id, scope)
    settings = request.app[SETTINGS]
    filename = download_filename(recording.id, media.type, media.format)
    mime = content_type(media.type, media.format)
    storage = request.app[STORAGES].for_reading_media(media.storage_name,
                                                      media.storage_backend)
    url = await storage.presigned_url(
        media.storage_key, filename=filename, content_type=mime,
        expires_in=settings.presign_expiry,
    )
    if url is None:
        # The storage cannot sign: hand out our own raw path, signed and time-limited.
        path = request.app.router[RAW_ROUTE].url_for(
            recording_id=str(recording_id), media_id=str(media_id)).path
        url = signed_raw_url(request.app[SIGNER], path, MediaLocation.of(recording, media),
                             expires_in=settings.presign_expiry, disposition="attachment",
                             by=principal_name(request), prefix=settings.public_url)
    return web.json_response({
        "download_url": url,
        "filename": filename,
        "content_type": mime,
        "file_size_bytes": media.file_size_bytes,
        "expires_in": settings.presign_expiry,
    })


async def playback_url(request: web.Request) -> web.Response:
    """A signed link to the raw bytes through the gateway, for `<audio src>` on any storage.

    Unlike /download (a presigned URL straight to object storage where there is one),
    this one always plays through the gateway: same origin, ranges, inline.
    """
    scope = await request.app[ACCESS].scope(request, Role.VIEWER)
    recording_id, media_id = path_id(request, "recording_id"), path_id(request, "media_id")
    recording, media = await request.app[RECORDINGS].find_media(recording_id, media_id, scope)
    settings = request.app[SETTINGS]
    path = request.app.router[RAW_ROUTE].url_for(
        recording_id=str(recording_id), media_id=str(media_id)).path
    url = signed_raw_url(request.app[SIGNER], path, MediaLocation.of(recording, media),
                         expires_in=settings.presign_expiry, disposition="inline",
                         by=principal_name(request), prefix=settings.public_url)
    return web.json_response({"playback_url": url, "expires_in": settings.presign_expiry})


def setup_reads(app: web.Application) -> None:
    """The byte routes the gateway owns in every mode."""
    base = f"/recordings/{{recording_id:{ID_PATTERN}}}/media/{{media_id:{ID_PATTERN}}}"
    # add_get registers HEAD too; raw_media answers it with GET's headers and no body.
    app.router.add_get(f"{base}/raw", raw_media, name=RAW_ROUTE)
    app.router.add_get(f"{base}/download", download_media)
    app.router.add_get(f"{base}/playback-url", playback_url)


def setup_uploads(app: web.Application) -> None:
    """Standalone mode: the bot uploads media files here."""
    app.router.add_post(f"/recordings/{{recording_id:{ID_PATTERN}}}/media", upload_media)
