"""Reading and validating request parameters; every failure is a 4xx with a detail."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from gateway.appkeys import AUTHENTICATOR
from gateway.errors import BadRequest, Unprocessable
from gateway.models import Principal

ID_PATTERN = "[0-9]{1,16}"
"""Route pattern for ids: digits only, below 2**53 (other paths simply do not match)."""


def path_id(request: web.Request, name: str) -> int:
    return int(request.match_info[name])


def query_int(
    request: web.Request, name: str, *, default: int | None, low: int, high: int | None = None
) -> int | None:
    values = request.query.getall(name, [])
    if not values:
        return default
    if len(values) > 1:
        raise Unprocessable(f"Query parameter {name!r} is given more than once")
    raw = values[0]
    if not re.fullmatch(r"-?[0-9]{1,18}", raw):
        raise Unprocessable(f"Query parameter {name!r} must be an integer, got {raw!r}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise Unprocessable(f"Query parameter {name!r} must be {bounds}, got {value}")
    return value


def query_choice(request: web.Request, name: str, *, default: str | None) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise Unprocessable(f"Query parameter {name!r} is given more than once")
    return values[0] if values else default


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (empty body: empty object)."""
    if not request.can_read_body:
        return {}
    if request.content_type not in ("application/json", "application/octet-stream", ""):
        raise BadRequest("The body must be JSON (Content-Type: application/json)")
    raw = await request.read()
    if not raw:
        return {}  # whitespace alone is not JSON: 400 below
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Unprocessable("The body must be a JSON object")
    return body


def text_field(
    body: dict[str, Any], name: str, pattern: str, *, default: str | None = None
) -> str | None:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise Unprocessable(f"Field {name!r} must be a string matching {pattern}")
    return value


def int_field(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise Unprocessable(f"Field {name!r} must be a non-negative integer")
    return value


async def principal(request: web.Request) -> Principal:
    """The caller, from its API key or Bearer token (401 if there is none or it is wrong)."""
    return await request.app[AUTHENTICATOR].principal(request)
