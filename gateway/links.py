"""Signed, time-limited raw links that play without any header (`<audio src>`, curl).

A link carries, under its HMAC, the method it allows (GET, which includes HEAD),
the path, the expiry, who asked for it (`by`: the principal's id as the access log
names it) and where the bytes are (`loc`): storage name and backend, user id,
session uid, media type and format. Serving it therefore needs
no catalog or upstream call, which matters in sidecar mode where a link arrives
without the credentials the upstream would ask for. `loc` holds nothing the
recording's own JSON does not show; a deleted recording's objects are gone from
storage first, so its links answer 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from yarl import URL

from gateway.auth import UrlSigner
from gateway.errors import Unauthorized
from gateway.media import is_supported
from gateway.models import SESSION_UID_RE, MediaFile, Recording
from gateway.storage.config import NAME_RE

DISPOSITIONS = ("inline", "attachment")
SIGNED_METHOD = "GET"
_BY_RE = re.compile(r"[A-Za-z0-9:_-]{1,64}")
_LOC_RE = re.compile(
    rf"(?P<storage>{NAME_RE.pattern})\.(?P<backend>[a-z0-9]+)\.(?P<user>[0-9]{{1,16}})"
    rf"\.(?P<session>{SESSION_UID_RE.pattern})\.(?P<type>[a-z]+)\.(?P<format>[a-z0-9]+)"
)


@dataclass(frozen=True, slots=True)
class MediaLocation:
    """Where one media file's bytes are, as a signed link states it."""

    storage_name: str
    storage_backend: str
    user_id: int
    session_uid: str
    type: str
    format: str

    @classmethod
    def of(cls, recording: Recording, media: MediaFile) -> MediaLocation:
        return cls(media.storage_name, media.storage_backend, recording.user_id,
                   recording.session_uid, media.type, media.format)

    def encode(self) -> str:
        return ".".join((self.storage_name, self.storage_backend, str(self.user_id),
                         self.session_uid, self.type, self.format))

    @classmethod
    def parse(cls, value: str) -> MediaLocation | None:
        match = _LOC_RE.fullmatch(value)
        if match is None or not is_supported(match["type"], match["format"]):
            return None
        return cls(match["storage"], match["backend"], int(match["user"]), match["session"],
                   match["type"], match["format"])

    def key(self, recording_id: int) -> str:
        return f"recordings/{self.user_id}/{recording_id}/{self.session_uid}.{self.format}"


def signed_raw_url(signer: UrlSigner, path: str, location: MediaLocation, *,
                   expires_in: int, disposition: str, by: str, prefix: str = "") -> str:
    """`prefix + path?expires=&disposition=&by=&loc=&signature=`, for GET (and HEAD)."""
    if _BY_RE.fullmatch(by) is None:
        raise ValueError(f"not a principal id: {by!r}")
    expires, signature = signer.sign(path, expires_in,
                                     _context(SIGNED_METHOD, by, disposition, location.encode()))
    query = {"expires": str(expires), "disposition": disposition, "by": by,
             "loc": location.encode(), "signature": signature}
    return prefix + str(URL.build(path=path, query=query))


@dataclass(frozen=True, slots=True)
class SignedRaw:
    """What a verified link allows: these bytes, shown this way, on behalf of `by`."""

    location: MediaLocation
    disposition: str
    by: str


def verify_signed_raw(signer: UrlSigner, method: str, path: str, query: dict[str, str]
                      ) -> SignedRaw:
    """What a signed raw link allows, or 401.

    HEAD is GET without the body (RFC 9110 §9.3.2), so a GET link answers it too.
    """
    disposition, loc, by = (query.get("disposition", ""), query.get("loc", ""),
                            query.get("by", ""))
    signed_method = SIGNED_METHOD if method in ("GET", "HEAD") else method
    signer.verify(path, query.get("expires", ""), query.get("signature", ""),
                  _context(signed_method, by, disposition, loc))
    location = MediaLocation.parse(loc)
    if location is None or disposition not in DISPOSITIONS or _BY_RE.fullmatch(by) is None:
        raise Unauthorized("Invalid signed URL")  # signed by us, yet not ours: refuse
    return SignedRaw(location, disposition, by)


def _context(method: str, by: str, disposition: str, loc: str) -> str:
    # Newlines cannot occur in any part (each is checked against a strict pattern
    # before use), so the joined context is unambiguous.
    return f"{method}\n{by}\n{disposition}\n{loc}"
