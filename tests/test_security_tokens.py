"""Attacks on Bearer tokens: each one is refused with 401 and reaches nothing."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.hashes import SHA256

from gateway.settings import Settings
from tests.conftest import AiohttpClient, Gateway, local_only
from tests.jwt_support import (
    OTHER_SECRET,
    SECRET,
    Jwks,
    Keys,
    b64,
    bearer,
    claims,
    forged,
    hs256,
    jwks_fixture,  # noqa: F401 (a fixture)
    keys_fixture,  # noqa: F401 (a fixture)
    status_of,
    token,
    token_gateway,
)


async def refused(gw: Gateway, value: str, detail: str) -> None:
    """401 with a Bearer challenge, and the caller's recordings stay out of reach."""
    status, body, challenge = await status_of(gw, bearer(value))
    assert (status, body) == (401, {"detail": detail})
    assert challenge.startswith('Bearer realm="recordings"')


@pytest.fixture
async def hs_gw(aiohttp_client: AiohttpClient, settings: Settings) -> Gateway:
    return await token_gateway(aiohttp_client, settings, jwt_secrets=(SECRET.encode(),))


@local_only
async def test_missing_token(hs_gw: Gateway) -> None:
    status, _, challenge = await status_of(hs_gw, {})
    assert status == 401 and challenge.startswith("APIKey")
    await refused(hs_gw, "", "Invalid bearer token")


@local_only
@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", "é.é.é",
                                     "x" * 8000, "a.b", "....."])
async def test_garbled_token(hs_gw: Gateway, garbage: str) -> None:
    status, body, _ = await status_of(hs_gw, bearer(garbage))
    assert status == 401
    assert body["detail"] in ("Malformed bearer token", "Invalid bearer token",
                              "Invalid bearer token signature")


@local_only
async def test_expired_token(hs_gw: Gateway) -> None:
    await refused(hs_gw, token(exp=int(time.time()) - 3600), "Token has expired")


@local_only
async def test_token_without_exp(hs_gw: Gateway) -> None:
    await refused(hs_gw, token(exp=None), "Token has no 'exp' claim")


@local_only
async def test_not_yet_valid_token(hs_gw: Gateway) -> None:
    await refused(hs_gw, token(nbf=int(time.time()) + 3600), "Token is not yet valid")


@local_only
async def test_token_issued_in_the_future(hs_gw: Gateway) -> None:
    await refused(hs_gw, token(iat=int(time.time()) + 3600), "Token is not yet valid")


@local_only
async def test_alg_none(hs_gw: Gateway) -> None:
    unsigned = forged({"alg": "none", "typ": "JWT"}, claims(role="admin"), lambda _: b"")
    await refused(hs_gw, unsigned, "Token algorithm 'none' is not accepted")
    await refused(hs_gw, unsigned[: unsigned.rindex(".") + 1],
                  "Token algorithm 'none' is not accepted")


@local_only
async def test_token_signed_with_another_secret(hs_gw: Gateway) -> None:
    await refused(hs_gw, token(OTHER_SECRET), "Invalid bearer token signature")


@local_only
async def test_tampered_payload(hs_gw: Gateway) -> None:
    head, _, signature = token(role="viewer").split(".")
    payload = b64(json.dumps(claims(role="admin")).encode())
    await refused(hs_gw, f"{head}.{payload}.{signature}", "Invalid bearer token signature")


@local_only
async def test_hs256_signed_with_the_rsa_public_key(
    aiohttp_client: AiohttpClient, settings: Settings, keys: Keys
) -> None:
    """The classic key confusion: the public PEM used as an HMAC secret."""
    public_pem = keys.pem(keys.rsa_private)
    confused = forged({"alg": "HS256", "typ": "JWT"}, claims(role="admin"),
                      hs256(public_pem.encode()))
    only_rsa = await token_gateway(aiohttp_client, settings, jwt_public_key_pem=public_pem)
    await refused(only_rsa, confused, "Token algorithm 'HS256' is not accepted")
    # Even with both families enabled, HS256 only ever meets the HMAC secret.
    both = await token_gateway(aiohttp_client, settings, jwt_public_key_pem=public_pem,
                               jwt_secrets=(SECRET.encode(),),
                               jwt_algorithms=("HS256", "RS256"))
    await refused(both, confused, "Invalid bearer token signature")
    status, _, _ = await status_of(both, bearer(token(keys.rsa_private, "RS256")))
    assert status == 200


@local_only
async def test_rs256_token_signed_with_the_hmac_secret_bytes_as_rsa(
    aiohttp_client: AiohttpClient, settings: Settings, keys: Keys
) -> None:
    """An RS256 header over an HMAC signature: the secret never verifies RS256."""
    both = await token_gateway(aiohttp_client, settings,
                               jwt_public_key_pem=keys.pem(keys.rsa_private),
                               jwt_secrets=(SECRET.encode(),),
                               jwt_algorithms=("HS256", "RS256"))
    crossed = forged({"alg": "RS256", "typ": "JWT"}, claims(), hs256(SECRET.encode()))
    await refused(both, crossed, "Invalid bearer token signature")


