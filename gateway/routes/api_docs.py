"""/openapi.json and /docs: the API's description, public in both modes."""

from __future__ import annotations

import functools
import json

from aiohttp import web

from gateway.appkeys import SETTINGS
from gateway.docs_page import Page, render
from gateway.openapi import served_document


class ApiDocs:
    """The document and its page, built on first use and kept (they never change)."""

    def __init__(self, public_url: str) -> None:
        self._public_url = public_url

    @functools.cached_property
    def _document(self) -> bytes:
        return json.dumps(served_document(self._public_url), ensure_ascii=False).encode()

    @functools.cached_property
    def _page(self) -> Page:
        return render(served_document(self._public_url))

    async def openapi_json(self, request: web.Request) -> web.Response:
        return web.Response(body=self._document, content_type="application/json",
                            charset="utf-8")

    async def docs_page(self, request: web.Request) -> web.Response:
        page = self._page
        return web.Response(text=page.html, content_type="text/html", headers={
            "Content-Security-Policy": page.content_security_policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        })


def setup(app: web.Application) -> None:
    docs = ApiDocs(app[SETTINGS].public_url)
    app.router.add_get("/openapi.json", docs.openapi_json)
    app.router.add_get("/docs", docs.docs_page)
