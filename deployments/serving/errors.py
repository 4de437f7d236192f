"""The one place that turns exceptions into the OpenAI error envelope: FastAPI's handlers,
and `send_error` for ASGI middleware that answers before any app runs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from ..engine.embedding_service import encoder_failure
from ..protocol.errors import APIError, validation_failure
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


def validation_error(exc: RequestValidationError) -> APIError:
    return validation_failure(exc.errors())


async def send_error(send: Send, err: APIError) -> None:
    """Answer with `err` in the envelope straight from ASGI middleware (no app involved)."""
    import orjson

    count_error(err)
    body = orjson.dumps(err.envelope())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
    return encoder_failure(exc)


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
