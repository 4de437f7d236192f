"""/v1/tokenize: what the model's tokenizer makes of texts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(description="Served model id or alias (GET /v1/models).")
    input: str | list[str] = Field(description="A text or a list of texts.")


class TokenizedText(BaseModel):
    object: Literal["tokens"] = "tokens"
    index: int
    tokens: list[int] = Field(description="Token ids with BOS and EOS, before any truncation.")
    count: int = Field(description="len(tokens).")
    truncated: bool = Field(description="Whether embedding would truncate the text to the context length.")


class TokenizeResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[TokenizedText]
    model: str
    context_length: int
