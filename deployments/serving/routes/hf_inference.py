"""POST /models/{model_id}: the Hugging Face Inference task `zero-shot-image-classification`,
so `huggingface_hub.InferenceClient(model="http://host/models/<id>")` works unchanged."""

from __future__ import annotations

from fastapi import Depends

from ...protocol.classify import HFLabelScore, HFZeroShotRequest
from ...protocol.inputs import parse_item
from ...protocol.labels import HF_DEFAULT_TEMPLATE, build_prompts
from ..responses import JSONBytes
from ..scoring import ranking
from ..state import RouterState, get_state
from . import ERROR_RESPONSES, api_router

router = api_router()


@router.post(
    "/models/{model_id:path}",
    response_class=JSONBytes,
    responses={200: {"model": list[HFLabelScore]}, **ERROR_RESPONSES},
    summary="Hugging Face zero-shot-image-classification task (InferenceClient-compatible)",
)
async def zero_shot_image_classification(
    model_id: str, body: HFZeroShotRequest, state: RouterState = Depends(get_state)
) -> JSONBytes:
    variant = state.variants.resolve(model_id)
    item = parse_item(body.inputs, "inputs", "image")
    params = body.parameters
    template = HF_DEFAULT_TEMPLATE if params.hypothesis_template is None else params.hypothesis_template
    prompt_set = build_prompts(
        params.candidate_labels,
        state.zero_shot.prompt_limits,
        hypothesis_template=template,
        labels_param="parameters.candidate_labels",
        template_param="parameters.hypothesis_template",
    )
    result = await state.zero_shot.classify(variant, [item], prompt_set, state.truncate(None))
    probs = result.probabilities[0]
    return JSONBytes([{"label": prompt_set.labels[j], "score": float(probs[j])} for j in ranking(probs)])
