"""Bearer tokens (JWT): HMAC secrets, PEM keys and a JWKS served by a real server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.settings import Settings, SettingsError, load_settings
from tests.conftest import AiohttpClient, Gateway, local_only
from tests.jwt_support import (
    SECRET,
    Jwks,
    Keys,
    bearer,
    jwks_fixture,  # noqa: F401 (a fixture)
    keys_fixture,  # noqa: F401 (a fixture)
    status_of,
    token,
    token_gateway,
)

# --- what tokens may do ---------------------------------------------------------------------


@local_only
async def test_hs256_token_is_a_principal_like_an_api_key(
    aiohttp_client: AiohttpClient, settings: Settings, wav_bytes: bytes
) -> None:
    gw = await token_gateway(aiohttp_client, settings, jwt_secrets=(SECRET.encode(),))
    own = await gw.create_recording("alice")  # user 1 of tenant default, by API key
    await gw.upload(own["id"], wav_bytes)
    await gw.create_recording("bob")  # user 2: not for user 1's token
    alice = bearer(token(sub="1"))
    status, body, _ = await status_of(gw, alice)
    assert status == 200
    assert [r["id"] for r in body["recordings"]] == [own["id"]]
    media_id = (await (await gw.client.get(f"/recordings/{own['id']}", headers=alice)).json()
                )["media_files"][0]["id"]
    async with gw.client.get(gw.raw_path(own["id"], media_id),
                             headers={**alice, "Range": "bytes=0-3"}) as response:
        assert response.status == 206
        assert await response.read() == wav_bytes[:4]
    # A recorder token ingests; the numeric sub may be a number as well as a string.
    async with gw.client.post("/recordings", json={}, headers=bearer(token(sub=1))) as response:
        assert response.status == 201
        assert (await response.json())["user_id"] == 1
    # An admin token of the tenant sees every user's recordings.
    status, body, _ = await status_of(gw, bearer(token(sub="9", role="admin")))
    assert status == 200 and len(body["recordings"]) == 3


@local_only
async def test_rs256_and_es256_public_keys_from_pem(
    aiohttp_client: AiohttpClient, settings: Settings, keys: Keys, tmp_path: Path
) -> None:
    pem_file = tmp_path / "keys.pem"  # two keys in one file: both verify (rotation)
    pem_file.write_text(keys.pem(keys.rsa_private) + keys.pem(keys.ec_private))
    environ = {"GATEWAY_DATA_DIR": str(tmp_path / "data"),
               "GATEWAY_JWT_PUBLIC_KEY": str(pem_file)}
    loaded = load_settings(environ)
    assert loaded.token_algorithms() == ("RS256", "ES256")
    gw = await token_gateway(aiohttp_client, settings,
                             jwt_public_key_pem=loaded.jwt_public_key_pem,
                             jwt_algorithms=("RS256", "PS256", "ES256"))
    for key, algorithm in ((keys.rsa_private, "RS256"), (keys.rsa_private, "PS256"),
                           (keys.ec_private, "ES256")):
        status, _, _ = await status_of(gw, bearer(token(key, algorithm)))
        assert status == 200, algorithm
    status, body, _ = await status_of(gw, bearer(token(keys.other_rsa, "RS256")))
    assert (status, body["detail"]) == (401, "Invalid bearer token signature")


@local_only
async def test_jwks_rotation_fetches_once_per_new_kid(
    aiohttp_client: AiohttpClient, settings: Settings, keys: Keys, jwks: Jwks
) -> None:
    jwks.add(keys.rsa_private, "2026-01")
    gw = await token_gateway(aiohttp_client, settings, jwt_jwks_url=jwks.url,
                             jwt_jwks_refresh=1.0)
    for _ in range(5):
        status, _, _ = await status_of(gw, bearer(token(keys.rsa_private, "RS256",
                                                        kid="2026-01", jti=str(time.time()))))
        assert status == 200
    assert jwks.fetches == 1  # cached
    # The provider rotates: a token with the new kid makes the gateway look again.
    jwks.add(keys.ec_private, "2026-02")
    await asyncio.sleep(1.05)  # the least interval between refetches
    status, _, _ = await status_of(gw, bearer(token(keys.ec_private, "ES256", kid="2026-02")))
    assert status == 200
    assert jwks.fetches == 2


@local_only
async def test_x_tenant_picks_one_of_the_tokens_tenants(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    gw = await token_gateway(aiohttp_client, settings, jwt_secrets=(SECRET.encode(),))
    mallorys = await gw.create_recording("mallory")  # tenant "other"
    both = token(sub="5", role="admin", tenant=["default", "other"])
    status, body, _ = await status_of(gw, bearer(both, **{"X-Tenant": "other"}))
    assert status == 200 and [r["id"] for r in body["recordings"]] == [mallorys["id"]]
    status, body, _ = await status_of(gw, bearer(both, **{"X-Tenant": "default"}))
    assert status == 200 and body["recordings"] == []
    status, body, _ = await status_of(gw, bearer(both))
    assert (status, body["detail"]) == (
        403, "The token holds several tenants: name one with X-Tenant")
    # A token without the claim belongs to the default tenant...
    status, _, _ = await status_of(gw, bearer(token(tenant=None)))
    assert status == 200
    # ...unless the claim is required.
    strict = await token_gateway(aiohttp_client, settings, jwt_secrets=(SECRET.encode(),),
                                 jwt_require_tenant=True)
    status, body, _ = await status_of(strict, bearer(token(tenant=None)))
    assert status == 401 and "tenant" in body["detail"]


@local_only
async def test_claim_names_come_from_settings(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    gw = await token_gateway(aiohttp_client, settings, jwt_secrets=(SECRET.encode(),),
                             jwt_user_claim="uid", jwt_tenant_claim="org",
                             jwt_role_claim="roles")
    mallorys = await gw.create_recording("mallory")
    custom = token(sub="someone@example.com", uid=5, org="other", roles=["viewer", "admin"],
                   tenant=None, role=None)
    status, body, _ = await status_of(gw, bearer(custom))
    assert status == 200 and [r["id"] for r in body["recordings"]] == [mallorys["id"]]
    status, body, _ = await status_of(gw, bearer(token(sub="1")))  # no uid claim
    assert (status, body["detail"]) == (401, "Token claim 'uid' must be a numeric user id")
    # A digit to str.isdigit() but not to int(): once a 500.
    superscript = token(uid="\u00b2", org="other", roles=["viewer"], tenant=None, role=None)
    status, body, _ = await status_of(gw, bearer(superscript))
    assert (status, body["detail"]) == (401, "Token claim 'uid' must be a numeric user id")


@local_only
async def test_expired_within_leeway_still_passes(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    gw = await token_gateway(aiohttp_client, settings, jwt_secrets=(SECRET.encode(),),
                             jwt_leeway=30.0)
    now = int(time.time())
    status, _, _ = await status_of(gw, bearer(token(exp=now - 10)))
    assert status == 200
    status, body, _ = await status_of(gw, bearer(token(exp=now - 60)))
    assert (status, body["detail"]) == (401, "Token has expired")


@local_only
async def test_both_credentials_at_once_are_refused(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    gw = await token_gateway(aiohttp_client, settings, jwt_secrets=(SECRET.encode(),))
    status, body, _ = await status_of(gw, {**bearer(token()), **gw.h("bob")})
    assert status == 400 and "one credential" in body["detail"]


@local_only
async def test_without_jwt_settings_bearer_tokens_are_refused(gw: Gateway) -> None:
    status, body, challenge = await status_of(gw, bearer(token()))
    assert status == 401
    assert body["detail"] == "Bearer tokens are not accepted here; use X-API-Key"
    assert challenge.startswith("APIKey")


@local_only
async def test_jwks_down_is_503_not_401(
    aiohttp_client: AiohttpClient, settings: Settings, keys: Keys, jwks: Jwks
) -> None:
    jwks.status = 500
    gw = await token_gateway(aiohttp_client, settings, jwt_jwks_url=jwks.url)
    async with gw.client.get("/recordings", headers=bearer(token(keys.rsa_private, "RS256",
                                                                 kid="k"))) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert (await response.json())["detail"] == "Cannot fetch the token signing keys"


@pytest.mark.parametrize(("environ", "variable", "problem"), [
    ({"GATEWAY_JWT_SECRET": SECRET, "GATEWAY_JWT_ALGORITHMS": "HS256,none"},
     "GATEWAY_JWT_ALGORITHMS", "'none' is never accepted"),
    ({"GATEWAY_JWT_SECRET": "short"}, "GATEWAY_JWT_SECRET", "at least 32 characters"),
    ({"GATEWAY_JWT_SECRET": SECRET, "GATEWAY_JWT_ALGORITHMS": "RS256"},
     "GATEWAY_JWT_ALGORITHMS", "RS256 needs GATEWAY_JWT_PUBLIC_KEY"),
    ({"GATEWAY_JWT_JWKS_URL": "https://idp.example/jwks", "GATEWAY_JWT_ALGORITHMS": "HS256"},
     "GATEWAY_JWT_ALGORITHMS", "HS256 needs GATEWAY_JWT_SECRET"),
    ({"GATEWAY_JWT_ALGORITHMS": "RS256"}, "GATEWAY_JWT_ALGORITHMS", "needs GATEWAY_JWT_SECRET"),
    ({"GATEWAY_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"},
     "GATEWAY_JWT_PUBLIC_KEY", "not a public key"),
    ({"GATEWAY_JWT_PUBLIC_KEY": "/nonexistent/key.pem"}, "GATEWAY_JWT_PUBLIC_KEY",
     "neither PEM text nor a readable PEM file"),
    ({"GATEWAY_JWT_SECRET": SECRET, "GATEWAY_CATALOG": "upstream",
      "GATEWAY_UPSTREAM_URL": "http://meeting-api:8080"}, "GATEWAY_JWT_SECRET",
     "sidecar mode forwards Bearer tokens"),
])
def test_token_settings_are_checked_at_startup(
    tmp_path: Path, environ: dict[str, str], variable: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({"GATEWAY_DATA_DIR": str(tmp_path), **environ})
    assert error.value.variable == variable
    assert problem in error.value.problem


def test_private_key_pem_is_refused(tmp_path: Path, keys: Keys) -> None:
    private = keys.rsa_private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    with pytest.raises(SettingsError) as error:
        load_settings({"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_JWT_PUBLIC_KEY": private})
    assert error.value.variable == "GATEWAY_JWT_PUBLIC_KEY"
