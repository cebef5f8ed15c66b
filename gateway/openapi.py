"""The OpenAPI 3.1 document of the gateway's API.

It is written by hand in `gateway/openapi.json` (package data), not generated from the
handlers: the handlers are thin and untyped at the HTTP edge, so a generator would
know less than the file says. tests/test_openapi.py keeps the two honest (every route
documented, every documented route registered, path patterns equal, and a schemathesis
run against a live gateway).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

DOCUMENT_FILE = "openapi.json"


@functools.cache
def _source() -> str:
    return resources.files("gateway").joinpath(DOCUMENT_FILE).read_text(encoding="utf-8")


def load_document() -> dict[str, Any]:
    """The document as kept in the package (a fresh copy; callers may change it)."""
    document: dict[str, Any] = json.loads(_source())
    return document


def served_document(public_url: str) -> dict[str, Any]:
    """The document as served: its server is GATEWAY_PUBLIC_URL, else `/` (the same host).

    A relative server URL is resolved against where the document was fetched from
    (OpenAPI 3.1 §4.8.5), so nothing about this deployment is written in the file.
    """
    document = load_document()
    document["servers"] = [{"url": public_url or "/"}]
    return document
