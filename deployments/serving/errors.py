"""The one place that turns exceptions into the OpenAI error envelope."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..protocol.errors import APIError
from .metrics import error_status, metrics
from .retry import replica_lost

logger = logging.getLogger("ray.serve")

_HTTP_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
               415: "unsupported_media_type"}


def count_error(exc: APIError) -> None:
    """Every error answer, by its code (a fixed vocabulary), counted at stage `http`."""
    metrics().errors.inc(tags={"variant": "", "tower": "", "stage": "http", "status": error_status(exc.code)})


def _render(exc: APIError) -> JSONResponse:
    count_error(exc)
    return JSONResponse(exc.envelope(), status_code=exc.status_code, headers=exc.headers)


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "list", "dict"}


def _param_from_loc(loc: tuple[Any, ...]) -> str | None:
    # pydantic adds union-member tags ("str", "list[any]") to locations; they are not fields.
    parts = [
        p for p in loc
        if p not in ("body", "query", "path")
        and not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p or "-" in p))
    ]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error")
        return APIError.invalid(f"request body is not valid JSON{f' ({detail})' if detail else ''}", code="invalid_json")
    param = _param_from_loc(tuple(first.get("loc", ())))
    if param is None and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
        return APIError.invalid("request body must be a JSON object (Content-Type: application/json)", code="invalid_json")
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return APIError.invalid(message, param=param)


def backend_error(exc: BaseException) -> APIError:
    """Map a failure of an encoder call to what the client should do about it."""
    from ray.serve import exceptions as serve_exceptions

    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, serve_exceptions.BackPressureError):
        return APIError.unavailable("the encoders are at capacity; retry shortly", retry_after_s=1)
    if replica_lost(exc) or isinstance(exc, serve_exceptions.DeploymentUnavailableError):
        # Reached only once the retries on other replicas are spent.
        return APIError.unavailable("encoder replicas went away; retry", retry_after_s=1, code="replica_unavailable")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return APIError(504, "the encoders did not answer in time", type="server_error", code="timeout")
    logger.error("encoder call failed: %r", exc)
    return APIError(500, "the encoder failed on this request", type="server_error", code="encoder_error")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return _render(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _render(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return _render(APIError(exc.status_code, str(exc.detail), type=error_type, code=code, headers=exc.headers))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error in router", exc_info=exc)
        return _render(APIError(500, "internal server error", type="server_error", code="internal_error"))
