"""Prometheus metrics of one gateway app, exposed at GET /metrics.

Every app has its own CollectorRegistry, so several apps in one process (tests, or
an embedding program) never mix their numbers. Labels are bounded: a route is its
path template (`/recordings/{recording_id}`), never the raw path; a method outside
the usual few is `other`; storages are the configured names. Counts the code keeps
anyway (cache hits, failed authentications) are read when scraped, not counted twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import Any, Protocol, runtime_checkable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gateway.access_log import route_of
from gateway.cache import TtlCache
from gateway.ratelimit import FailedAuthLimiter

# A `_created` series per counter and histogram doubles what Prometheus stores, for a
# start time that process_start_time-style metrics or the first scrape give anyway.
disable_created_metrics()  # type: ignore[no-untyped-call]

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


@runtime_checkable
class CacheOwner(Protocol):
    """Something that keeps TtlCaches; their hit counts become metrics."""

    def caches(self) -> Mapping[str, TtlCache[Any, Any]]: ...


class _StateCollector(Collector):
    """Reads, when scraped, the counts that caches and the limiter keep themselves."""

    def __init__(self) -> None:
        self.caches: list[tuple[str, str, TtlCache[Any, Any]]] = []
        self.limiters: list[FailedAuthLimiter] = []

    def collect(self) -> Iterator[Metric]:
        labels = ("cache", "storage")
        hits = CounterMetricFamily(
            "gateway_cache_hits", "Lookups answered from an in-memory cache, by cache "
            "(storage: the storage whose cache it is, empty for the others).", labels=labels)
        misses = CounterMetricFamily(
            "gateway_cache_misses", "Lookups that had to ask the catalog, the upstream or the "
            "storage (or joined a load in flight), by cache.", labels=labels)
        for name, storage, cache in self.caches:
            hits.add_metric((name, storage), cache.hits)
            misses.add_metric((name, storage), cache.misses)
        yield hits
        yield misses
        if self.limiters:
            yield CounterMetricFamily(
                "gateway_auth_failures", "Failed authentications (401) counted against "
                "client addresses by the limiter.",
                value=sum(limiter.failures for limiter in self.limiters))
            yield CounterMetricFamily(
                "gateway_auth_refused", "Requests refused with 429 because their address "
                "failed authentication too often.",
                value=sum(limiter.refused for limiter in self.limiters))


class StorageMeter:
    """The metrics of one storage, with their label values bound once."""

    def __init__(self, metrics: Metrics, storage: str) -> None:
        self.storage = storage
        self.sent = metrics.media_sent.labels(storage)
        self.active = metrics.media_streams.labels(storage)
        self.first_byte = metrics.media_first_byte.labels(storage)
        self._seconds = {op: metrics.storage_seconds.labels(storage, op)
                         for op in STORAGE_OPERATIONS}
        self._errors = {op: metrics.storage_errors.labels(storage, op)
                        for op in (*STORAGE_OPERATIONS, STREAM)}

    def call(self, operation: str, seconds: float, *, failed: bool) -> None:
        self._seconds[operation].observe(seconds)
        if failed:
            self._errors[operation].inc()

    def stream_failed(self) -> None:
        self._errors[STREAM].inc()


class Metrics:
    """The registry of one app and every metric in it."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_http_requests", "HTTP requests answered, by route template (unmatched "
            "for paths no route serves), method and status.",
            ("route", "method", "status"), registry=registry)
        self.request_seconds = Histogram(
            "gateway_http_request_duration_seconds", "Seconds from a request's arrival until "
            "its handler finished (streamed bodies included), by route template and method.",
            ("route", "method"), buckets=LONG_BUCKETS, registry=registry)
        self.media_sent = Counter(
            "gateway_media_sent_bytes", "Media bytes handed to clients, by storage: sendfile "
            "and streamed chunks; an interrupted stream counts what went out.",
            ("storage",), registry=registry)
        self.media_streams = Gauge(
            "gateway_media_streams_active", "Media bodies being sent right now, by storage.",
            ("storage",), registry=registry)
        self.media_first_byte = Histogram(
            "gateway_media_first_byte_seconds", "Seconds from a media request's arrival until "
            "its body began to flow (authentication, catalog, opening and the first read "
            "included), by storage.", ("storage",), buckets=LATENCY_BUCKETS, registry=registry)
        self.storage_seconds = Histogram(
            "gateway_storage_operation_duration_seconds", "Seconds a storage call took, by "
            "storage and operation (write spans the whole upload, client included).",
            ("storage", "operation"), buckets=LONG_BUCKETS, registry=registry)
        self.storage_errors = Counter(
            "gateway_storage_errors", "Storage calls that failed on the storage's side "
            "(unreachable, timeout, throttled, full; not a missing object), by storage and "
            "operation; `stream` is a body that broke while it was sent.",
            ("storage", "operation"), registry=registry)
        self.upstream_seconds = Histogram(
            "gateway_upstream_request_duration_seconds", "Sidecar mode: seconds until the "
            "upstream meeting API's response headers arrived (or the call failed), by method.",
            ("method",), buckets=LATENCY_BUCKETS, registry=registry)
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Sidecar mode: upstream calls that failed, by method "
            "and reason (timeout, connection, other, or status_5xx for a 5xx answer).",
            ("method", "reason"), registry=registry)
        self._state = _StateCollector()
        registry.register(self._state)
        self._request_counters: dict[tuple[str, str, int], Counter] = {}
        self._request_timers: dict[tuple[str, str], Histogram] = {}

    def exposition(self) -> bytes:
        """The registry in the text format (CONTENT_TYPE)."""
        return generate_latest(self.registry)

    def storage(self, name: str) -> StorageMeter:
        return StorageMeter(self, name)

    def watch_caches(self, owner: object, *, storage: str = "") -> None:
        """Report the hits and misses of `owner`'s caches, if it keeps any."""
        if isinstance(owner, CacheOwner):
            self._state.caches.extend(
                (name, storage, cache) for name, cache in owner.caches().items())

    def watch_limiter(self, limiter: FailedAuthLimiter) -> None:
        self._state.limiters.append(limiter)

    def count_request(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method_label(method)
        # labels() validates and locks on every call: keep the children at hand.
        key = (route, method, status)
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self._request_counters[key] = self.requests.labels(
                route, method, str(status))
        counter.inc()
        timer = self._request_timers.get((route, method))
        if timer is None:
            timer = self._request_timers[(route, method)] = self.request_seconds.labels(
                route, method)
        timer.observe(seconds)

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
            self.upstream_seconds.labels(method).observe(time.perf_counter() - context.started)
            if params.response.status >= 500:
                self.upstream_errors.labels(method, "status_5xx").inc()

        async def on_exception(session: aiohttp.ClientSession, context: SimpleNamespace,
                               params: aiohttp.TraceRequestExceptionParams) -> None:
            exc = params.exception
            if isinstance(exc, asyncio.CancelledError):
                return  # the caller gave up, the upstream did not fail
            method = method_label(params.method)
            self.upstream_seconds.labels(method).observe(time.perf_counter() - context.started)
            reason = ("timeout" if isinstance(exc, TimeoutError) else
                      "connection" if isinstance(exc, aiohttp.ClientConnectionError | OSError)
                      else "other")
            self.upstream_errors.labels(method, reason).inc()

        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(on_start)
        trace.on_request_end.append(on_end)
        trace.on_request_exception.append(on_exception)
        return trace
