"""/v1/embeddings request and response models (OpenAI shape plus image extensions)."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .errors import APIError


class EmbeddingRequest(BaseModel):
    # OpenAI clients send extra fields; accept them like OpenAI does.
    model_config = ConfigDict(extra="allow")

    model: str = Field(description="Served model id or alias (GET /v1/models).")
    input: str | list[Any] = Field(
        description="A string, token ids, or a list of strings / token arrays / {'text'} / {'image'} / image_url parts."
    )
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32.")
    dimensions: int | None = Field(None, ge=1, description="Must equal the model's embedding dimension if given.")
    user: str | None = None
    modality: Literal["text", "image"] = Field("text", description="How to read plain strings (infinity extension).")
    truncate: bool | None = Field(
        None, description="Truncate texts over the context length (default: the server's setting); false rejects them."
    )

    def check_dimensions(self, model: str, dim: int) -> None:
        if self.dimensions is not None and self.dimensions != dim:
            raise APIError.invalid(
                f"model `{model}` produces {dim}-dimensional embeddings and cannot shorten them; "
                f"omit `dimensions` or send {dim}",
                param="dimensions",
            )


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    images: int = Field(0, description="Images embedded in this request.")


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


def encode_vector(vector: np.ndarray, encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


def embeddings_body(model: str, vectors: np.ndarray, encoding_format: str, prompt_tokens: int, images: int) -> dict:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "images": images},
    }
