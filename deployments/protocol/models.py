"""/v1/models shapes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "clip-serve"
    aliases: list[str] = []
    towers: list[str]
    backend: str
    ready: bool
    embedding_dimension: int | None = None
    image_size: list[int] | None = None
    context_length: int | None = None
    dtype: str | None = None
    device: str | None = None
    logit_scale: float | None = None  # exp() of the learned temperature used by /v1/classify
    family: str | None = Field(
        None, description="The model family: `clip`, `siglip`, `siglip2` or `metaclip_2`.")
    score_function: str | None = Field(
        None, description="How /v1/classify scores labels: `softmax` (CLIP, MetaCLIP 2) or `sigmoid` (SigLIP, "
        "SigLIP 2).")
    logit_bias: float | None = Field(None, description="The learned bias of a sigmoid score (SigLIP, SigLIP 2).")
    architecture: str | None = Field(None, description="The image tower's architecture: `vit` or `resnet`.")
    layout: str | None = Field(
        None, description="The checkpoint layout that loaded: `transformers`, `open_clip`, `openai` (a .pt "
        "release archive) or `onnx`.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
