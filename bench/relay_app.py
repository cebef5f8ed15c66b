"""Bare aiohttp baseline for bench/s3_bench.py: objects relayed from their URLs.

    python bench/relay_app.py --port 8082 --url 'http://127.0.0.1:9000/bucket/key?X-Amz-...'

answers GET /object/N by one GET of the N-th `--url` (0 first; presigned GetObjects)
with the client's Range header, if any, and streams the answer back the way an aiohttp
handler usually does (`async for chunk in answer.content.iter_any(): await
response.write(chunk)`), with its status, Content-Length, Content-Range, ETag and
Last-Modified; plus GET /healthz.

No authentication, no catalog, no metrics, no range logic of its own: what is left is
the cost of aiohttp itself, server and client, for one relayed request. Its session is
set up as the gateway's store session is (no cookie jar, no decompression). One
process, default asyncio loop, no access log: the same conditions as the gateway with
GATEWAY_LOG_LEVEL=warning.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import hdrs, web
from yarl import URL

SESSION = web.AppKey("session", aiohttp.ClientSession)
RELAYED = (hdrs.CONTENT_RANGE, hdrs.CONTENT_TYPE, hdrs.ETAG, hdrs.LAST_MODIFIED)


def make_app(urls: list[URL]) -> web.Application:
    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                         auto_decompress=False) as http:
            app[SESSION] = http
            yield

    async def relay(request: web.Request) -> web.StreamResponse:
        index = int(request.match_info["index"])
        if index >= len(urls):
            raise web.HTTPNotFound()
        headers = {hdrs.RANGE: request.headers[hdrs.RANGE]} if hdrs.RANGE in request.headers \
            else {}
        async with request.app[SESSION].get(urls[index], headers=headers) as answer:
            response = web.StreamResponse(
                status=answer.status,
                headers={k: answer.headers[k] for k in RELAYED if k in answer.headers})
            if answer.content_length is not None:
                response.content_length = answer.content_length
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_get(r"/object/{index:\d{1,3}}", relay)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--url", required=True, action="append",
                        help="an object's (presigned) URL; repeat for more objects")
    args = parser.parse_args()
    app = make_app([URL(url, encoded=True) for url in args.url])
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
