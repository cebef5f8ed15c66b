"""Who may see which recordings: from our own API keys, or as the upstream decides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from gateway.access_log import remember_principal, short_hash
from gateway.auth import API_KEY_HEADER, ApiKeyAuthenticator
from gateway.errors import BadRequest, Forbidden, Unauthorized
from gateway.models import Principal, Role, Scope

if TYPE_CHECKING:
    from gateway.tokens import TokenAuthenticator

FORWARDED_CREDENTIALS = (API_KEY_HEADER, "Authorization")
TENANT_HEADER = "X-Tenant"


class Authenticator:
    """The caller of a standalone gateway: `X-API-Key`, or `Authorization: Bearer` JWT.

    X-Tenant, if sent, must name the principal's tenant (or pick one of a token's).
    """

    def __init__(self, api_keys: ApiKeyAuthenticator,
                 tokens: TokenAuthenticator | None = None) -> None:
        self.api_keys = api_keys
        self.tokens = tokens

    async def principal(self, request: web.Request) -> Principal:
        key = request.headers.get(API_KEY_HEADER)
        authorization = request.headers.get("Authorization")
        tenant = request.headers.get(TENANT_HEADER)
        scheme, _, token = (authorization or "").strip().partition(" ")
        bearer = scheme.lower() == "bearer"
        if bearer and key is not None:
            raise BadRequest("Send one credential: X-API-Key or a Bearer token, not both")
        if not bearer:
            who = await self.api_keys.principal(key)
        elif self.tokens is None:
            raise Unauthorized("Bearer tokens are not accepted here; use X-API-Key")
        else:
            who = await self.tokens.principal(token.strip(), tenant)
        remember_principal(request, str(who.user_id))
        if tenant is not None and tenant != who.tenant:
            # The credential is valid, so saying why reveals nothing about any recording.
            raise Forbidden("X-Tenant names another tenant than the credential's")
        return who

    async def close(self) -> None:
        if self.tokens is not None:
            await self.tokens.close()


def require_role(who: Principal, role: Role) -> None:
    # Checked before any lookup, so a 403 tells nothing about what exists.
    if not who.role.includes(role):
        raise Forbidden(f"This action needs the {role} role")


class Access(Protocol):
    async def scope(self, request: web.Request, needs: Role) -> Scope:
        """The caller's scope; 401 without valid credentials, 403 without the role."""


class KeyAccess:
    """Standalone: the gateway's own credentials, roles and tenants decide."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def principal(self, request: web.Request) -> Principal:
        return await self._authenticator.principal(request)

    async def scope(self, request: web.Request, needs: Role) -> Scope:
        who = await self.principal(request)
        require_role(who, needs)
        return Scope.of(who)


class ForwardedAccess:
    """Sidecar: the caller's credentials go to the upstream, which decides."""

    async def scope(self, request: web.Request, needs: Role) -> Scope:
        credentials = tuple((name, request.headers[name]) for name in FORWARDED_CREDENTIALS
                            if request.headers.get(name))
        if not credentials:
            raise Unauthorized()
        remember_principal(request, "upstream:" + short_hash(credentials[0][1]))
        return Scope("", None, credentials)
