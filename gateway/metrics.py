"""Prometheus metrics of one gateway app, exposed at GET /metrics.

Every app has its own CollectorRegistry, so several apps in one process (tests, or
an embedding program) never mix their numbers. Labels are bounded: a route is its
path template (`/recordings/{recording_id}`), never the raw path; a method outside
the usual few is `other`; storages are the configured names. Counts the code keeps
anyway (cache hits, failed authentications) are read when scraped, not counted twice.

The numbers are plain ints and floats, turned into prometheus-client metric families
when scraped, rather than prometheus-client's Counter and Histogram objects: those
take a lock on every change, for threads, and with a few per request they cost a
measurable share of a 64 KiB range request's CPU. Every change here happens on the
event loop's one thread, so no lock is needed. The format, the registry and the
exposition stay prometheus-client's.
"""

from __future__ import annotations

import asyncio
import functools
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from itertools import accumulate
from types import SimpleNamespace
from typing import Any, Protocol, runtime_checkable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.access_log import route_of
from gateway.cache import TtlCache
from gateway.ratelimit import FailedAuthLimiter

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text exposition format, which every Prometheus version reads."""
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
STORAGE_OPERATIONS = ("open", "read", "write", "delete", "presign", "ping", "check")
STREAM = "stream"
"""The operation of a storage body failing while it is sent (errors only, no latency)."""
REQUEST_START = web.RequestKey("request_start", float)

# Seconds. Requests include whole downloads and uploads, which can take long.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
LONG_BUCKETS = (*LATENCY_BUCKETS, 30.0, 60.0, 300.0, 1800.0)


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


class Histogram:
    """Observations counted into buckets (`le` each bound, then +Inf), and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by `le`, as the exposition format wants them."""
        return list(zip(_le_labels(self.bounds), map(float, accumulate(self.counts)),
                        strict=True))


@functools.cache
def _le_labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """`le` values written as prometheus-client's own histograms write them (`1.0`, `+Inf`)."""
    return tuple(floatToGoString(bound)  # type: ignore[no-untyped-call]
                 for bound in (*bounds, float("inf")))


