"""Bearer tokens (JWT) → Principal, with pyjwt.

Keys come from settings: HMAC secrets, PEM public keys, or a JWKS URL fetched
with aiohttp (never pyjwt's blocking PyJWKClient) and cached. The algorithms are
pinned by settings, `none` is never one of them, and each family only ever meets
its own kind of key: an HMAC secret never verifies an RS/ES/PS/EdDSA token, and a
public key, or anything from the JWKS, never verifies an HS token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gateway.errors import Forbidden, ServiceUnavailable, Unauthorized
from gateway.models import MAX_ID, Principal, Role
from gateway.storage.config import NAME_RE

if TYPE_CHECKING:
    from gateway.settings import Settings

log = logging.getLogger(__name__)

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")
MAX_TOKEN_LENGTH = 16 * 1024
JWKS_TIMEOUT = 10.0
JWKS_MAX_BYTES = 1024 * 1024
_CACHE_LIMIT = 10_000

PublicKey: TypeAlias = (rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
             | ed448.Ed448PublicKey)


def family_of(key: PublicKey) -> tuple[str, ...]:
    """The algorithms a public key may verify (an RSA key never verifies ES256, ...)."""
    if isinstance(key, rsa.RSAPublicKey):
        return ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": ("ES256",), "secp384r1": ("ES384",),
                "secp521r1": ("ES512",)}.get(key.curve.name, ())
    return ("EdDSA",)


def load_public_keys(pem: str) -> tuple[PublicKey, ...]:
    """Every public key in a PEM text (several blocks: rotation); ValueError if none."""
    blocks = [f"-----BEGIN{part}" for part in pem.split("-----BEGIN")[1:]]
    keys: list[PublicKey] = []
    for block in blocks:
        try:
            key = load_pem_public_key(block.strip().encode())
        except (ValueError, TypeError) as exc:
            raise ValueError(f"holds a PEM block that is not a public key ({exc})") from None
        if not isinstance(key, PublicKey):
            raise ValueError(f"holds an unsupported key type {type(key).__name__}")
        keys.append(key)
    if not keys:
        raise ValueError("holds no PEM public key (-----BEGIN PUBLIC KEY-----)")
    return tuple(keys)


@dataclass(frozen=True, slots=True)
class TokenRules:
    """How tokens are checked and read; built from Settings."""

    algorithms: tuple[str, ...]
    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    public_keys: tuple[PublicKey, ...] = ()
    jwks_url: str = ""
    audience: str = ""
    issuer: str = ""
    leeway: float = 30.0
    user_claim: str = "sub"
    tenant_claim: str = "tenant"
    role_claim: str = "role"
    default_tenant: str = "default"
    jwks_refresh: float = 60.0
    jwks_max_age: float = 3600.0


@dataclass(frozen=True, slots=True)
class Jwk:
    """One usable key of a JWKS, with the algorithm it states (if it states one)."""

    key: PublicKey
    algorithm: str | None


@dataclass(frozen=True, slots=True)
class _Identity:
    """What a verified token says, before X-Tenant picks one of its tenants."""

    user_id: int
    tenants: tuple[str, ...]
    role: Role
    expires: float


class JwksKeys:
    """A JWKS document's public keys by `kid`, fetched asynchronously and cached.

    An unknown `kid` triggers a refetch, at most once per `refresh` seconds, so a
    flood of forged kids cannot turn the gateway into a load generator.
    """

    def __init__(self, url: str, *, refresh: float, max_age: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._url = url
        self._refresh = refresh
        self._max_age = max_age
        self._clock = clock
        self._keys: dict[str | None, Jwk] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def key(self, kid: str | None) -> Jwk | None:
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self._max_age
        if stale or (kid not in self._keys and self._may_refetch(now)):
            await self._fetch()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def _may_refetch(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= self._refresh

    async def _fetch(self) -> None:
        fetched_at = self._fetched_at
        async with self._lock:
            if self._fetched_at != fetched_at:
                return  # another request fetched while this one waited
            try:
                keys = await self._download()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self._fetched_at = self._clock()  # do not retry on every request
                if not self._keys:
                    log.error("cannot fetch the JWKS at %s: %s", self._url, exc)
                    raise ServiceUnavailable("Cannot fetch the token signing keys",
                                             headers={"Retry-After": "5"}) from None
                log.warning("cannot refresh the JWKS at %s, keeping %d cached keys: %s",
                            self._url, len(self._keys), exc)
                return
            self._keys = keys
            self._fetched_at = self._clock()
            self.fetches += 1

    async def _download(self) -> dict[str | None, Jwk]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=JWKS_TIMEOUT))
        async with self._session.get(self._url, allow_redirects=False) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = await response.content.read(JWKS_MAX_BYTES + 1)
            if len(body) > JWKS_MAX_BYTES:
                raise ValueError("document larger than 1 MiB")
        try:
            document = json.loads(body)
            keys = document["keys"]
            if not isinstance(keys, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ValueError("not a JWKS document ({\"keys\": [...]})") from None
        usable: dict[str | None, Jwk] = {}
        for entry in keys:
            # Only public signing keys: a symmetric (oct) key published in a JWKS is
            # known to everyone, and must never verify anything.
            if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP") \
                    or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry).key
            except jwt.PyJWTError:
                continue
            stated = entry.get("alg")
            if isinstance(key, PublicKey) and (stated is None or isinstance(stated, str)):
                usable[entry.get("kid")] = Jwk(key, stated)
        if not usable:
            raise ValueError("no usable public signing key")
        return usable


class TokenAuthenticator:
    """Verifies `Authorization: Bearer` tokens and turns their claims into a Principal."""

    def __init__(self, rules: TokenRules, *, clock: Callable[[], float] = time.time) -> None:
        self.rules = rules
        self._clock = clock
        self._jwks = (JwksKeys(rules.jwks_url, refresh=rules.jwks_refresh,
                               max_age=rules.jwks_max_age) if rules.jwks_url else None)
        self._verified: dict[str, _Identity] = {}

    @property
    def jwks(self) -> JwksKeys | None:
        return self._jwks

    async def close(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()

    async def principal(self, token: str, tenant: str | None) -> Principal:
        """The token's principal in `tenant` (X-Tenant) or its only tenant; 401 if invalid."""
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise Unauthorized("Invalid bearer token", scheme="Bearer")
        digest = hashlib.sha256(token.encode()).hexdigest()
        identity = self._verified.get(digest)
        if identity is None or identity.expires + self.rules.leeway < self._clock():
            identity = await self._verify(token)
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
            self._verified[digest] = identity
        return Principal(identity.user_id, _pick_tenant(identity.tenants, tenant),
                         identity.role)

    async def _verify(self, token: str) -> _Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("Malformed bearer token", scheme="Bearer") from None
        algorithm = header.get("alg")
        if algorithm not in self.rules.algorithms:
            raise Unauthorized(f"Token algorithm {str(algorithm)[:16]!r} is not accepted",
                               scheme="Bearer")
        keys = await self._keys_for(algorithm, header.get("kid"))
        if not keys:
            raise Unauthorized("Token is signed with an unknown key", scheme="Bearer")
        claims = self._decode(token, algorithm, keys)
        return self._identity(claims)

    async def _keys_for(self, algorithm: str, kid: object) -> list[PublicKey | bytes]:
        if algorithm in HMAC_ALGORITHMS:
            return list(self.rules.secrets)
        keys: list[PublicKey | bytes] = [
            key for key in self.rules.public_keys if algorithm in family_of(key)]
        if self._jwks is not None and (kid is None or (isinstance(kid, str) and len(kid) <= 256)):
            jwk = await self._jwks.key(kid)
            if jwk is not None and algorithm in family_of(jwk.key) \
                    and jwk.algorithm in (None, algorithm):
                keys.append(jwk.key)
        return keys

    def _decode(self, token: str, algorithm: str, keys: list[PublicKey | bytes]
                ) -> dict[str, Any]:
        rules = self.rules
        for index, key in enumerate(keys):
            try:
                return jwt.decode(
                    token, key, algorithms=[algorithm],
                    audience=rules.audience or None, issuer=rules.issuer or None,
                    leeway=rules.leeway,
                    options={"require": ["exp"], "verify_sub": False, "verify_jti": False},
                )
            except jwt.InvalidSignatureError:
                if index == len(keys) - 1:
                    raise Unauthorized("Invalid bearer token signature", scheme="Bearer")\
                        from None
            except jwt.PyJWTError as exc:
                raise Unauthorized(_describe(exc), scheme="Bearer") from None
        raise Unauthorized("Invalid bearer token", scheme="Bearer")

    def _identity(self, claims: Mapping[str, Any]) -> _Identity:
        rules = self.rules
        user = claims.get(rules.user_claim)
        if isinstance(user, str) and user.isascii() and user.isdigit() and len(user) <= 16:
            user = int(user)
        if isinstance(user, bool) or not isinstance(user, int) or not 0 <= user <= MAX_ID:
            raise Unauthorized(f"Token claim {rules.user_claim!r} must be a numeric user id",
                               scheme="Bearer")
        tenants = claims.get(rules.tenant_claim, rules.default_tenant or None)
        if isinstance(tenants, str):
            tenants = [tenants]
        if not isinstance(tenants, list) or not tenants or not all(
                isinstance(t, str) and NAME_RE.fullmatch(t) for t in tenants):
            raise Unauthorized(f"Token claim {rules.tenant_claim!r} must name the tenant(s) "
                               f"({NAME_RE.pattern})", scheme="Bearer")
        return _Identity(user, tuple(tenants), _role(claims.get(rules.role_claim),
                                                     rules.role_claim),
                         float(claims["exp"]))


