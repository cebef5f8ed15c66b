"""The player page: static files shipped in the package, under headers for a page that
holds an API key.

The page is `/player` in both modes and `/` as well in standalone mode. In sidecar
mode `/` stays the upstream's (the proxy owns every path the gateway does not), so
that putting the gateway in front of a meeting API never hides that API's own root.
The page's assets live under `/player/`, referred to relatively, so the page works
at both addresses and behind a proxy that mounts the gateway under a prefix.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from yarl import URL

from gateway.appkeys import SETTINGS

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PAGE = "player.html"
# Every file the page may load, with its type; nothing else under /player/ exists.
ASSETS = {
    "player.js": "text/javascript; charset=utf-8",
    "player.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
_PAGE_TYPE = "text/html; charset=utf-8"


def content_security_policy(public_url: str) -> str:
    """Scripts, styles, images and API calls from this origin only; no inline code.

    Media also from GATEWAY_PUBLIC_URL's origin when it names one, since signed
    playback links start with it. Forms go nowhere (the key is read by the script,
    never submitted in a URL), and no other site may frame the page.
    """
    media = "'self'"
    public = URL(public_url) if public_url.startswith(("http://", "https://")) else None
    if public is not None and public.host:
        media += f" {public.origin()}"
    return "; ".join((
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        f"media-src {media}",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ))


def security_headers(public_url: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(public_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        # Revalidated every time (FileResponse answers 304 to a matching ETag), so a
        # new release's page and script never mix with an old one in a cache.
        "Cache-Control": "no-cache",
    }


def _file(request: web.Request, name: str, content_type: str) -> web.FileResponse:
    headers = security_headers(request.app[SETTINGS].public_url)
    headers["Content-Type"] = content_type
    return web.FileResponse(STATIC_DIR / name, headers=headers)


async def page(request: web.Request) -> web.FileResponse:
    return _file(request, PAGE, _PAGE_TYPE)


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["file"]
    return _file(request, name, ASSETS[name])


async def trailing_slash(request: web.Request) -> web.Response:
    # The page's relative asset paths need `/player` exactly; relative, for a prefix.
    raise web.HTTPPermanentRedirect("../player")


def setup(app: web.Application, *, at_root: bool) -> None:
    """`/player` and its assets; `/` too when `at_root` (standalone mode)."""
    if at_root:
        app.router.add_get("/", page)
    app.router.add_get("/player", page)
    app.router.add_get("/player/", trailing_slash)
    names = "|".join(name.replace(".", r"\.") for name in ASSETS)
    app.router.add_get(f"/player/{{file:(?:{names})}}", asset)
