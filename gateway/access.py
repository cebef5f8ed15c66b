"""Who may see which recordings: from our own API keys, or as the upstream decides."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from gateway.access_log import remember_principal, short_hash
from gateway.auth import API_KEY_HEADER, ApiKeyAuthenticator
from gateway.errors import Forbidden, Unauthorized
from gateway.models import Principal, Role, Scope

FORWARDED_CREDENTIALS = (API_KEY_HEADER, "Authorization")
TENANT_HEADER = "X-Tenant"


async def authenticate(request: web.Request, api_keys: ApiKeyAuthenticator) -> Principal:
    """The caller of a standalone gateway, by API key; X-Tenant, if sent, must match."""
    who = await api_keys.principal(request.headers.get(API_KEY_HEADER))
    remember_principal(request, str(who.user_id))
    tenant = request.headers.get(TENANT_HEADER)
    if tenant is not None and tenant != who.tenant:
        # The credential is valid, so saying why reveals nothing about any recording.
        raise Forbidden("X-Tenant names another tenant than the credential's")
    return who


def require_role(who: Principal, role: Role) -> None:
    # Checked before any lookup, so a 403 tells nothing about what exists.
    if not who.role.includes(role):
        raise Forbidden(f"This action needs the {role} role")


class Access(Protocol):
    async def scope(self, request: web.Request, needs: Role) -> Scope:
        """The caller's scope; 401 without valid credentials, 403 without the role."""


class KeyAccess:
    """Standalone: the gateway's own API keys, roles and tenants decide."""

    def __init__(self, api_keys: ApiKeyAuthenticator) -> None:
        self._api_keys = api_keys

    async def principal(self, request: web.Request) -> Principal:
        return await authenticate(request, self._api_keys)

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
