"""The access log: one line per request, the principal by id, credentials never.

aiohttp's default line holds the whole request target, and a signed link's query is
a credential until it expires; so are presigned S3 query parameters. They are
written as `[redacted]`. The principal is named by user id (API keys), by a short
hash (credentials forwarded to an upstream), or as `link:<by>` for a signed link. Each line carries
the request id; in JSON mode (gateway/logs.py) its fields become the line's keys.
"""

from __future__ import annotations

import hashlib
import logging
import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.request_id import REQUEST_ID

PRINCIPAL = web.RequestKey("principal", str)
UNMATCHED_ROUTE = "unmatched"
"""The route of a request that no route serves (404, 405), or that never got routed."""

CREDENTIAL_LOGGERS = ("botocore", "aiobotocore")
"""Libraries whose debug lines hold request signatures and access key ids."""

_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:signature|x-amz-signature|x-amz-security-token|x-amz-credential"
    r"|api_key|apikey|access_token|token|key)=)[^&#]*")


def redact(target: str) -> str:
    """The request target with the values of credential-like query parameters hidden."""
    return _SECRET_QUERY.sub(r"\1[redacted]", target)


def quiet_credential_loggers() -> None:
    """Keep CREDENTIAL_LOGGERS at INFO or above, whatever the gateway's own level.

    botocore logs every signature it computes at DEBUG, presigned download URLs
    included, and such a signature is a credential for as long as its URL lives.
    """
    for name in CREDENTIAL_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def short_hash(secret: str) -> str:
    """Enough to tell credentials apart in a log, too little to use one."""
    return hashlib.sha256(secret.encode()).hexdigest()[:10]


def remember_principal(request: web.Request, name: str) -> None:
    request[PRINCIPAL] = name


def principal_name(request: web.Request) -> str:
    """The id remember_principal recorded for this request (after authentication)."""
    return request[PRINCIPAL]


def route_of(request: web.BaseRequest) -> str:
    """The matched route's path template, such as `/recordings/{recording_id}`.

    Never the raw path: it names a kind of request, in a bounded set of values.
    """
    try:
        match_info = request.match_info  # type: ignore[attr-defined]
        resource = None if match_info.http_exception is not None else match_info.route.resource
    except (AttributeError, AssertionError):  # a request that never reached the router
        return UNMATCHED_ROUTE
    return UNMATCHED_ROUTE if resource is None else str(resource.canonical)


class AccessLogger(AbstractAccessLogger):
    """`remote "METHOD target HTTP/x.y" status bytes duration principal=… request_id=…
    "user-agent"`."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        version = request.version
        target = redact(request.raw_path)
        principal = request.get(PRINCIPAL, "-")
        request_id = request.get(REQUEST_ID)
        user_agent = request.headers.get("User-Agent")
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.1fms principal=%s request_id=%s "%s"',
            request.remote or "-", request.method, target, version.major, version.minor,
            response.status, response.body_length, time * 1000, principal, request_id or "-",
            user_agent or "-",
            # The same fields for structured handlers (names as aiohttp's own logger uses),
            # and `access`: the keys of a JSON line.
            extra={"remote_address": request.remote, "request_method": request.method,
                   "request_target": target, "response_status": response.status,
                   "response_size": response.body_length, "request_time": time,
                   "principal": principal, "request_id": request_id,
                   "access": {
                       "method": request.method, "route": route_of(request), "path": target,
                       "status": response.status, "bytes": response.body_length,
                       "duration_ms": round(time * 1000, 3), "principal": principal,
                       "request_id": request_id, "remote": request.remote,
                       "user_agent": user_agent,
                   }},
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
