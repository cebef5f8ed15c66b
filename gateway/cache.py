"""A small in-memory TTL cache with single-flight loading."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Keeps loaded values for `ttl` seconds; concurrent misses share one load.

    Loads that return None are not kept, so a missing item is looked up again.
    Bounded: when full, the oldest entries go first.
    """

    def __init__(
        self, ttl: float, *, max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Task[V | None]] = {}
        self.hits = 0
        self.misses = 0

    async def get(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        if self._ttl <= 0:
            return await load()
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                self.hits += 1
                return entry[1]
            del self._entries[key]
        self.misses += 1
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        # Shielded: one cancelled waiter must not cancel the load the others share.
        return await asyncio.shield(task)

    def _loaded(self, key: K, task: asyncio.Task[V | None]) -> None:
        # Retrieving the exception here keeps asyncio from warning when no waiter is left.
        failed = task.cancelled() or task.exception() is not None
        if self._loading.get(key) is not task:
            return  # invalidated while loading: the result may already be stale
        del self._loading[key]
        value = None if failed else task.result()
        if value is None:
            return
        if len(self._entries) >= self._max_entries:
            for old in list(self._entries)[: self._max_entries // 10 or 1]:
                del self._entries[old]
        self._entries[key] = (self._clock() + self._ttl, value)

    def invalidate(self, key: K) -> None:
        self._entries.pop(key, None)
        self._loading.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
