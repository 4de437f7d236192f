"""/v1/rerank (Cohere/infinity shape) and /v1/similarity (queries x candidates)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .embeddings import EmbeddingUsage

ITEM_FORMS = "a string (text), {'text': ...}, {'image': ...} or an image_url part"


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(description="Served model id or alias (GET /v1/models).")
    query: str | dict[str, Any] | list[int] = Field(description=f"The query: {ITEM_FORMS}.")
    documents: list[Any] = Field(description=f"Documents to rank; each {ITEM_FORMS}.")
    top_n: int | None = Field(None, ge=1, description="Return the n best (more than the documents: all).")
    return_documents: bool = Field(False, description="Echo each document as sent.")
    truncate: bool | None = Field(None, description="Truncate texts over the context length (default: server setting).")


class RerankResult(BaseModel):
    index: int = Field(description="Position of the document in the request.")
    relevance_score: float = Field(description="Cosine similarity of query and document embeddings, in [-1, 1].")
    document: Any = None


class RerankResponse(BaseModel):
    object: Literal["rerank"] = "rerank"
    results: list[RerankResult]
    model: str
    usage: EmbeddingUsage


class SimilarityRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(description="Served model id or alias (GET /v1/models).")
    queries: str | list[Any] = Field(description=f"Queries; each {ITEM_FORMS}.")
    candidates: str | list[Any] = Field(description=f"Candidates; each {ITEM_FORMS}.")
    truncate: bool | None = Field(None, description="Truncate texts over the context length (default: server setting).")


class SimilarityRow(BaseModel):
    object: Literal["similarity"] = "similarity"
    index: int = Field(description="Position of the query in the request.")
    cosine: list[float] = Field(description="Cosine similarity with each candidate, in request order.")
    probabilities: list[float] = Field(description="The model's score function over the candidates: "
                                       "softmax(logit_scale * cosine), or sigmoid(logit_scale * cosine + logit_bias) "
                                       "per candidate for `score_function: sigmoid`.")


class SimilarityResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SimilarityRow]
    model: str
    score_function: Literal["softmax", "sigmoid"] = "softmax"
    logit_scale: float
    logit_bias: float | None = None
    usage: EmbeddingUsage
