"""Failed authentication, limited per client address, so keys cannot be guessed at line speed.

A token bucket per address: every answer 401 (a wrong or missing API key, a bad
signed link, or the upstream's own 401 in sidecar mode) takes a token; tokens
come back at a steady rate up to the burst. An address without tokens gets 429
with Retry-After for every request until one is back. Correct requests take no
token, so clients that authenticate never notice the limit.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.errors import GatewayError, Unauthorized

MAX_CLIENTS = 100_000
"""Addresses remembered at most; the ones seen longest ago are forgotten first."""


class TooManyRequests(GatewayError):
    status = 429
    default_detail = "Too many failed authentication attempts from this address; retry later"


class FailedAuthLimiter:
    def __init__(self, burst: int, per_second: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._burst = float(burst)
        self._rate = per_second
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.failures = 0  # failed authentications counted, for metrics
        self.refused = 0  # requests answered 429

    def _tokens(self, client: str) -> float:
        entry = self._buckets.get(client)
        if entry is None:
            return self._burst
        tokens, stamp = entry
        return min(self._burst, tokens + (self._clock() - stamp) * self._rate)

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None if it may now."""
        tokens = self._tokens(client)
        if tokens >= 1:
            return None
        return max(1, math.ceil((1 - tokens) / self._rate))

    def failed(self, client: str) -> None:
        self.failures += 1
        self._buckets[client] = (self._tokens(client) - 1, self._clock())
        self._buckets.move_to_end(client)
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)

    def middleware(self) -> Middleware:
        @web.middleware
        async def limit_failed_auth(request: web.Request,
                                    handler: Handler) -> web.StreamResponse:
            client = request.remote or ""
            wait = self.retry_after(client)
            if wait is not None:
                self.refused += 1
                raise TooManyRequests(headers={"Retry-After": str(wait)})
            try:
                response = await handler(request)
            except Unauthorized:
                self.failed(client)
                raise
            if response.status == 401:  # proxied from the upstream
                self.failed(client)
            return response

        return limit_failed_auth
