"""The gateway's exceptions; each one is an HTTP status with a JSON `detail`."""

from __future__ import annotations

from collections.abc import Mapping


class GatewayError(Exception):
    """An error the client may see: `{"detail": ...}` with `status`."""

    status = 500
    default_detail = "Internal server error"

    def __init__(self, detail: str | None = None, *, headers: Mapping[str, str] | None = None):
        self.detail = detail or self.default_detail
        self.headers = dict(headers or {})
        super().__init__(self.detail)


class BadRequest(GatewayError):
    status = 400
    default_detail = "Bad request"


class Unauthorized(GatewayError):
    status = 401
    default_detail = "Invalid or missing API key"

    def __init__(self, detail: str | None = None, *, scheme: str = "APIKey") -> None:
        # RFC 9110 §15.5.2: a 401 carries a challenge (RFC 6750 §3 for Bearer).
        challenge = f'{scheme} realm="recordings"'
        if scheme == "Bearer" and detail:
            challenge += ', error="invalid_token"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(GatewayError):
    status = 403
    default_detail = "Not allowed"


class NotFound(GatewayError):
    status = 404
    default_detail = "Not found"


class Conflict(GatewayError):
    status = 409
    default_detail = "Conflict"


class PreconditionFailed(GatewayError):
    status = 412
    default_detail = "Precondition failed"


class PayloadTooLarge(GatewayError):
    status = 413
    default_detail = "Upload is larger than the configured limit"


class RangeNotSatisfiable(GatewayError):
    status = 416
    default_detail = "Requested range not satisfiable"


class Unprocessable(GatewayError):
    status = 422
    default_detail = "Invalid parameters"


class StorageUnavailable(GatewayError):
    status = 502
    default_detail = "Storage did not answer properly"


class ServiceUnavailable(GatewayError):
    status = 503
    default_detail = "Temporarily unavailable; retry"


class GatewayTimeout(GatewayError):
    status = 504
    default_detail = "Storage did not answer in time"


class InsufficientStorage(GatewayError):
    status = 507
    default_detail = "Storage is full"
