"""The OpenAI error envelope and the one exception type that maps onto it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _writable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class APIError(Exception):
    """An error a client caused or must react to; rendered as the OpenAI error envelope."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        # Messages quote what the client sent; text no JSON encoder can write (a lone
        # surrogate) is escaped so that the error itself can always be answered.
        message, param = _writable(message), None if param is None else _writable(param)
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def invalid(cls, message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
        return cls(400, message, param=param, code=code)

    @classmethod
    def model_not_found(cls, model: str) -> APIError:
        return cls(
            404,
            f"The model `{model}` does not exist. GET /v1/models lists the served models.",
            param="model",
            code="model_not_found",
        )

    @classmethod
    def too_large(cls, message: str, param: str | None = None) -> APIError:
        return cls(413, message, param=param, code="request_too_large")

    @classmethod
    def unavailable(cls, message: str, retry_after_s: int = 1, code: str = "overloaded") -> APIError:
        return cls(
            503, message, type="server_error", code=code, headers={"Retry-After": str(max(1, int(retry_after_s)))}
        )
