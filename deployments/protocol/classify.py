"""/v1/classify (Jina shape) and the Hugging Face zero-shot-image-classification task."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .embeddings import EmbeddingUsage


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(description="Served model id or alias (GET /v1/models).")
    input: str | list[Any] = Field(
        description="Items to classify: strings (texts, or images with `modality: image`), {'text'}, {'image'} "
        "or image_url parts."
    )
    labels: list[str] = Field(description="Candidate labels (at least 2, unique).")
    hypothesis_template: str | None = Field(
        None, description="One prompt template; every `{}` is replaced by the label. Default: the label as is."
    )
    templates: list[str] | None = Field(
        None,
        description="A prompt ensemble: each label's embedding is the renormalised mean over these templates.",
    )
    top_k: int | None = Field(
        None, ge=1, description="Return only the k most probable labels, best first (more than the labels: all)."
    )
    modality: Literal["text", "image"] = Field("text", description="How to read plain strings in `input`.")
    truncate: bool | None = Field(
        None, description="Truncate texts over the context length (default: the server's setting); false rejects them."
    )


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="Probability by the model's score function (`score_function`): softmax over "
                         "labels of logit_scale * cosine (CLIP), or sigmoid(logit_scale * cosine + logit_bias) per label "
                         "(SigLIP).")
    cosine: float = Field(description="Cosine similarity of the input and the label's embedding (for thresholds).")


class Classification(BaseModel):
    object: Literal["classification"] = "classification"
    index: int
    prediction: str = Field(description="The most probable label.")
    score: float = Field(description="Its probability.")
    predictions: list[LabelScore] = Field(
        description="Every label in request order, or with `top_k` the k best, most probable first."
    )


class ClassifyUsage(EmbeddingUsage):
    """prompt_tokens counts text embedded for this request: inputs and uncached prompts."""

    prompts: int = Field(description="Label prompts the request needed (labels x templates, deduplicated).")
    cached_prompts: int = Field(description="Of those, how many came from the router's label cache.")


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Classification]
    model: str
    score_function: Literal["softmax", "sigmoid"] = Field(
        description="How scores were computed: `softmax` over the labels (CLIP: scores sum to 1) or an independent "
        "`sigmoid` per label (SigLIP, trained with the sigmoid loss: scores need not sum to 1).")
    logit_scale: float = Field(description="The model's learned temperature, exp()'d, used by the score function.")
    logit_bias: float | None = Field(None, description="The learned bias of a sigmoid score (SigLIP only).")
    usage: ClassifyUsage


class HFZeroShotParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    candidate_labels: list[str] = Field(description="Candidate labels (at least 2, unique).")
    hypothesis_template: str | None = Field(None, description="Default: 'This is a photo of {}.'")


class HFZeroShotRequest(BaseModel):
    """The body `huggingface_hub.InferenceClient.zero_shot_image_classification` posts."""

    model_config = ConfigDict(extra="allow")

    inputs: str | dict[str, Any] = Field(description="The image: base64 or a data URI.")
    parameters: HFZeroShotParameters


class HFLabelScore(BaseModel):
    label: str
    score: float
