"""Liveness and readiness."""

from __future__ import annotations

from tests.conftest import Gateway


async def test_healthz(gw: Gateway) -> None:
    async with gw.client.get("/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


async def test_readyz_reports_each_dependency(gw: Gateway) -> None:
    # Azure is a named storage beside the environment's local `default`.
    others = {"storage:default": "ok"} if gw.backend == "azure" else {}
    tested = f"storage:{gw.settings.default_storage}"
    async with gw.client.get("/readyz") as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "status": "ready", "checks": {"catalog": "ok", **others, tested: "ok"}}
    gw.probe.break_storage()  # the volume, the bucket or the container went away
    async with gw.client.get("/readyz") as resp:
        assert resp.status == 503
        assert await resp.json() == {
            "status": "unavailable",
            "checks": {"catalog": "ok", **others, tested: "unavailable"},
        }
