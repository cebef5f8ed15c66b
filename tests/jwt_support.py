"""Bearer-token test helpers: keys, tokens as a client or an attacker builds them, a JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.settings import Settings
from tests.conftest import AiohttpClient, Gateway, start_gateway

AiohttpServer = Callable[..., Any]
SECRET = "s3cr3t-" * 6  # 42 characters
OTHER_SECRET = "another-secret-" * 3


@dataclass
class Keys:
    rsa_private: rsa.RSAPrivateKey
    ec_private: ec.EllipticCurvePrivateKey
    other_rsa: rsa.RSAPrivateKey

    def pem(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


@pytest.fixture(scope="module", name="keys")
def keys_fixture() -> Keys:
    return Keys(rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1()),
                rsa.generate_private_key(65537, 2048))


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "1", "tenant": "default", "role": "recorder",
                            "iat": now, "exp": now + 300}
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def token(key: Any = SECRET, algorithm: str = "HS256", kid: str | None = None,
          **changes: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(**changes), key, algorithm=algorithm, headers=headers)


def bearer(value: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}", **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]
           ) -> str:
    """A token assembled by hand, as an attacker would (pyjwt refuses to build these)."""
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return head + "." + b64(sign(head.encode()))


@dataclass
class Jwks:
    """A real identity provider's JWKS endpoint: its keys can change, its fetches count."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    status: int = 200
    url: str = ""

    def add(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str,
            **extra: Any) -> None:
        public = key.public_key()
        algorithm: Any = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) \
            else jwt.algorithms.ECAlgorithm
        entry = json.loads(algorithm.to_jwk(public))
        self.entries.append({**entry, "kid": kid, **extra})

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.status != 200:
            return web.json_response({"error": "down"}, status=self.status)
        return web.json_response({"keys": self.entries})


@pytest.fixture(name="jwks")
async def jwks_fixture(aiohttp_server: AiohttpServer) -> Jwks:
    provider = Jwks()
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", provider.handle)
    server = await aiohttp_server(app)
    provider.url = str(server.make_url("/.well-known/jwks.json"))
    return provider


async def token_gateway(aiohttp_client: AiohttpClient, settings: Settings, **changes: Any
                        ) -> Gateway:
    return await start_gateway(aiohttp_client, settings.with_changes(**changes))


async def status_of(gw: Gateway, headers: dict[str, str], path: str = "/recordings"
                    ) -> tuple[int, dict[str, Any], str]:
    async with gw.client.get(path, headers=headers) as response:
        return (response.status, await response.json(),
                response.headers.get("WWW-Authenticate", ""))


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda message: hmac.new(secret, message, hashlib.sha256).digest()
