"""A local image server on loopback (127.0.0.1 unless told another 127.x address) for URL-fetching tests: images, redirects, oversize,
compression bombs and slow answers. Runs in its own thread and event loop; every loop in
it is bounded in bytes and time, so it stops by itself."""

from __future__ import annotations

import asyncio
import gzip
import sys
import threading

from aiohttp import web
from .helpers import encode, natural_image

CAT_PNG = encode(natural_image(48, 40, seed=11))
BOMB_RAW_BYTES = 16 * 2**20  # zeros: gzip makes ~16 KB of them


class ImageServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        assert host.startswith("127."), host  # loopback only
        self.host = host
        self.hits: dict[str, int] = {}
        self.host_headers: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="image-server", daemon=True)

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def __enter__(self) -> ImageServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("image server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(2)
        if self._thread.is_alive():  # a daemon thread: it cannot outlive the run; say where it is stuck
            import traceback
            import warnings

            frame = sys._current_frames().get(self._thread.ident)
            warnings.warn("image server still stopping after 2 s:\n" + "".join(traceback.format_stack(frame)))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        app = web.Application()
        app.middlewares.append(self._record)
        app.router.add_get("/cat.png", lambda r: web.Response(body=CAT_PNG, content_type="image/png"))
        app.router.add_get("/gzip.png", self._gzip)
        app.router.add_get("/bomb.png", self._bomb)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/chain/{n}", self._chain)
        app.router.add_get("/declared-big.png", self._declared_big)
        app.router.add_get("/endless.png", self._endless)
        app.router.add_get("/slow-headers.png", self._slow_headers)
        app.router.add_get("/slow-body.png", self._slow_body)
        app.router.add_get("/empty.png", lambda r: web.Response(body=b"", content_type="image/png"))
        app.router.add_get("/missing.png", lambda r: web.Response(status=404))
        # Slow answers are abandoned by the fetcher under test: stop without waiting them out.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        # Handlers still sleeping (slow answers the fetcher abandoned) would hold cleanup
        # until they end: cancel them, so the server stops at once.
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler):
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        self.host_headers.append(request.headers.get("Host", ""))
        return await handler(request)

    async def _gzip(self, request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(CAT_PNG), headers={"Content-Encoding": "gzip",
                                                                   "Content-Type": "image/png"})

    async def _bomb(self, request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b"\0" * BOMB_RAW_BYTES), headers={"Content-Encoding": "gzip"})

    async def _redirect(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.query.get("status", "302")), headers={"Location": request.query["to"]})

    async def _chain(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.Response(status=302, headers={"Location": f"/chain/{n - 1}" if n > 0 else "/cat.png"})

    async def _declared_big(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.content_length = 512 * 2**20
        await response.prepare(request)
        for _ in range(20):  # a little, then give up: the client should have left already
            await response.write(b"\0" * 1024)
            await asyncio.sleep(0.05)
        return response

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})  # chunked, no length
        await response.prepare(request)
        for _ in range(1024):  # at most 64 MiB
            await response.write(b"\xff" * 65536)
        return response

    async def _slow_headers(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "20")))
        return web.Response(body=CAT_PNG, content_type="image/png")

    async def _slow_body(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.content_length = len(CAT_PNG)
        await response.prepare(request)
        for i in range(len(CAT_PNG)):
            await response.write(CAT_PNG[i : i + 1])
            await asyncio.sleep(0.2)
            if i > 100:
                break
        return response