@local_only
async def test_wrong_audience(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    gw = await token_gateway(aiohttp_client, settings, jwt_secrets=(SECRET.encode(),),
                             jwt_audience="recordings-gateway")
    await refused(gw, token(aud="another-api"), "Token audience is not accepted")
    await refused(gw, token(), "Token has no 'aud' claim")
    status, _, _ = await status_of(gw, bearer(token(aud="recordings-gateway")))
    assert status == 200


@local_only
async def test_audience_present_but_none_configured(hs_gw: Gateway) -> None:
    await refused(hs_gw, token(aud="some-other-api"), "Token audience is not accepted")


@local_only
async def test_wrong_issuer(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    gw = await token_gateway(aiohttp_client, settings, jwt_secrets=(SECRET.encode(),),
                             jwt_issuer="https://idp.example")
    await refused(gw, token(iss="https://evil.example"), "Token issuer is not accepted")
    await refused(gw, token(), "Token has no 'iss' claim")
    status, _, _ = await status_of(gw, bearer(token(iss="https://idp.example")))
    assert status == 200


@local_only
async def test_unknown_kid_refetches_once_then_401(
    aiohttp_client: AiohttpClient, settings: Settings, keys: Keys, jwks: Jwks
) -> None:
    jwks.add(keys.rsa_private, "known")
    gw = await token_gateway(aiohttp_client, settings, jwt_jwks_url=jwks.url,
                             jwt_jwks_refresh=3600.0)
    status, _, _ = await status_of(gw, bearer(token(keys.rsa_private, "RS256", kid="known")))
    assert status == 200 and jwks.fetches == 1
    # A kid the provider never published: one refetch is allowed... (the first fetch was
    # just now, so this one is refused by the interval: fetch count stays)
    for _ in range(20):
        await refused(gw, token(keys.other_rsa, "RS256", kid="forged"),
                      "Token is signed with an unknown key")
    assert jwks.fetches == 1  # a flood of unknown kids fetches nothing more


@local_only
async def test_unknown_kid_after_the_interval_fetches_again(
    aiohttp_client: AiohttpClient, settings: Settings, keys: Keys, jwks: Jwks
) -> None:
    jwks.add(keys.rsa_private, "known")
    gw = await token_gateway(aiohttp_client, settings, jwt_jwks_url=jwks.url,
                             jwt_jwks_refresh=1.0)
    status, _, _ = await status_of(gw, bearer(token(keys.rsa_private, "RS256", kid="known")))
    assert status == 200
    await asyncio.sleep(1.05)
    await refused(gw, token(keys.other_rsa, "RS256", kid="forged"),
                  "Token is signed with an unknown key")
    assert jwks.fetches == 2  # refetched for the unknown kid, still unknown: 401


@local_only
async def test_known_kid_with_another_key(
    aiohttp_client: AiohttpClient, settings: Settings, keys: Keys, jwks: Jwks
) -> None:
    jwks.add(keys.rsa_private, "known")
    gw = await token_gateway(aiohttp_client, settings, jwt_jwks_url=jwks.url)
    await refused(gw, token(keys.other_rsa, "RS256", kid="known"),
                  "Invalid bearer token signature")


@local_only
async def test_symmetric_key_published_in_the_jwks_verifies_nothing(
    aiohttp_client: AiohttpClient, settings: Settings, keys: Keys, jwks: Jwks
) -> None:
    published = b"a-secret-everybody-can-read-in-the-jwks!"
    jwks.add(keys.rsa_private, "rsa")
    jwks.entries.append({"kty": "oct", "kid": "sym", "k": b64(published), "alg": "HS256"})
    gw = await token_gateway(aiohttp_client, settings, jwt_jwks_url=jwks.url,
                             jwt_secrets=(SECRET.encode(),),
                             jwt_algorithms=("HS256", "RS256"))
    await refused(gw, token(published, "HS256", kid="sym"), "Invalid bearer token signature")


@local_only
async def test_jwk_stating_rs256_does_not_verify_ps256(
    aiohttp_client: AiohttpClient, settings: Settings, keys: Keys, jwks: Jwks
) -> None:
    jwks.add(keys.rsa_private, "rs", alg="RS256")
    gw = await token_gateway(aiohttp_client, settings, jwt_jwks_url=jwks.url,
                             jwt_algorithms=("RS256", "PS256"))
    pss = forged({"alg": "PS256", "kid": "rs"}, claims(),
                 lambda message: keys.rsa_private.sign(
                     message, padding.PSS(padding.MGF1(SHA256()), 32), SHA256()))
    await refused(gw, pss, "Token is signed with an unknown key")


@local_only
async def test_token_tenant_header_mismatch(hs_gw: Gateway) -> None:
    status, body, _ = await status_of(hs_gw, bearer(token(), **{"X-Tenant": "other"}))
    assert (status, body["detail"]) == (
        403, "X-Tenant names another tenant than the credential's")


@local_only
@pytest.mark.parametrize("role", ["superuser", ["owner"], 7])
async def test_unknown_role(hs_gw: Gateway, role: Any) -> None:
    status, body, _ = await status_of(hs_gw, bearer(token(role=role)))
    assert status == 403 and "names no role" in body["detail"]


@local_only
async def test_viewer_token_cannot_upload(hs_gw: Gateway, wav_bytes: bytes) -> None:
    recording = await hs_gw.create_recording("alice")
    async with hs_gw.client.post(
        f"/recordings/{recording['id']}/media", params={"format": "wav"}, data=wav_bytes,
        headers=bearer(token(role="viewer")),
    ) as response:
        assert response.status == 403
    async with hs_gw.client.get(f"/recordings/{recording['id']}",
                                headers=hs_gw.h("alice")) as response:
        assert (await response.json())["media_files"] == []


@local_only
@pytest.mark.parametrize("sub", ["alice", "-1", "1.5", True, "9" * 20, None])
async def test_token_without_a_usable_user_id(hs_gw: Gateway, sub: Any) -> None:
    await refused(hs_gw, token(sub=sub), "Token claim 'sub' must be a numeric user id")
