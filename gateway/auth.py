"""Credentials → Principal: API keys, and HMAC-signed URLs for the browser."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.cache import TtlCache
from gateway.catalog import Catalog
from gateway.errors import Unauthorized
from gateway.models import Principal

API_KEY_HEADER = "X-API-Key"
_KEY_PREFIX = "gw_"
_PREFIX_LENGTH = 12
_MAX_KEY_LENGTH = 256


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key: str  # shown once, never stored
    key_hash: str
    prefix: str  # stored in clear so operators can tell keys apart and revoke them


def hash_key(key: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(key.encode()).hexdigest()


def generate_api_key() -> NewApiKey:
    key = _KEY_PREFIX + secrets.token_urlsafe(32)
    return NewApiKey(key, hash_key(key), key[:_PREFIX_LENGTH])


class ApiKeyAuthenticator:
    """Resolves `X-API-Key` through the catalog, keeping hits for the cache TTL."""

    def __init__(self, catalog: Catalog, cache_ttl: float) -> None:
        self._catalog = catalog
        self._cache: TtlCache[str, Principal] = TtlCache(cache_ttl)

    def caches(self) -> dict[str, TtlCache[str, Principal]]:
        """For metrics: the cache of API keys seen lately."""
        return {"api_keys": self._cache}

    async def principal(self, key: str | None) -> Principal:
        """The key's principal; a missing and a wrong key get the same 401."""
        if not key or len(key) > _MAX_KEY_LENGTH or not key.isascii():
            raise Unauthorized()
        key_hash = hash_key(key)
        principal = await self._cache.get(
            key_hash, lambda: self._catalog.principal_for_key(key_hash)
        )
        if principal is None:
            raise Unauthorized()
        return principal


class UrlSigner:
    """HMAC-SHA256 signatures for time-limited raw paths.

    The first key signs; every key verifies, so keys can be rotated by putting
    the new one first and dropping the old one after the longest expiry.
    """

    def __init__(self, keys: tuple[bytes, ...], clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._keys = keys
        self._clock = clock

    @staticmethod
    def _message(path: str, expires: int, context: str) -> bytes:
        return f"{path}\n{expires}\n{context}".encode()

    def _mac(self, key: bytes, message: bytes) -> str:
        digest = hmac.new(key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, path: str, expires_in: int, context: str = "") -> tuple[int, str]:
        """(expires, signature) authorizing `path` and `context` until `expires`."""
        expires = int(self._clock()) + expires_in
        return expires, self._mac(self._keys[0], self._message(path, expires, context))

    def verify(self, path: str, expires: str, signature: str, context: str = "") -> None:
        """Raise Unauthorized unless the signature is ours and has not expired."""
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if not (expires.isascii() and expires.isdigit()) or len(expires) > 12:
            raise Unauthorized("Invalid signed URL")
        message = self._message(path, int(expires), context)
        given = signature.encode("utf-8", "replace")
        valid = False
        for key in self._keys:  # compare_digest with every key: timing tells nothing
            valid |= hmac.compare_digest(self._mac(key, message).encode(), given)
        if not valid:
            raise Unauthorized("Invalid signed URL")
        if int(expires) < self._clock():
            raise Unauthorized("Signed URL has expired")
