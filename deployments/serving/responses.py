"""Fast JSON responses (orjson, numpy-aware)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

from ..protocol.errors import APIError


class JSONBytes(JSONResponse):
    # A JSONResponse so FastAPI documents the declared response models; with a plain
    # Response it adds `type: string` beside their $ref and the schema contradicts itself.
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def check_echoable(value: Any, param: str) -> None:
    """A 400 naming `param` when the response encoder could not write `value` back (an
    input a response echoes, such as rerank's documents): strict decoding lets through
    nesting deeper than the encoder goes."""
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise APIError.invalid(f"cannot be echoed back in the response ({exc})", param=param) from None
