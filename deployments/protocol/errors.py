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


def validation_failure(errors: list[Any]) -> APIError:
    """A request body's validation errors (pydantic's `errors()`) as one 400 naming the first."""
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
