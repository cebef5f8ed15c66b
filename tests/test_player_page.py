"""The player page's files and headers, in both modes (the browser drives it elsewhere)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from gateway.routes.player import ASSETS, STATIC_DIR, content_security_policy
from gateway.settings import Settings
from tests.conftest import AiohttpClient, Gateway, local_only, start_gateway
from tests.test_sidecar import AiohttpServer, start_sidecar

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; media-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'; require-trusted-types-for 'script'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
PAGE = (STATIC_DIR / "player.html").read_bytes()


class PageParser(HTMLParser):
    """What a page loads and runs: script and link targets, inline code of any kind."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}={value!r}>")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            self._in_script = True
            if not values.get("src"):
                self.inline.append("<script> without src")
        for name in ("src", "href"):
            if tag in ("script", "link", "img", "audio", "video") and values.get(name):
                self.loads.append(str(values[name]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"script text {data.strip()[:40]!r}")


@local_only
@pytest.mark.parametrize("path", ["/", "/player"])
async def test_the_page_with_headers_for_a_page_that_holds_a_key(gw: Gateway, path: str) -> None:
    async with gw.client.get(path) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        for name, value in SECURITY_HEADERS.items():
            assert resp.headers[name] == value, name
        assert await resp.read() == PAGE
        etag = resp.headers["ETag"]
    async with gw.client.get(path, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
    async with gw.client.head(path) as resp:
        assert resp.status == 200 and await resp.read() == b""


@local_only
async def test_everything_the_page_loads_is_served_here_with_the_same_headers(
    gw: Gateway,
) -> None:
    parser = PageParser()
    parser.feed(PAGE.decode())
    assert sorted(parser.loads) == sorted(f"player/{name}" for name in ASSETS)
    for name, content_type in ASSETS.items():
        async with gw.client.get(f"/player/{name}") as resp:
            assert resp.status == 200, name
            assert resp.headers["Content-Type"] == content_type
            assert {k: resp.headers[k] for k in SECURITY_HEADERS} == SECURITY_HEADERS
            assert await resp.read() == (STATIC_DIR / name).read_bytes()


def test_no_inline_code_no_outside_hosts_no_html_sinks() -> None:
    parser = PageParser()
    parser.feed(PAGE.decode())
    assert parser.inline == []
    assert all(not re.match(r"[a-z]+:|//", url) for url in parser.loads), parser.loads
    for name in ("player.html", "player.js", "player.css"):
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"https?://|@import|url\(", text), name
    script = (STATIC_DIR / "player.js").read_text()
    # Trusted Types are required: text goes in through textContent, never as HTML.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):
        assert sink not in script, sink


@local_only
@pytest.mark.parametrize("path", ["/player/player.html", "/player/other.js",
                                  "/player/../gateway/settings.py", "/player/player.js.map",
                                  "/index.html", "/static/player.js"])
async def test_nothing_else_is_served(gw: Gateway, path: str) -> None:
    async with gw.client.get(path) as resp:
        assert resp.status == 404
        assert set(await resp.json()) == {"detail"}


@local_only
async def test_a_trailing_slash_goes_to_the_page(gw: Gateway) -> None:
    async with gw.client.get("/player/", allow_redirects=False) as resp:
        assert resp.status == 308
        assert resp.headers["Location"] == "../player"
    async with gw.client.get("/player/") as resp:
        assert resp.status == 200 and str(resp.url).endswith("/player")


def test_media_may_also_come_from_the_public_url() -> None:
    assert "media-src 'self';" in content_security_policy("")
    assert "media-src 'self';" in content_security_policy("/api")
    assert "media-src 'self' https://media.example.com:8443;" in content_security_policy(
        "https://media.example.com:8443/api")


@local_only
async def test_the_public_url_reaches_the_header(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    gw = await start_gateway(aiohttp_client,
                             settings.with_changes(public_url="https://rec.example.com"))
    async with gw.client.get("/") as resp:
        assert "media-src 'self' https://rec.example.com;" in resp.headers[
            "Content-Security-Policy"]


@local_only
async def test_sidecar_keeps_the_upstreams_root_and_serves_the_page_at_player(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, settings: Settings,
) -> None:
    side = await start_sidecar(aiohttp_client, aiohttp_server, settings)
    async with side.client.get("/") as resp:
        assert resp.status == 200
        assert await resp.json() == {"service": "meeting-api"}  # the upstream's own root
        assert "Content-Security-Policy" not in resp.headers
    async with side.client.get("/player") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Security-Policy"] == CSP
        assert await resp.read() == PAGE
    async with side.client.get("/player/player.js") as resp:
        assert resp.status == 200
        assert await resp.read() == (STATIC_DIR / "player.js").read_bytes()
