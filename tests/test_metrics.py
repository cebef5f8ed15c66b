"""GET /metrics: what a Prometheus scrape shows after real requests, on each storage."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.appkeys import METRICS
from gateway.metrics import Histogram
from gateway.settings import Settings
from tests.conftest import AiohttpClient, Gateway, local_only, s3_only, start_gateway
from tests.test_sidecar import AiohttpServer, start_sidecar

RAW = "/recordings/{recording_id}/media/{media_id}/raw"
MIB = 1024 * 1024

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: TestClient[Any, Any], headers: dict[str, str] | None = None) -> Samples:
    """Every sample of one scrape, parsed by prometheus-client's own parser."""
    async with client.get("/metrics", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return parse(await resp.text())


def parse(text: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample; a missing series is an error, not a zero."""
    return samples[(name, frozenset(labels.items()))]


def requests(samples: Samples, route: str, method: str, status: int) -> float:
    return samples.get(("gateway_http_requests_total", frozenset(
        {"route": route, "method": method, "status": str(status)}.items())), 0.0)


async def until_scrape(client: TestClient[Any, Any], done: Any) -> Samples:
    """Scrape until `done(samples)` holds: a handler whose client left finishes a bit later."""
    for _ in range(250):
        samples = await scrape(client)
        if done(samples):
            return samples
        await asyncio.sleep(0.02)
    raise AssertionError(f"the scrape never showed what was expected: {samples}")


async def abandon_mid_stream(gw: Gateway, path: str) -> None:
    """Read the status line and 64 KiB of a large body, then vanish (no FIN handshake)."""
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {gw.keys['alice']}\r\n\r\n"
                 .encode())
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await reader.readexactly(64 * 1024)
    writer.transport.abort()
    await writer.wait_closed()


def test_histogram_buckets_hold_values_up_to_their_bound() -> None:
    histogram = Histogram((0.1, 1.0))
    for observed in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(observed)
    # Cumulative, each `le` inclusive, the last one +Inf (as Prometheus reads them).
    assert histogram.buckets() == [("0.1", 2.0), ("1.0", 4.0), ("+Inf", 5.0)]
    assert histogram.sum == pytest.approx(8.65)


async def test_a_session_in_numbers(gw: Gateway, blob: bytes) -> None:
    """Upload, list, full and ranged reads, 404s, a client that leaves mid-stream, and a
    broken storage: each shows up once, under its route template and storage."""
    rid, mid = await gw.recording_with_media(blob, fmt="mp3")
    raw = gw.raw_path(rid, mid)
    async with gw.client.get("/recordings", headers=gw.h()) as resp:
        assert resp.status == 200
    async with gw.client.get(raw, headers=gw.h()) as resp:
        assert resp.status == 200 and await resp.read() == blob
    async with gw.client.get(raw, headers={**gw.h(), "Range": "bytes=100-1099"}) as resp:
        assert resp.status == 206 and await resp.read() == blob[100:1100]
    async with gw.client.get("/recordings/999999", headers=gw.h()) as resp:
        assert resp.status == 404
    async with gw.client.get("/no/such/path?token=x") as resp:
        assert resp.status == 404

    samples = await scrape(gw.client)
    assert requests(samples, "/recordings", "POST", 201) == 1
    assert requests(samples, "/recordings/{recording_id}/media", "POST", 201) == 1
    assert requests(samples, "/recordings", "GET", 200) == 1
    assert requests(samples, RAW, "GET", 200) == 1
    assert requests(samples, RAW, "GET", 206) == 1
    assert requests(samples, "/recordings/{recording_id}", "GET", 404) == 1
    assert requests(samples, "unmatched", "GET", 404) == 1
    # The raw path itself, or any other, is never a label value.
    assert not [key for key in samples if any(v == raw or v.startswith("/no/")
                                              for _, v in key[1])]
    assert value(samples, "gateway_http_request_duration_seconds_count",
                 route=RAW, method="GET") == 2
    storage = {"storage": gw.settings.default_storage}  # azure: a named storage
    assert value(samples, "gateway_media_sent_bytes_total", **storage) == len(blob) + 1000
    assert value(samples, "gateway_media_first_byte_seconds_count", **storage) == 2
    assert value(samples, "gateway_media_streams_active", **storage) == 0
    for operation, calls in (("write", 1), ("open", 2), ("read", 2), ("ping", 0)):
        assert value(samples, "gateway_storage_operation_duration_seconds_count",
                     operation=operation, **storage) == calls, operation
    for operation in ("open", "read", "write", "stream", "ping", "check"):
        assert value(samples, "gateway_storage_errors_total", operation=operation,
                     **storage) == 0
    # The second read of the recording came from memory.
    assert value(samples, "gateway_cache_misses_total", cache="recordings", storage="") == 1
    assert value(samples, "gateway_cache_hits_total", cache="recordings", storage="") == 1
    assert value(samples, "gateway_cache_misses_total", cache="api_keys", storage="") == 1
    assert value(samples, "gateway_cache_hits_total", cache="api_keys", storage="") == 5
    if gw.backend in ("s3", "azure"):
        assert value(samples, "gateway_cache_misses_total", cache="object_info", **storage) == 1
        assert value(samples, "gateway_cache_hits_total", cache="object_info", **storage) == 1

    # A client that reads a little of a large file and vanishes.
    sent_before = value(samples, "gateway_media_sent_bytes_total", **storage)
    big = os.urandom(MIB) * 16  # more than socket buffers hold: the stream is cut short
    big_raw = gw.raw_path(*await gw.recording_with_media(big, fmt="mp3"))
    await abandon_mid_stream(gw, big_raw)
    samples = await until_scrape(gw.client, lambda s: requests(s, RAW, "GET", 200) == 2)
    assert value(samples, "gateway_media_streams_active", **storage) == 0
    assert value(samples, "gateway_media_first_byte_seconds_count", **storage) == 3
    sent = value(samples, "gateway_media_sent_bytes_total", **storage) - sent_before
    assert 32 * 1024 <= sent < len(big)
    # Past its first socket read, a remote store's stream went by splice(2); a local
    # file's by sendfile(2), which this counter leaves out.
    spliced = value(samples, "gateway_media_spliced_bytes_total", **storage)
    assert (0 < spliced <= sent) if gw.backend != "local" else spliced == 0
    assert value(samples, "gateway_storage_errors_total", operation="stream", **storage) == 0
    assert requests(samples, "/metrics", "GET", 200) >= 1  # each scrape counts in the next

    # The storage goes away: readiness and the storage check fail, and say where.
    gw.probe.break_storage()
    async with gw.client.get("/readyz") as resp:
        assert resp.status == 503
    async with gw.client.post(f"/storage/{gw.settings.default_storage}/check",
                              headers=gw.h("admin")) as resp:
        assert resp.status == 502
    samples = await scrape(gw.client)
    assert value(samples, "gateway_storage_errors_total", operation="ping", **storage) == 1
    assert value(samples, "gateway_storage_errors_total", operation="check", **storage) == 1
    assert requests(samples, "/readyz", "GET", 503) == 1
    assert requests(samples, "/storage/{name}/check", "POST", 502) == 1
    assert value(samples, "gateway_media_streams_active", **storage) == 0


@s3_only
async def test_an_unreachable_store_counts_as_an_open_error(
    aiohttp_client: AiohttpClient, settings: Settings, blob: bytes
) -> None:
    working = await start_gateway(aiohttp_client, settings)
    rid, mid = await working.recording_with_media(blob, fmt="mp3")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    # The same catalog and keys, the store's address now dead.
    broken = await start_gateway(aiohttp_client, settings.with_changes(
        s3_endpoint=f"http://127.0.0.1:{port}", storage_timeout=0.5))
    broken.keys = working.keys
    async with broken.client.get(broken.raw_path(rid, mid), headers=broken.h()) as resp:
        assert resp.status == 502
    samples = await scrape(broken.client)
    assert value(samples, "gateway_storage_errors_total", storage="default",
                 operation="open") == 1
    assert requests(samples, RAW, "GET", 502) == 1
    assert value(samples, "gateway_media_first_byte_seconds_count", storage="default") == 0


@local_only
async def test_each_app_has_its_own_numbers(
    aiohttp_client: AiohttpClient, settings: Settings, tmp_path: Any
) -> None:
    first = await start_gateway(aiohttp_client, settings)
    second = await start_gateway(aiohttp_client, settings.with_changes(
        data_dir=tmp_path / "second"))
    for _ in range(3):
        async with first.client.get("/healthz") as resp:
            assert resp.status == 200
    assert requests(await scrape(first.client), "/healthz", "GET", 200) == 3
    assert requests(await scrape(second.client), "/healthz", "GET", 200) == 0


@local_only
async def test_a_metrics_token_is_required_when_set(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    tokens = (b"first-token-0123456789", b"second-token-0123456789")
    gw = await start_gateway(aiohttp_client, settings.with_changes(metrics_tokens=tokens))
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                    {"Authorization": "Basic Zmlyc3QtdG9rZW4="}, {"X-API-Key": gw.keys["admin"]}):
        async with gw.client.get("/metrics", headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="recordings"')
            assert set(await resp.json()) == {"detail"}
    for token in tokens:  # either one: a token can be rotated
        samples = await scrape(gw.client, {"Authorization": f"Bearer {token.decode()}"})
    assert requests(samples, "/metrics", "GET", 401) == 4


@local_only
async def test_failed_authentication_and_refusals(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    gw = await start_gateway(aiohttp_client, settings.with_changes(auth_failure_burst=2))
    statuses = []
    for _ in range(4):
        async with gw.client.get("/recordings", headers={"X-API-Key": "gw_wrong"}) as resp:
            statuses.append(resp.status)
    assert statuses == [401, 401, 429, 429]
    # This address may not even scrape now: read the registry the endpoint serves.
    samples = parse(gw.app[METRICS].exposition().decode())
    assert value(samples, "gateway_auth_failures_total") == 2
    assert value(samples, "gateway_auth_refused_total") == 2
    assert requests(samples, "/recordings", "GET", 429) == 2


@local_only
async def test_sidecar_upstream_calls(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, settings: Settings
) -> None:
    side = await start_sidecar(aiohttp_client, aiohttp_server, settings)
    async with side.client.get("/recordings", headers={"X-API-Key": "key-alice"}) as resp:
        assert resp.status == 200
    async with side.client.post("/echo", data=b"x" * 100) as resp:
        assert resp.status == 201
    samples = await scrape(side.client)
    assert value(samples, "gateway_upstream_request_duration_seconds_count", method="GET") == 1
    assert value(samples, "gateway_upstream_request_duration_seconds_count", method="POST") == 1
    assert requests(samples, "/recordings", "GET", 200) == 1
    assert requests(samples, "/{path}", "POST", 201) == 1  # the proxy's one route

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = await start_sidecar(aiohttp_client, aiohttp_server, settings,
                               upstream_url=f"http://127.0.0.1:{port}")
    async with down.client.get("/recordings", headers={"X-API-Key": "key-alice"}) as resp:
        assert resp.status == 502
    samples = await scrape(down.client)
    assert value(samples, "gateway_upstream_errors_total", method="GET",
                 reason="connection") == 1


@local_only
async def test_methods_are_a_bounded_label(gw: Gateway) -> None:
    async with gw.client.request("HEAD", "/healthz") as resp:
        assert resp.status == 200
    async with gw.client.request("PROPFIND", "/healthz") as resp:
        assert resp.status == 405
        assert set(await resp.json()) == {"detail"}
    samples = await scrape(gw.client)
    assert requests(samples, "/healthz", "HEAD", 200) == 1
    assert requests(samples, "unmatched", "other", 405) == 1
