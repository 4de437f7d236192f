"""Zero-shot classification and similarity on top of EmbeddingService.

Classification embeds the inputs (image or text tower) while it fetches the labels'
prompt embeddings from the label cache (text tower only for misses), then scores the
cosines with the model family's score function (scoring.Scorer: softmax(logit_scale *
cosine) for CLIP, sigmoid(logit_scale * cosine + logit_bias) per label for SigLIP). Inputs and labels must come from the same weights: if
the encoders report new weights during the request, the labels are looked up again
under the new fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import LimitsConfig
from ..protocol.errors import APIError
from ..protocol.inputs import Item, TextItem
from ..protocol.labels import PromptLimits, PromptSet
from . import scoring
from ..engine.concurrency import gather_or_cancel
from ..engine.embedding_service import READY_WAIT_S, EmbeddingService
from .label_cache import LabelCache
from .variants import VariantRuntime

@dataclass
class LabelVectors:
    vectors: np.ndarray  # (labels, D) class embeddings, unit length
    fingerprint: str | None  # the weights they came from (None: mixed, mid-change)
    prompt_tokens: int  # tokens this request sent to the text tower
    prompts: int
    cached: int


@dataclass
class Classified:
    cosines: np.ndarray  # (inputs, labels)
    probabilities: np.ndarray  # (inputs, labels): rows sum to 1 (softmax), or each in (0, 1) (sigmoid)
    scorer: scoring.Scorer
    prompt_tokens: int
    images: int
    prompts: int
    cached_prompts: int


@dataclass
class Compared:
    cosines: np.ndarray  # (queries, candidates)
    scorer: scoring.Scorer
    prompt_tokens: int
    images: int


class ZeroShotService:
    def __init__(self, embeddings: EmbeddingService, cache: LabelCache, limits: LimitsConfig, max_pending_items: int) -> None:
        self.embeddings = embeddings
        self.cache = cache
        self.limits = limits
        # Prompts go to the text tower one chunk at a time, each chunk at most half the
        # router's queue bound: the largest prompt set allowed then never meets the 503 of a
        # full queue on an idle server, and leaves room for other requests' texts meanwhile.
        self.prompt_chunk = max(1, max_pending_items // 2)
        self.prompt_limits = PromptLimits.from_config(limits)

    async def _ready_for_labels(self, variant: VariantRuntime) -> None:
        if not variant.serves("text"):
            raise APIError.invalid(
                f"model `{variant.id}` serves no text tower, which classification needs for the labels",
                param="model", code="unsupported_modality",
            )
        await variant.wait_ready(READY_WAIT_S)

    async def label_vectors(self, variant: VariantRuntime, prompt_set: PromptSet, truncate: bool) -> LabelVectors:
        """Class embeddings for the labels: cached prompts are free, misses are embedded."""
        await self._ready_for_labels(variant)
        params = prompt_set.prompt_params()
        # Reject bad prompts (too long with truncation off, over the character limit) for
        # this request before any shared encode starts, so a joined encode can only fail
        # for reasons common to every waiter.
        await self.embeddings.check_texts(variant, [TextItem(p, params[p]) for p in prompt_set.prompts], truncate)
        spent = {"tokens": 0}
        chunk = self.prompt_chunk

        async def encode(prompts: list[str]) -> tuple[np.ndarray, str]:
            items: list[Item] = [TextItem(p, params.get(p, "labels")) for p in prompts]
            parts = []
            for start in range(0, len(items), chunk):  # one after the other: see prompt_chunk
                parts.append(await self.embeddings.embed_items(variant, items[start : start + chunk], True))
            spent["tokens"] += sum(part.prompt_tokens for part in parts)
            return np.concatenate([part.vectors for part in parts]), variant.fingerprint

        fingerprint = variant.fingerprint
        assert fingerprint is not None  # set once the encoders have reported
        found = await self.cache.lookup(variant.id, fingerprint, prompt_set.prompts, encode)
        per_prompt = found.vectors[np.asarray(prompt_set.index)]  # (labels, templates, D)
        return LabelVectors(
            vectors=scoring.ensemble(per_prompt),
            fingerprint=found.fingerprint,
            prompt_tokens=spent["tokens"],
            prompts=len(prompt_set.prompts),
            cached=found.hits,
        )

    async def classify(
        self, variant: VariantRuntime, items: list[Item], prompt_set: PromptSet, truncate: bool
    ) -> Classified:
        await self._ready_for_labels(variant)
        embedded, labels = await gather_or_cancel(
            self.embeddings.embed(variant, items, truncate), self.label_vectors(variant, prompt_set, truncate)
        )
        if labels.fingerprint != variant.fingerprint:
            # The weights changed while we worked: the labels must match the inputs' weights.
            again = await self.label_vectors(variant, prompt_set, truncate)
            again.prompt_tokens += labels.prompt_tokens
            labels = again
        await variant.settled()  # a weights change may bring a new temperature
        cosines = scoring.cosine_matrix(embedded.vectors, labels.vectors)
        scorer = variant.scorer
        return Classified(
            cosines=cosines,
            probabilities=scorer(cosines),
            scorer=scorer,
            prompt_tokens=embedded.prompt_tokens + labels.prompt_tokens,
            images=embedded.images,
            prompts=labels.prompts,
            cached_prompts=labels.cached,
        )

    async def compare(
        self, variant: VariantRuntime, queries: list[Item], candidates: list[Item], truncate: bool, param: str
    ) -> Compared:
        """Cosine similarity of every query with every candidate (one embedding pass);
        `param` names the field to blame when there are too many items."""
        self.embeddings.check_count([*queries, *candidates], param=param)
        embedded = await self.embeddings.embed(variant, [*queries, *candidates], truncate)
        cosines = scoring.cosine_matrix(embedded.vectors[: len(queries)], embedded.vectors[len(queries) :])
        return Compared(cosines, variant.scorer, embedded.prompt_tokens, embedded.images)
