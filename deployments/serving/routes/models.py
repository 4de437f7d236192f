"""GET /v1/models and /v1/models/{id}: served variants and what they are."""

from __future__ import annotations

from fastapi import Depends

from ...protocol.models import ModelCard, ModelList
from ..responses import JSONBytes
from ..state import RouterState, get_state
from . import ERROR_RESPONSES, api_router

router = api_router()


@router.get("/v1/models", response_class=JSONBytes, responses={200: {"model": ModelList}})
async def list_models(state: RouterState = Depends(get_state)) -> JSONBytes:
    return JSONBytes({"object": "list", "data": [v.describe() for v in state.variants]})


@router.get("/v1/models/{model:path}", response_class=JSONBytes, responses={200: {"model": ModelCard}, **ERROR_RESPONSES})
async def get_model(model: str, state: RouterState = Depends(get_state)) -> JSONBytes:
    return JSONBytes(state.variants.resolve(model).describe())