def _histograms(name: str, documentation: str, labels: tuple[str, ...],
                children: Iterable[tuple[tuple[str, ...], Histogram]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, histogram in children:
        family.add_metric(values, histogram.buckets(), histogram.sum)
    return family


def _counters(name: str, documentation: str, labels: tuple[str, ...],
              children: Iterable[tuple[tuple[str, ...], float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, count in children:
        family.add_metric(values, count)
    return family


@runtime_checkable
class CacheOwner(Protocol):
    """Something that keeps TtlCaches; their hit counts become metrics."""

    def caches(self) -> Mapping[str, TtlCache[Any, Any]]: ...


class StorageMeter:
    """The numbers of one storage: its calls, and the media bytes it streams to clients."""

    __slots__ = ("active", "errors", "first_byte", "open_seconds", "read_seconds", "seconds",
                 "sent", "spliced", "storage")

    def __init__(self, storage: str) -> None:
        self.storage = storage
        self.sent = 0  # media bytes handed to clients
        self.spliced = 0  # of those, bytes relayed by splice(2), never in user space
        self.active = 0  # media bodies being sent now
        self.first_byte = Histogram(LATENCY_BUCKETS)
        self.seconds = {op: Histogram(LONG_BUCKETS) for op in STORAGE_OPERATIONS}
        self.errors = dict.fromkeys((*STORAGE_OPERATIONS, STREAM), 0)
        # The two calls of every media request, at hand without a lookup.
        self.open_seconds = self.seconds["open"]
        self.read_seconds = self.seconds["read"]

    def call(self, operation: str, seconds: float, *, failed: bool) -> None:
        self.seconds[operation].observe(seconds)
        if failed:
            self.errors[operation] += 1

    def stream_failed(self) -> None:
        self.errors[STREAM] += 1


class Metrics(Collector):
    """The numbers of one app, and the registry that serves them."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        self._request_seconds: dict[tuple[str, str], Histogram] = {}
        self._storages: dict[str, StorageMeter] = {}
        self._upstream_seconds: dict[str, Histogram] = {}
        self._upstream_errors: dict[tuple[str, str], int] = {}
        self._caches: list[tuple[str, str, TtlCache[Any, Any]]] = []
        self._limiters: list[FailedAuthLimiter] = []
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def exposition(self) -> bytes:
        """The registry in the text format (CONTENT_TYPE)."""
        return generate_latest(self.registry)

    def storage(self, name: str) -> StorageMeter:
        """The meter of a storage, created at startup so that its series exist from then."""
        meter = self._storages.get(name)
        if meter is None:
            meter = self._storages[name] = StorageMeter(name)
        return meter

    def watch_caches(self, owner: object, *, storage: str = "") -> None:
        """Report the hits and misses of `owner`'s caches, if it keeps any."""
        if isinstance(owner, CacheOwner):
            self._caches.extend((name, storage, cache) for name, cache in owner.caches().items())

    def watch_limiter(self, limiter: FailedAuthLimiter) -> None:
        self._limiters.append(limiter)

    def count_request(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method_label(method)
        key = (route, method, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        histogram = self._request_seconds.get((route, method))
        if histogram is None:
            histogram = self._request_seconds[(route, method)] = Histogram(LONG_BUCKETS)
        histogram.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        """Every metric family, built from the numbers as they are now."""
        yield _counters(
            "gateway_http_requests", "HTTP requests answered, by route template (unmatched "
            "for paths no route serves), method and status.", ("route", "method", "status"),
            (((route, method, str(status)), count)
             for (route, method, status), count in self._requests.items()))
        yield _histograms(
            "gateway_http_request_duration_seconds", "Seconds from a request's arrival until "
            "its handler finished (streamed bodies included), by route template and method.",
            ("route", "method"), self._request_seconds.items())
        storages = self._storages.values()
        yield _counters(
            "gateway_media_sent_bytes", "Media bytes handed to clients, by storage: sendfile "
            "and streamed chunks; an interrupted stream counts what went out.", ("storage",),
            (((m.storage,), m.sent) for m in storages))
        yield _counters(
            "gateway_media_spliced_bytes", "Of the media bytes sent, those relayed from the "
            "storage's connection to the client's by splice(2), never copied into the "
            "gateway (large ranges between plain TCP connections, on Linux).", ("storage",),
            (((m.storage,), m.spliced) for m in storages))
        active = GaugeMetricFamily(
            "gateway_media_streams_active", "Media bodies being sent right now, by storage.",
            labels=("storage",))
        for meter in storages:
            active.add_metric((meter.storage,), meter.active)
        yield active
        yield _histograms(
            "gateway_media_first_byte_seconds", "Seconds from a media request's arrival until "
            "its body began to flow (authentication, catalog, opening and the first read "
            "included), by storage.", ("storage",),
            (((m.storage,), m.first_byte) for m in storages))
        yield _histograms(
            "gateway_storage_operation_duration_seconds", "Seconds a storage call took, by "
            "storage and operation (write spans the whole upload, client included).",
            ("storage", "operation"),
            (((m.storage, op), h) for m in storages for op, h in m.seconds.items()))
        yield _counters(
            "gateway_storage_errors", "Storage calls that failed on the storage's side "
            "(unreachable, timeout, throttled, full; not a missing object), by storage and "
            "operation; `stream` is a body that broke while it was sent.",
            ("storage", "operation"),
            (((m.storage, op), n) for m in storages for op, n in m.errors.items()))
        yield _histograms(
            "gateway_upstream_request_duration_seconds", "Sidecar mode: seconds until the "
            "upstream meeting API's response headers arrived (or the call failed), by method.",
            ("method",), (((method,), h) for method, h in self._upstream_seconds.items()))
        yield _counters(
            "gateway_upstream_errors", "Sidecar mode: upstream calls that failed, by method "
            "and reason (timeout, connection, other, or status_5xx for a 5xx answer).",
            ("method", "reason"), self._upstream_errors.items())
        yield from self._cache_families()
        if self._limiters:
            yield CounterMetricFamily(
                "gateway_auth_failures", "Failed authentications (401) counted against "
                "client addresses by the limiter.",
                value=sum(limiter.failures for limiter in self._limiters))
            yield CounterMetricFamily(
                "gateway_auth_refused", "Requests refused with 429 because their address "
                "failed authentication too often.",
                value=sum(limiter.refused for limiter in self._limiters))

    def _cache_families(self) -> Iterator[Metric]:
        labels = ("cache", "storage")
        yield _counters(
            "gateway_cache_hits", "Lookups answered from an in-memory cache, by cache "
            "(storage: the storage whose cache it is, empty for the others).", labels,
            (((name, storage), cache.hits) for name, storage, cache in self._caches))
        yield _counters(
            "gateway_cache_misses", "Lookups that had to ask the catalog, the upstream or the "
            "storage (or joined a load in flight), by cache.", labels,
            (((name, storage), cache.misses) for name, storage, cache in self._caches))

    def middleware(self) -> Middleware:
        """Counts and times every request; put just inside the request id middleware."""

        @web.middleware
        async def measure_requests(request: web.Request,
                                   handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            request[REQUEST_START] = started
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:  # only below 400: the error middleware answers
                status = exc.status
                raise
            except asyncio.CancelledError:
                status = 499  # the mark of a request closed by its client
                raise
            finally:
                self.count_request(route_of(request), request.method, status,
                                   time.perf_counter() - started)

        return measure_requests

    def upstream_trace(self) -> aiohttp.TraceConfig:
        """Client tracing for the upstream session: latency and failures of every call."""

        async def on_start(session: aiohttp.ClientSession, context: SimpleNamespace,
                           params: aiohttp.TraceRequestStartParams) -> None:
            context.started = time.perf_counter()

        async def on_end(session: aiohttp.ClientSession, context: SimpleNamespace,
                         params: aiohttp.TraceRequestEndParams) -> None:
            method = method_label(params.method)
            self._upstream_call(method, time.perf_counter() - context.started)
            if params.response.status >= 500:
                self._upstream_failed(method, "status_5xx")

        async def on_exception(session: aiohttp.ClientSession, context: SimpleNamespace,
                               params: aiohttp.TraceRequestExceptionParams) -> None:
            exc = params.exception
            if isinstance(exc, asyncio.CancelledError):
                return  # the caller gave up, the upstream did not fail
            method = method_label(params.method)
            self._upstream_call(method, time.perf_counter() - context.started)
            self._upstream_failed(method, "timeout" if isinstance(exc, TimeoutError) else
                                  "connection" if isinstance(exc, aiohttp.ClientConnectionError
                                                             | OSError) else "other")

        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(on_start)
        trace.on_request_end.append(on_end)
        trace.on_request_exception.append(on_exception)
        return trace

    def _upstream_call(self, method: str, seconds: float) -> None:
        histogram = self._upstream_seconds.get(method)
        if histogram is None:
            histogram = self._upstream_seconds[method] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def _upstream_failed(self, method: str, reason: str) -> None:
        key = (method, reason)
        self._upstream_errors[key] = self._upstream_errors.get(key, 0) + 1
