"""OpenAI batch files: one `/v1/embeddings` request per JSONL line in, one response line
out. Each request runs through the API's own code (request model, input parsing, limits,
EmbeddingService, response body), so a line's response body is what POST /v1/embeddings
would have answered, errors included.

Input line:  {"custom_id", "method": "POST", "url": "/v1/embeddings", "body": {...}}
Output line: {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}
A line that is not a request at all (bad JSON, no body) gets `response: null` and an `error`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import ValidationError

from ..config import LimitsConfig, RouterConfig
from ..engine.embedding_service import EmbeddingService
from ..protocol.embeddings import EmbeddingRequest, embeddings_body
from ..protocol.errors import APIError, validation_failure
from ..protocol.inputs import parse_input
from .model_runner import LocalVariant, ModelRunner

ENDPOINT = "/v1/embeddings"


class BatchLineError(ValueError):
    """A line that cannot be read as a batch request."""


def _record(custom_id: Any, request_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> dict:
    return {"id": f"batch_req_{request_id}", "custom_id": custom_id, "response": response, "error": error}


class BatchRequestRunner:
    def __init__(self, runner: ModelRunner, limits: LimitsConfig | None = None, router: RouterConfig | None = None) -> None:
        self.variant = LocalVariant(runner)
        self.names = set(runner.variant.names())
        self.router = router or RouterConfig()
        self.service = EmbeddingService(limits or LimitsConfig(), self.router)

    async def _respond(self, body: Any) -> dict[str, Any]:
        try:
            request = EmbeddingRequest.model_validate(body)
        except ValidationError as exc:
            raise validation_failure(exc.errors()) from None
        if request.model not in self.names:
            raise APIError.model_not_found(request.model)
        items = parse_input(request.input, request.modality)
        request.check_dimensions(self.variant.id, self.variant.any_info.embed_dim)
        truncate = self.router.truncate_default if request.truncate is None else request.truncate
        result = await self.service.embed(self.variant, items, truncate)
        return embeddings_body(self.variant.id, result.vectors, request.encoding_format, result.prompt_tokens, result.images)

    async def process(self, line: str, line_number: int) -> tuple[dict[str, Any], str | None]:
        """One input line -> (output record, a problem description or None)."""
        request_id = hashlib.sha1(f"{line_number}:{line}".encode()).hexdigest()[:24]
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise BatchLineError("a batch line must be a JSON object")
        except (json.JSONDecodeError, BatchLineError) as exc:
            message = f"line {line_number} is not a JSON request object: {exc}"
            return _record(None, request_id, None, {"code": "invalid_request_line", "message": message}), message
        custom_id = request.get("custom_id")
        try:
            if request.get("method", "POST") != "POST" or request.get("url") != ENDPOINT:
                raise APIError.invalid(f"this job answers POST {ENDPOINT} only, not {request.get('method')} "
                                       f"{request.get('url')}", param="url")
            response_body, status = await self._respond(request.get("body")), 200
        except APIError as exc:
            response_body, status = exc.envelope(), exc.status_code
        problem = None if status == 200 else f"{custom_id}: {status} {response_body['error']['message']}"
        return _record(custom_id, request_id, {"status_code": status, "request_id": request_id, "body": response_body},
                       None), problem
