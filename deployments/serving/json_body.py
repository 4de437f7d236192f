"""Request bodies decoded as strict JSON (orjson, RFC 8259) on every API route.

The stdlib decoder Starlette uses accepts text no response can carry back: a lone UTF-16
surrogate (`"\\ud800"` is legal JSON text but no Unicode string) reaches the handlers and
fails later wherever the string is written out again (the tokenizer, an error message
naming an unknown `model`, the response encoder), as a 500. orjson refuses lone
surrogates, invalid UTF-8, NaN/Infinity and nesting past its depth limit at decode time,
so every endpoint, and every field of it, sees only text that can be encoded again; its
refusals are `json.JSONDecodeError`s, which FastAPI turns into the `invalid_json` 400.
Numbers beyond 64 bits decode as floats, which the response encoder can write.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose handler reads the body through StrictJSONRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