_ROLE_NAMES = frozenset(role.value for role in Role)


def _pick_tenant(tenants: tuple[str, ...], requested: str | None) -> str:
    if requested is None:
        if len(tenants) > 1:
            raise Forbidden("The token holds several tenants: name one with X-Tenant")
        return tenants[0]
    if requested not in tenants:
        raise Forbidden("X-Tenant names another tenant than the credential's")
    return requested


def _role(value: object, claim: str) -> Role:
    """The highest known role the claim names; a token without the claim is a viewer."""
    if value is None:
        return Role.VIEWER
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list):
        names = []
    known = [Role(name) for name in names if name in _ROLE_NAMES]
    if not known:
        raise Forbidden(f"Token claim {claim!r} names no role of this gateway "
                        "(viewer, recorder, admin)")
    return max(known, key=lambda role: tuple(Role).index(role))


def _describe(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "Token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "Token is not yet valid"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "Token audience is not accepted"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "Token issuer is not accepted"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"Token has no {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return "Token has an invalid 'iat' claim"
    return "Invalid bearer token"


def rules_from(settings: Settings) -> TokenRules:
    return TokenRules(
        algorithms=settings.token_algorithms(),
        secrets=settings.jwt_secrets,
        public_keys=load_public_keys(settings.jwt_public_key_pem)
        if settings.jwt_public_key_pem else (),
        jwks_url=settings.jwt_jwks_url,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway=settings.jwt_leeway,
        user_claim=settings.jwt_user_claim,
        tenant_claim=settings.jwt_tenant_claim,
        role_claim=settings.jwt_role_claim,
        default_tenant="" if settings.jwt_require_tenant else "default",
        jwks_refresh=settings.jwt_jwks_refresh,
        jwks_max_age=settings.jwt_jwks_max_age,
    )
