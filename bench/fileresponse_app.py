"""Bare aiohttp baseline for bench/serve_bench.py: one file through `web.FileResponse`.

    python bench/fileresponse_app.py --port 8081 --file /path/to/file

serves the file at GET /file (Range requests included, as FileResponse does them),
plus GET /healthz. One process, default asyncio loop, no access log: the same
conditions as the gateway with GATEWAY_LOG_LEVEL=warning.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aiohttp import web


def make_app(path: Path) -> web.Application:
    async def serve_file(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/file", serve_file)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", type=Path, required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.file), host=args.host, port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
