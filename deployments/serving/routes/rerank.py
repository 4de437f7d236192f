"""POST /v1/rerank (Cohere/infinity shape) and POST /v1/similarity (queries x candidates).
Queries, documents and candidates may each be a text or an image."""

from __future__ import annotations

from typing import Any

from fastapi import Depends

from ...protocol.errors import APIError
from ...protocol.inputs import Item, parse_item
from ...protocol.rerank import RerankRequest, RerankResponse, SimilarityRequest, SimilarityResponse
from ..responses import JSONBytes, check_echoable
from ..scoring import ranking
from ..state import RouterState, get_state
from . import ERROR_RESPONSES, api_router

router = api_router()


def parse_items(value: Any, param: str) -> list[Item]:
    """A non-empty list (or one string) of text/image items; plain strings are texts."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise APIError.invalid(f"`{param}` must be a non-empty array", param=param)
    return [parse_item(v, f"{param}[{i}]", "text") for i, v in enumerate(values)]


def usage(prompt_tokens: int, images: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "images": images}


@router.post(
    "/v1/rerank",
    response_class=JSONBytes,
    responses={200: {"model": RerankResponse}, **ERROR_RESPONSES},
    summary="Rank documents (texts or images) by cosine similarity to a query (text or image)",
)
async def rerank(body: RerankRequest, state: RouterState = Depends(get_state)) -> JSONBytes:
    variant = state.variants.resolve(body.model)
    query = parse_item(body.query, "query", "text")
    documents = parse_items(body.documents, "documents")
    if body.return_documents:
        for j, document in enumerate(body.documents):
            check_echoable(document, f"documents[{j}]")
    result = await state.zero_shot.compare(variant, [query], documents, state.truncate(body.truncate), "documents")
    scores = result.cosines[0]
    results = []
    for j in ranking(scores, body.top_n):
        row = {"index": int(j), "relevance_score": float(scores[j])}
        if body.return_documents:
            row["document"] = body.documents[j]
        results.append(row)
    return JSONBytes({
        "object": "rerank", "results": results, "model": variant.id,
        "usage": usage(result.prompt_tokens, result.images),
    })


@router.post(
    "/v1/similarity",
    response_class=JSONBytes,
    responses={200: {"model": SimilarityResponse}, **ERROR_RESPONSES},
    summary="Cosine similarity matrix of queries x candidates, with the model's zero-shot probabilities",
)
async def similarity(body: SimilarityRequest, state: RouterState = Depends(get_state)) -> JSONBytes:
    variant = state.variants.resolve(body.model)
    queries = parse_items(body.queries, "queries")
    candidates = parse_items(body.candidates, "candidates")
    result = await state.zero_shot.compare(
        variant, queries, candidates, state.truncate(body.truncate), "candidates"
    )
    probs = result.scorer(result.cosines)
    return JSONBytes({
        "object": "list",
        "data": [
            {"object": "similarity", "index": i, "cosine": result.cosines[i].tolist(), "probabilities": probs[i].tolist()}
            for i in range(len(queries))
        ],
        "model": variant.id,
        **result.scorer.describe(),
        "usage": usage(result.prompt_tokens, result.images),
    })
