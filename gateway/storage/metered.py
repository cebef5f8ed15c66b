"""Any storage, measured: its calls timed and failures counted, its bytes to clients counted.

A wrapper rather than code in each backend, so that every backend (and any new one)
is measured the same way and the backends stay about storage alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

from gateway.errors import GatewayError
from gateway.metrics import REQUEST_START, STREAM, Metrics, StorageMeter
from gateway.storage.base import ByteSource, CheckReport, ObjectInfo, Storage, StoredObject
from gateway.storage.registry import StorageRegistry

_T = TypeVar("_T")


_HEALTH_CHECKS = frozenset(("ping", "check"))


def is_storage_failure(exc: BaseException, operation: str) -> bool:
    """A fault of the storage (502/503/504/507, or unexpected), not an answer.

    A missing object, an existing one (409) and the upload's own errors (413, a
    broken request body) pass through storage calls but are not the storage's fault.
    A ping or check that does not pass is a failure whatever it says (a missing bucket).
    """
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, GatewayError) and operation not in _HEALTH_CHECKS:
        return exc.status >= 500
    return True


async def _timed(meter: StorageMeter, operation: str, call: Awaitable[_T]) -> _T:
    started = time.perf_counter()
    try:
        result = await call
    except asyncio.CancelledError:
        raise  # the request went away; the storage did nothing wrong
    except BaseException as exc:
        meter.call(operation, time.perf_counter() - started,
                   failed=is_storage_failure(exc, operation))
        raise
    meter.call(operation, time.perf_counter() - started, failed=False)
    return result


# Every media request opens, reads and sends, so those three are written out in full
# below (rather than through _timed) and `close` hands back the wrapped coroutine:
# each extra coroutine frame is a measurable share of a 64 KiB range request.


class MeteredRange:
    """A byte source whose bytes to the client, and the stream itself, are counted."""

    __slots__ = ("_first", "_meter", "_source")

    def __init__(self, source: ByteSource, meter: StorageMeter, *, first: bool) -> None:
        self._source = source
        self._meter = meter
        self._first = first

    @property
    def sent(self) -> int:
        return self._source.sent

    async def send(self, request: web.BaseRequest, response: web.StreamResponse) -> int:
        meter = self._meter
        if self._first:
            # The headers went out with prepare(), just before the first range is sent.
            started = request.get(REQUEST_START)
            if started is not None:
                meter.first_byte.observe(time.perf_counter() - started)
        meter.active += 1
        try:
            return await self._source.send(request, response)
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went away
        except BaseException as exc:
            if is_storage_failure(exc, STREAM):
                meter.stream_failed()
            raise
        finally:
            meter.active -= 1
            meter.sent += self._source.sent
            meter.spliced += getattr(self._source, "spliced", 0)

    def chunks(self) -> AsyncGenerator[bytes, None]:
        # Bytes the gateway reads itself (waveform peaks): none of them go to a client.
        return self._source.chunks()

    def close(self) -> Coroutine[Any, Any, None]:
        return self._source.close()


class MeteredObject:
    __slots__ = ("_meter", "_object", "_reads", "info")

    def __init__(self, stored: StoredObject, meter: StorageMeter) -> None:
        self._object = stored
        self._meter = meter
        self._reads = 0
        self.info: ObjectInfo = stored.info

    async def read(self, start: int, length: int) -> MeteredRange:
        started = time.perf_counter()
        try:
            source = await self._object.read(start, length)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._meter.call("read", time.perf_counter() - started,
                             failed=is_storage_failure(exc, "read"))
            raise
        self._meter.read_seconds.observe(time.perf_counter() - started)
        self._reads += 1
        return MeteredRange(source, self._meter, first=self._reads == 1)

    def close(self) -> Coroutine[Any, Any, None]:
        return self._object.close()


class MeteredStorage:
    """A Storage that reports to a StorageMeter; it behaves exactly as the one it wraps."""

    def __init__(self, storage: Storage, meter: StorageMeter) -> None:
        self._storage = storage
        self._meter = meter

    @property
    def inner(self) -> Storage:
        """The storage measured here, for abilities beyond the protocol (sweeping)."""
        return self._storage

    @property
    def name(self) -> str:
        return self._storage.name

    @property
    def backend(self) -> str:
        return self._storage.backend

    async def open(self, key: str) -> MeteredObject:
        started = time.perf_counter()
        try:
            stored = await self._storage.open(key)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._meter.call("open", time.perf_counter() - started,
                             failed=is_storage_failure(exc, "open"))
            raise
        self._meter.open_seconds.observe(time.perf_counter() - started)
        return MeteredObject(stored, self._meter)

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        return await _timed(self._meter, "write", self._storage.write(key, chunks))

    async def delete(self, key: str) -> None:
        await _timed(self._meter, "delete", self._storage.delete(key))

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int
    ) -> str | None:
        return await _timed(self._meter, "presign", self._storage.presigned_url(
            key, filename=filename, content_type=content_type, expires_in=expires_in))

    async def ping(self) -> None:
        await _timed(self._meter, "ping", self._storage.ping())

    async def check(self) -> CheckReport:
        return await _timed(self._meter, "check", self._storage.check())

    def describe(self) -> dict[str, str]:
        return self._storage.describe()

    def close(self) -> Coroutine[Any, Any, None]:
        return self._storage.close()


def metered(storages: StorageRegistry, metrics: Metrics) -> StorageRegistry:
    """The same storages, each measured under its name; their caches reported too."""

    def measure(storage: Storage) -> Storage:
        metrics.watch_caches(storage, storage=storage.name)
        return MeteredStorage(storage, metrics.storage(storage.name))

    return storages.wrapped(measure)
