"""The error middleware on a real server: JSON details, and a 500 that leaks nothing."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import Conflict
from gateway.middlewares import error_middleware
from tests.conftest import AiohttpClient


async def test_unexpected_error_is_a_bare_500(aiohttp_client: AiohttpClient) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("cannot open /srv/secret/recordings/1/2/x.wav")

    async def conflict(request: web.Request) -> web.Response:
        raise Conflict("already there", headers={"Retry-After": "1"})

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/broken", broken)
    app.router.add_get("/conflict", conflict)
    client = await aiohttp_client(app)
    async with client.get("/broken") as resp:
        assert resp.status == 500
        assert await resp.text() == '{"detail": "Internal server error"}'
    async with client.get("/conflict") as resp:
        assert resp.status == 409
        assert await resp.json() == {"detail": "already there"}
        assert resp.headers["Retry-After"] == "1"
    async with client.post("/conflict") as resp:
        assert resp.status == 405
        assert await resp.json() == {"detail": "Method Not Allowed"}
        assert resp.headers["Allow"] == "GET,HEAD"
