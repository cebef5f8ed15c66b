"""Sidecar mode with an upstream meeting API that fails: the test meeting API behind
the fault proxy.

Every route that asks the upstream (the filtered JSON, the bytes, DELETE, the proxy)
meets each fault: silence, slowness on either side of GATEWAY_UPSTREAM_TIMEOUT, a 5xx,
malformed JSON, a body shorter than its Content-Length, a reset, a refused port. The
gateway answers 502 or 504 with a JSON detail within the timeout (never 500), keeps
every byte when a DELETE was not confirmed, and afterwards holds no task and no
connection that it did not hold before. Time bounds are multiples of the timeout plus
a few seconds and ten healthy requests measured in the same test.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import AiohttpClient, ProductionServer, local_only
from tests.fake_upstream import FakeMeetingApi
from tests.fault_proxy import Fault, FaultProxy, http_answer, until
from tests.storage_probe import StorageProbe, default_probe

pytestmark = local_only

AiohttpServer = Callable[..., Awaitable[TestServer]]
TIMEOUT = 1.0
"""GATEWAY_UPSTREAM_TIMEOUT in these tests: the connect, and each wait for data."""
SLACK = 4.0
"""Seconds allowed for a loaded machine on top of what the timeout accounts for."""
ALICE = {"X-API-Key": "key-alice"}
RECORDING, MEDIA, SESSION = 906238426347, 906238426348, "d6e337d6-92cd-452f-b003-23c5498091ef"
KEY = f"recordings/1/{RECORDING}/{SESSION}.wav"
TIMED_OUT = {"detail": "The upstream meeting API did not answer in time"}
UNREACHABLE = {"detail": "The upstream meeting API is unreachable"}


@dataclass
class Side:
    """A sidecar gateway, its upstream behind a fault proxy, and what they hold."""

    client: TestClient[Any, Any]
    proxy: FaultProxy
    api: FakeMeetingApi
    probe: StorageProbe
    blob: bytes
    baseline: float = 0.0  # seconds a healthy request took
    tasks: int = 0  # asyncio tasks alive after a healthy request
    connections: int = 0  # connections to the upstream open after a healthy request

    def within(self, waits: float) -> float:
        return waits + SLACK + 10 * self.baseline


@dataclass
class Seen:
    status: int
    body: bytes
    error: BaseException | None
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


async def call(side: Side, method: str, path: str) -> Seen:
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = bytearray()
    error: BaseException | None = None
    async with side.client.request(method, path, headers=ALICE) as resp:
        try:
            async for piece in resp.content.iter_any():
                body += piece
        except aiohttp.ClientError as exc:
            error = exc
        seen = Seen(resp.status, bytes(body), error, loop.time() - started)
    print(f"seconds={seen.seconds:.3f}")  # a figure for docs/reliability.md (pytest -rP)
    return seen


def _tasks() -> int:
    return len(asyncio.all_tasks())


@pytest.fixture
async def side(aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer,
               settings: Settings, blob: bytes) -> AsyncIterator[Side]:
    api = FakeMeetingApi()
    api.add_recording(RECORDING, 1, SESSION, [(MEDIA, "audio", "wav", "local")])
    upstream = URL(str((await aiohttp_server(api.app)).make_url("")))
    assert upstream.host is not None and upstream.port is not None
    proxy = await FaultProxy.start(upstream.host, upstream.port)
    configured = settings.with_changes(catalog="upstream", upstream_url=proxy.url,
                                       upstream_timeout=TIMEOUT, cache_ttl=0)
    client = await aiohttp_client(ProductionServer(create_app(configured)))
    s = Side(client, proxy, api, default_probe(configured), blob)
    s.probe.put(KEY, blob)
    healthy = await call(s, "GET", f"/recordings/{RECORDING}")
    assert healthy.status == 200
    s.baseline, s.tasks, s.connections = healthy.seconds, _tasks(), proxy.open_connections
    yield s
    await proxy.close()


async def assert_nothing_left(side: Side) -> None:
    """With the fault gone the gateway answers again, and holds no more tasks or upstream
    connections than after a healthy request."""
    side.proxy.clear()
    healthy = await call(side, "GET", "/recordings")
    assert healthy.status == 200, healthy.body
    assert await until(lambda: side.proxy.open_connections <= side.connections), (
        f"{side.proxy.open_connections} connections to the upstream, {side.connections} "
        "after a healthy request")
    assert await until(lambda: _tasks() <= side.tasks), "\n".join(
        repr(t.get_coro()) for t in asyncio.all_tasks())


ROUTES = {
    "list": ("GET", "/recordings"),
    "recording": ("GET", f"/recordings/{RECORDING}"),
    "transcript": ("GET", "/transcripts/google_meet/abc-defg-hij"),
    "raw": ("GET", f"/recordings/{RECORDING}/media/{MEDIA}/raw"),
    "download": ("GET", f"/recordings/{RECORDING}/media/{MEDIA}/download"),
    "delete": ("DELETE", f"/recordings/{RECORDING}"),
}
"""Routes the gateway answers itself after asking the upstream for JSON."""

BROKEN = b'{"recordings": [{"id": 1,'
FAULTS: dict[str, tuple[Fault, dict[str, Any], int, str]] = {
    # name: (fault, its parameters, status, detail or the start of it)
    "silent": (Fault.HANG, {}, 504, TIMED_OUT["detail"]),
    "too slow": (Fault.DELAY, {"delay": TIMEOUT * 1.5}, 504, TIMED_OUT["detail"]),
    "500 with JSON": (Fault.ANSWER, {"answer": http_answer(500, b'{"detail": "boom"}')},
                      502, "The upstream meeting API answered 500"),
    "503 empty": (Fault.ANSWER, {"answer": http_answer(503, b"")},
                  502, "The upstream meeting API answered 503"),
    "malformed JSON": (Fault.ANSWER, {"answer": http_answer(200, BROKEN)},
                       502, "The upstream meeting API answered 200 without valid JSON"),
    "HTML": (Fault.ANSWER, {"answer": http_answer(200, b"<html>", content_type="text/html")},
             502, "The upstream meeting API answered 200 without valid JSON"),
    "truncated": (Fault.ANSWER, {"answer": http_answer(200, BROKEN, content_length=4000)},
                  502, "The upstream meeting API failed (ClientPayloadError)"),
    "reset": (Fault.RESET, {}, 502, "The upstream meeting API failed ("),
    "closed": (Fault.REFUSE_ANSWER, {}, 502, "The upstream meeting API failed ("),
}


@pytest.mark.parametrize("fault_name", FAULTS)
@pytest.mark.parametrize("route", ROUTES)
async def test_upstream_fault_on_a_gateway_route(side: Side, route: str,
                                                 fault_name: str) -> None:
    method, path = ROUTES[route]
    fault, params, status, detail = FAULTS[fault_name]
    side.proxy.add(fault, **params)
    seen = await call(side, method, path)
    assert side.proxy.faults, "the fault never happened"
    assert seen.status == status, seen.body
    assert seen.json()["detail"].startswith(detail)
    assert set(seen.json()) == {"detail"}
    if status == 504:  # after one timeout: not before, and not much after
        assert TIMEOUT * 0.9 <= seen.seconds < side.within(TIMEOUT)
    else:  # at once
        assert seen.seconds < side.within(0.0)
    assert side.probe.objects() == [KEY]  # a DELETE the upstream did not confirm keeps it
    assert side.api.deleted == []
    await assert_nothing_left(side)


@pytest.mark.parametrize("route", ["list", "recording", "transcript"])
async def test_upstream_client_error_without_a_body_is_still_json(side: Side,
                                                                  route: str) -> None:
    # Its 4xx passes through (a 422 for a bad limit stays 422), always as JSON.
    method, path = ROUTES[route]
    side.proxy.add(Fault.ANSWER, answer=http_answer(429, b""))
    seen = await call(side, method, path)
    assert seen.status == 429
    assert seen.json() == {"detail": "The upstream meeting API answered 429"}
    await assert_nothing_left(side)


@pytest.mark.parametrize("route", ROUTES)
async def test_slow_upstream_within_the_timeout(side: Side, route: str) -> None:
    method, path = ROUTES[route]
    side.proxy.add(Fault.DELAY, delay=TIMEOUT / 2)
    seen = await call(side, method, path)
    assert seen.status == 200 and seen.error is None, seen.body
    assert seen.seconds >= TIMEOUT / 2
    if route == "raw":
        assert seen.body == side.blob
    await assert_nothing_left(side)


@pytest.mark.parametrize("fault", [Fault.HANG, Fault.RESET, Fault.DROP_ANSWER])
async def test_upstream_delete_unconfirmed_keeps_the_bytes(side: Side, fault: Fault) -> None:
    # The upstream's GET answers; its DELETE does not (or its answer is lost after it
    # deleted). The bytes go only after the upstream said yes.
    side.proxy.add(fault, method="DELETE")
    seen = await call(side, "DELETE", f"/recordings/{RECORDING}")
    assert seen.status == (504 if fault is Fault.HANG else 502)
    assert set(seen.json()) == {"detail"}
    assert side.probe.objects() == [KEY]
    await assert_nothing_left(side)


class TestProxiedRoutes:
    """Routes passed through to the upstream: before the status line the same 502/504;
    after it, the client's connection is cut."""

    @pytest.mark.parametrize(("fault", "params", "status", "detail"), [
        (Fault.HANG, {}, 504, TIMED_OUT),
        (Fault.DELAY, {"delay": TIMEOUT * 1.5}, 504, TIMED_OUT),
        (Fault.RESET, {}, 502, None),
        (Fault.REFUSE_ANSWER, {}, 502, None),
    ])
    async def test_before_the_status_line(self, side: Side, fault: Fault,
                                          params: dict[str, Any], status: int,
                                          detail: dict[str, str] | None) -> None:
        side.proxy.add(fault, path="/big", **params)
        seen = await call(side, "GET", "/big?size=100000")
        assert seen.status == status
        assert set(seen.json()) == {"detail"}
        if detail is not None:
            assert seen.json() == detail
        assert seen.seconds < side.within(TIMEOUT if status == 504 else 0.0)
        await assert_nothing_left(side)

    async def test_upstream_resets_a_streamed_upload(self, side: Side) -> None:
        side.proxy.add(Fault.RESET, path="/echo")
        async with side.client.post("/echo", data=io.BytesIO(b"x" * 3_000_000),
                                    headers=ALICE) as resp:
            assert resp.status == 502
            assert (await resp.json())["detail"].startswith(
                "The upstream meeting API failed (")
        await assert_nothing_left(side)

    async def test_upstream_5xx_passes_through_as_it_is(self, side: Side) -> None:
        # The proxy is transparent: the upstream's own error, status and body, reach the
        # caller (docs/sidecar.md), as from any reverse proxy.
        side.proxy.add(Fault.ANSWER, path="/bots",
                       answer=http_answer(503, b'{"detail": "bots are restarting"}'))
        seen = await call(side, "GET", "/bots")
        assert seen.status == 503
        assert seen.json() == {"detail": "bots are restarting"}
        await assert_nothing_left(side)

    @pytest.mark.parametrize(("fault", "waits"), [
        (Fault.CUT_BODY, 0.0), (Fault.RESET_BODY, 0.0), (Fault.STALL_BODY, TIMEOUT)])
    async def test_after_the_status_line(self, side: Side, caplog: pytest.LogCaptureFixture,
                                         fault: Fault, waits: float) -> None:
        side.proxy.add(fault, path="/big", after=100_000)
        seen = await call(side, "GET", f"/big?size={1024 * 1024}")
        assert seen.status == 200
        assert isinstance(seen.error, aiohttp.ClientPayloadError)  # cut short, no hang
        assert 0 < len(seen.body) < 1024 * 1024
        assert waits * 0.9 <= seen.seconds < side.within(waits)
        assert any(r.name == "gateway.routes.upstream" and r.levelno == logging.WARNING
                   and "upstream failed during proxied /big" in r.getMessage()
                   for r in caplog.records)
        await assert_nothing_left(side)

    async def test_slow_but_each_wait_within_the_timeout(self, side: Side) -> None:
        side.proxy.add(Fault.TRICKLE, path="/big", piece=64 * 1024, delay=TIMEOUT / 4)
        seen = await call(side, "GET", f"/big?size={512 * 1024}")
        assert seen.status == 200 and seen.error is None
        assert len(seen.body) == 512 * 1024
        assert seen.seconds > TIMEOUT  # longer than the timeout in all
        await assert_nothing_left(side)


async def test_upstream_refusing_then_coming_back(side: Side) -> None:
    await side.proxy.refuse()
    for method, path in (*ROUTES.values(), ("GET", "/bots")):
        seen = await call(side, method, path)
        assert seen.status == 502
        assert seen.json() == UNREACHABLE
        assert seen.seconds < side.within(0.0)
    async with side.client.get("/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["checks"]["upstream"] == "unavailable"
    await side.proxy.listen()
    await assert_nothing_left(side)
    assert side.probe.objects() == [KEY]
