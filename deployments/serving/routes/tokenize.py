"""POST /v1/tokenize: token ids, strings and character spans per text, and whether embedding would truncate."""

from __future__ import annotations

from fastapi import Depends

from ...protocol.errors import APIError
from ...protocol.inputs import parse_input
from ...protocol.tokenize import TokenizeRequest, TokenizeResponse
from ...engine.embedding_service import READY_WAIT_S
from ..responses import JSONBytes
from ..state import RouterState, get_state
from . import ERROR_RESPONSES, api_router

router = api_router()


@router.post(
    "/v1/tokenize",
    response_class=JSONBytes,
    responses={200: {"model": TokenizeResponse}, **ERROR_RESPONSES},
    summary="Tokenize texts with a model's own tokenizer",
)
async def tokenize(body: TokenizeRequest, state: RouterState = Depends(get_state)) -> JSONBytes:
    variant = state.variants.resolve(body.model)
    items = parse_input(body.input)  # the request model admits strings only: all TextItems
    state.embeddings.check_count(items)
    if not variant.serves("text"):
        raise APIError.invalid(f"model `{variant.id}` serves no text tower", param="model", code="unsupported_modality")
    await variant.wait_ready(READY_WAIT_S)
    context = variant.tokenizer.context_length
    data = [
        {
            "object": "tokens", "index": i, "tokens": t.ids, "count": len(t.ids), "truncated": len(t.ids) > context,
            "token_strings": t.tokens, "offsets": t.offsets,
        }
        for i, t in enumerate(await state.embeddings.token_spans(variant, items))
    ]
    return JSONBytes({"object": "list", "data": data, "model": variant.id, "context_length": context})
