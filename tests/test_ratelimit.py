"""Failed authentication is limited per client address (429 with Retry-After)."""

from __future__ import annotations

from gateway.ratelimit import FailedAuthLimiter
from gateway.settings import Settings
from tests.conftest import AiohttpClient, local_only, start_gateway
from tests.test_sidecar import AiohttpServer, start_sidecar


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(burst=3, per_second=0.5, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("a") is None
        limiter.failed("a")
    assert limiter.retry_after("a") == 2  # one token back after 2 s at 0.5/s
    assert limiter.retry_after("b") is None  # other addresses are not affected
    clock.now += 2
    assert limiter.retry_after("a") is None
    limiter.failed("a")
    assert limiter.retry_after("a") == 2
    clock.now += 60
    for _ in range(3):  # refilled to the burst, not beyond
        assert limiter.retry_after("a") is None
        limiter.failed("a")
    assert limiter.retry_after("a") is not None


@local_only
async def test_bad_signed_links_count_too(
    aiohttp_client: AiohttpClient, settings: Settings, wav_bytes: bytes
) -> None:
    gw = await start_gateway(aiohttp_client, settings.with_changes(auth_failure_burst=3))
    rid, mid = await gw.recording_with_media(wav_bytes)
    forged = f"{gw.raw_path(rid, mid)}?expires=9999999999&loc=x&signature=forged"
    statuses = []
    for _ in range(5):
        async with gw.client.get(forged) as r:
            statuses.append(r.status)
    assert statuses == [401, 401, 401, 429, 429]


@local_only
async def test_upstream_401s_count_in_sidecar_mode(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, settings: Settings
) -> None:
    side = await start_sidecar(aiohttp_client, aiohttp_server,
                               settings.with_changes(auth_failure_burst=2))
    statuses = []
    for path in ("/recordings", "/headers", "/recordings", "/recordings"):
        async with side.client.get(path, headers={"X-API-Key": "wrong"}) as r:
            statuses.append(r.status)
    # /headers answers 200 whatever the key: only the upstream's 401s take tokens.
    assert statuses == [401, 200, 401, 429]
