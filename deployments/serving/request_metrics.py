"""ASGI middleware counting and timing every HTTP request by route template and status."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import metrics

UNMATCHED = "unmatched"  # no route matched (404s): one label value, never the raw path


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app dies before answering, the server answers 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            # FastAPI's router stores the matched route in the (shared) scope: its template,
            # e.g. /v1/models/{model:path}, keeps the label bounded.
            route = scope.get("route")
            tags = {"endpoint": getattr(route, "path", None) or UNMATCHED, "status": str(status)}
            m = metrics()
            m.requests.inc(tags=tags)
            m.request_seconds.observe(time.perf_counter() - started, tags=tags)
