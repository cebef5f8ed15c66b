"""A Google service account: its JSON key (a path or the text itself) and its access tokens.

Stream takes a Google Cloud Storage account as the service account's JSON key, as
downloaded; so does the gateway, either as the file's path or as its text. The key
is read once, checked, and kept out of every repr, log line and error.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
_REFRESH_MARGIN = 300
"""Seconds before its expiry that a token is replaced, so none expires in flight."""


class CredentialsError(ValueError):
    """The service account key cannot be used; the message never quotes the key."""


class TokenRefused(Exception):
    """The token endpoint refused the account: its error code and description."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}" if description else code)
        self.status = status


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """The parts of a service account key the gateway uses."""

    client_email: str
    project_id: str
    token_uri: str
    info: dict[str, Any] = field(repr=False)  # the whole key, private key included


def load_service_account(value: str) -> ServiceAccount:
    """A service account from its JSON text or the path of its JSON file."""
    text = value.strip()
    if not text.startswith("{"):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise CredentialsError(f"cannot read the service account file {value!r} "
                                   f"({reason})") from None
    try:
        info = json.loads(text)
    except ValueError:
        raise CredentialsError("is not a service account JSON key (invalid JSON)") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise CredentialsError('is not a service account JSON key (no "type": '
                               '"service_account")')
    missing = [k for k in ("client_email", "private_key") if not isinstance(info.get(k), str)
               or not info[k]]
    if missing:
        raise CredentialsError(f"the service account key lacks {', '.join(missing)}")
    if "-----BEGIN PRIVATE KEY-----" not in info["private_key"]:
        raise CredentialsError("the service account's private_key is not a PEM private key")
    token_uri = info.get("token_uri") or GOOGLE_TOKEN_URI
    if not isinstance(token_uri, str) or not token_uri.startswith(("https://", "http://")):
        raise CredentialsError("the service account's token_uri is not an http(s) URL")
    return ServiceAccount(info["client_email"], str(info.get("project_id", "")), token_uri,
                          info)


class AccessTokens:
    """OAuth 2.0 access tokens for a service account (RFC 7523 JWT bearer grant).

    One token is shared by every request and replaced shortly before it expires; a
    single refresh runs at a time. The assertion is signed with pyjwt. A refused
    account raises TokenRefused with Google's own error code and description
    (`invalid_grant: Invalid JWT Signature.` for a key that is not the account's).
    """

    def __init__(self, account: ServiceAccount, session: aiohttp.ClientSession,
                 timeout: float) -> None:
        self._account = account
        self._session = session
        self._timeout = timeout
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        """A valid access token (gcloud-aio's Token interface)."""
        if time.monotonic() < self._expires:
            return self._token
        async with self._lock:
            if time.monotonic() >= self._expires:
                self._token, lifetime = await self._refresh()
                self._expires = time.monotonic() + max(lifetime - _REFRESH_MARGIN, 1)
        return self._token

    def forget(self) -> None:
        """Drop the token (the service said it is no longer valid)."""
        self._expires = 0.0

    async def _refresh(self) -> tuple[str, float]:
        import jwt  # pyjwt[crypto], the gateway's own JWT library

        now = int(time.time())
        account = self._account
        assertion = jwt.encode(
            {"iss": account.client_email, "scope": SCOPE, "aud": account.token_uri,
             "iat": now, "exp": now + 3600},
            account.info["private_key"], algorithm="RS256",
            headers={"kid": str(account.info.get("private_key_id", ""))} if
            account.info.get("private_key_id") else None)
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion}
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with self._session.post(account.token_uri, data=form, timeout=timeout) as answer:
            try:
                body = await answer.json(content_type=None)
            except ValueError:
                body = {}
            if not isinstance(body, dict):
                body = {}
            if answer.status != 200 or not isinstance(body.get("access_token"), str):
                raise TokenRefused(answer.status, str(body.get("error") or answer.status),
                                   str(body.get("error_description") or "")[:200])
        lifetime = body.get("expires_in", 3600)
        return body["access_token"], float(lifetime) if isinstance(lifetime, int | float) \
            else 3600.0

    async def close(self) -> None:
        return None  # the session belongs to the storage


class NoTokens:
    """No credentials (an emulator): requests go unauthenticated.

    Given to gcloud-aio-storage so that it does not look for credentials of its own
    (GOOGLE_APPLICATION_CREDENTIALS, gcloud's files): the gateway's settings decide.
    """

    async def get(self) -> None:
        return None

    async def close(self) -> None:
        return None
