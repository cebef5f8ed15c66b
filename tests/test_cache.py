"""TtlCache: expiry, single flight, invalidation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_single_flight_and_expiry() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(5, clock=clock)
    calls = 0
    release = asyncio.Event()

    async def load() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return calls

    waiters = [asyncio.create_task(cache.get("k", load)) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters) == [1] * 50
    assert calls == 1
    clock.now = 4.9
    assert await cache.get("k", load) == 1
    clock.now = 5.1
    assert await cache.get("k", load) == 2


async def test_none_and_errors_are_not_kept() -> None:
    cache: TtlCache[str, int] = TtlCache(60)
    results: list[int | None] = [None, 7]

    async def load() -> int | None:
        return results.pop(0)

    assert await cache.get("k", load) is None
    assert await cache.get("k", load) == 7

    async def fail() -> int:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        await cache.get("other", fail)
    assert await cache.get("other", load_value(3)) == 3


def load_value(value: int) -> Callable[[], Awaitable[int]]:
    async def load() -> int:
        return value

    return load


async def test_invalidate_drops_entry_and_in_flight_result() -> None:
    cache: TtlCache[str, int] = TtlCache(60)
    assert await cache.get("k", load_value(1)) == 1
    cache.invalidate("k")
    assert await cache.get("k", load_value(2)) == 2
    gate = asyncio.Event()

    async def slow() -> int:
        await gate.wait()
        return 3

    task = asyncio.create_task(cache.get("j", slow))
    await asyncio.sleep(0)
    cache.invalidate("j")  # e.g. a delete while a lookup was on its way
    gate.set()
    assert await task == 3
    assert await cache.get("j", load_value(4)) == 4  # the stale load was not kept


async def test_disabled_when_ttl_is_zero() -> None:
    cache: TtlCache[str, int] = TtlCache(0)
    assert await cache.get("k", load_value(1)) == 1
    assert await cache.get("k", load_value(2)) == 2
