"""POST /v1/classify: zero-shot classification of images and texts against labels (Jina shape)."""

from __future__ import annotations

from fastapi import Depends

from ...protocol.classify import ClassifyRequest, ClassifyResponse
from ...protocol.inputs import parse_input
from ...protocol.labels import build_prompts
from ..responses import JSONBytes
from ..scoring import ranking
from ..state import RouterState, get_state
from ..zero_shot import Classified
from . import ERROR_RESPONSES, api_router

router = api_router()


def classification(index: int, labels: list[str], result: Classified, top_k: int | None) -> dict:
    probs, cosines = result.probabilities[index], result.cosines[index]
    best = int(probs.argmax())
    order = range(len(labels)) if top_k is None else ranking(probs, top_k)
    return {
        "object": "classification",
        "index": index,
        "prediction": labels[best],
        "score": float(probs[best]),
        "predictions": [{"label": labels[j], "score": float(probs[j]), "cosine": float(cosines[j])} for j in order],
    }


@router.post(
    "/v1/classify",
    response_class=JSONBytes,
    responses={200: {"model": ClassifyResponse}, **ERROR_RESPONSES},
    summary="Zero-shot classification of images and texts against candidate labels",
)
async def classify(body: ClassifyRequest, state: RouterState = Depends(get_state)) -> JSONBytes:
    variant = state.variants.resolve(body.model)
    items = parse_input(body.input, body.modality)
    prompt_set = build_prompts(
        body.labels, state.zero_shot.prompt_limits, hypothesis_template=body.hypothesis_template, templates=body.templates
    )
    result = await state.zero_shot.classify(variant, items, prompt_set, state.truncate(body.truncate))
    return JSONBytes({
        "object": "list",
        "data": [classification(i, prompt_set.labels, result, body.top_k) for i in range(len(items))],
        "model": variant.id,
        **result.scorer.describe(),
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "total_tokens": result.prompt_tokens,
            "images": result.images,
            "prompts": result.prompts,
            "cached_prompts": result.cached_prompts,
        },
    })
