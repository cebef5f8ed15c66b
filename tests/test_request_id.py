"""X-Request-ID: taken when sane, made up otherwise, echoed on every response, forwarded."""

from __future__ import annotations

import asyncio
import re

import pytest

from gateway.request_id import accepted_request_id
from gateway.settings import Settings
from tests.conftest import AiohttpClient, Gateway, local_only, start_gateway
from tests.test_sidecar import AiohttpServer, start_sidecar

GENERATED = re.compile(r"[0-9a-f]{32}")


def test_which_ids_are_taken() -> None:
    for sane in ("abc", "f47ac10b-58cc-4372-a567-0e02b2c3d479", "Root=1-5759e988;Sampled=1",
                 "req_01:web.2/x+y@z", "a" * 128):
        assert accepted_request_id([sane]) == sane
    assert accepted_request_id([" padded "]) == "padded"
    for hostile in ("", "a" * 129, "has space", "<script>", "quote\"", "semi\r\nX-Evil: 1",
                    "caf\u00e9", "-leading", "ctl\x01", "tab\there"):
        assert accepted_request_id([hostile]) is None, hostile
    assert accepted_request_id(["one", "two"]) is None  # which one would it be?
    assert accepted_request_id([]) is None


async def raw_exchange(gw: Gateway, request: bytes) -> tuple[bytes, dict[str, str]]:
    """Send exact bytes, read the whole answer: its status line and headers."""
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    writer.write(request)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:])
    return head[0].encode(), headers


async def test_the_clients_id_comes_back_on_every_response(gw: Gateway, blob: bytes) -> None:
    rid, mid = await gw.recording_with_media(blob, fmt="mp3")
    raw = gw.raw_path(rid, mid)
    async with gw.client.get(raw, headers=gw.h()) as resp:
        etag = resp.headers["ETag"]
    cases: list[tuple[str, str, dict[str, str], int]] = [
        ("GET", "/healthz", {}, 200),
        ("GET", raw, gw.h(), 200),  # streamed
        ("GET", raw, {**gw.h(), "Range": "bytes=0-99"}, 206),
        ("GET", raw, {**gw.h(), "If-None-Match": etag}, 304),
        ("HEAD", raw, gw.h(), 200),
        ("GET", raw, {**gw.h(), "Range": f"bytes={len(blob) + 10}-"}, 416),
        ("GET", "/recordings/999999", gw.h(), 404),
        ("GET", "/recordings", {}, 401),
        ("POST", "/recordings", {**gw.h(), "Content-Type": "application/json"}, 400),
        ("GET", "/no/such/route", {}, 404),
    ]
    for number, (method, path, headers, status) in enumerate(cases):
        sent = f"client-{number}.f47ac10b"
        async with gw.client.request(method, path, headers={**headers, "X-Request-ID": sent},
                                     data=b"{not json" if method == "POST" else None) as resp:
            assert resp.status == status, (method, path)
            assert resp.headers["X-Request-ID"] == sent, (method, path)


async def test_generated_ids_are_unique(gw: Gateway) -> None:
    seen = set()
    for _ in range(100):
        async with gw.client.get("/healthz") as resp:
            request_id = resp.headers["X-Request-ID"]
        assert GENERATED.fullmatch(request_id)
        seen.add(request_id)
    assert len(seen) == 100


@local_only
@pytest.mark.parametrize("hostile", [
    b"x" * 129, b"has space", b"<script>alert(1)</script>", "d\u00e9j\u00e0-vu".encode(),
    b"\xff\xfe", b"-dash", b'quote"d', b"a,b",
])
async def test_a_hostile_id_is_replaced_not_echoed(gw: Gateway, hostile: bytes) -> None:
    status, headers = await raw_exchange(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                             b"X-Request-ID: " + hostile + b"\r\n"
                                             b"Connection: close\r\n\r\n")
    assert status == b"HTTP/1.1 200 OK"
    assert GENERATED.fullmatch(headers["X-Request-ID"])


@local_only
async def test_control_characters_never_reach_a_response(gw: Gateway) -> None:
    for value in (b"a\x01b", b"a\x7fb", b"a\rb", b"a\x00b"):
        status, headers = await raw_exchange(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                                 b"X-Request-ID: " + value + b"\r\n"
                                                 b"Connection: close\r\n\r\n")
        # Refused by the HTTP parser, or answered with an id of our own.
        if status == b"HTTP/1.1 200 OK":
            assert GENERATED.fullmatch(headers["X-Request-ID"])
        else:
            assert status.split()[1] == b"400", status
            assert "X-Request-ID" not in headers


@local_only
async def test_two_ids_are_none(gw: Gateway) -> None:
    async with gw.client.get("/healthz", headers=[("X-Request-ID", "first"),
                                                  ("X-Request-ID", "second")]) as resp:
        assert GENERATED.fullmatch(resp.headers["X-Request-ID"])


@local_only
async def test_cors_exposes_the_id(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    gw = await start_gateway(aiohttp_client, settings.with_changes(
        cors_origins=("https://app.example.com",)))
    origin = {"Origin": "https://app.example.com"}
    async with gw.client.options("/recordings", headers={
            **origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-request-id", "X-Request-ID": "pre-1"}) as resp:
        assert resp.status == 204
        assert "x-request-id" in resp.headers["Access-Control-Allow-Headers"].lower()
        assert resp.headers["X-Request-ID"] == "pre-1"
    async with gw.client.get("/recordings", headers={**origin, **gw.h(),
                                                     "X-Request-ID": "get-1"}) as resp:
        assert resp.headers["X-Request-ID"] == "get-1"
        exposed = {h.strip() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
        assert "X-Request-ID" in exposed


@local_only
async def test_the_upstream_receives_the_same_id(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, settings: Settings,
    blob: bytes,
) -> None:
    side = await start_sidecar(aiohttp_client, aiohttp_server, settings)
    side.api.add_recording(906238426347, 1, "session", [(906238426348, "audio", "mp3", "local")])
    side.probe.put("recordings/1/906238426347/session.mp3", blob)
    alice = {"X-API-Key": "key-alice"}
    # The catalog's own call for a raw read, and a filtered JSON route.
    for path in (side.raw, "/recordings"):
        async with side.client.get(path, headers={**alice, "X-Request-ID": "join-me.1"}) as r:
            assert r.status == 200
            assert r.headers["X-Request-ID"] == "join-me.1"
        assert side.api.request_ids[-1] == "join-me.1"
    # The proxy: a hostile id that the client sent is not passed on either.
    for sent, kept in ((None, False), ("bad id <x>", False), ("proxied-7", True)):
        async with side.client.get("/headers",
                                   headers={"X-Request-ID": sent} if sent else {}) as r:
            echoed = r.headers["X-Request-ID"]
            seen = {k.lower(): v for k, v in (await r.json())["headers"].items()}
        assert seen["x-request-id"] == echoed
        assert echoed == sent if kept else GENERATED.fullmatch(echoed)
