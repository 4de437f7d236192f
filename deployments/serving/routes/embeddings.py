"""POST /v1/embeddings: texts, token arrays and images, mixed freely, one vector each."""

from __future__ import annotations

from fastapi import Depends

from ...protocol.embeddings import EmbeddingRequest, EmbeddingResponse, embeddings_body
from ...protocol.inputs import parse_input
from ...engine.embedding_service import READY_WAIT_S
from ..responses import JSONBytes
from ..state import RouterState, get_state
from . import ERROR_RESPONSES, api_router

router = api_router()


@router.post(
    "/v1/embeddings",
    response_class=JSONBytes,
    responses={200: {"model": EmbeddingResponse}, **ERROR_RESPONSES},
    summary="Create embeddings (OpenAI-compatible; images too)",
)
async def create_embeddings(body: EmbeddingRequest, state: RouterState = Depends(get_state)) -> JSONBytes:
    variant = state.variants.resolve(body.model)
    items = parse_input(body.input, body.modality)
    await variant.wait_ready(READY_WAIT_S)
    body.check_dimensions(variant.id, variant.any_info.embed_dim)
    result = await state.embeddings.embed(variant, items, state.truncate(body.truncate))
    return JSONBytes(embeddings_body(variant.id, result.vectors, body.encoding_format, result.prompt_tokens, result.images))
