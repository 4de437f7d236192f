"""Items -> embeddings: tokenize texts, decode images, send both towers' work through the
coalescers concurrently, and put the vectors back in input order.

Every endpoint (embeddings, classify, rerank, similarity) goes through `embed`, so limits,
error mapping and batching behave the same everywhere.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..config import LimitsConfig, RouterConfig
from ..preprocess.image_spec import ImageSpec
from ..preprocess.images import ImageError, ImageLimits
from ..preprocess.items import ItemPreprocessor, image_api_error
from ..protocol.errors import APIError
from ..protocol.inputs import ImageItem, Item
from .errors import backend_error
from .variants import VariantRuntime

READY_WAIT_S = 10.0


@dataclass
class Embedded:
    vectors: np.ndarray  # float32 (N, D), L2-normalised, input order
    prompt_tokens: int
    images: int


class EmbeddingService:
    def __init__(self, limits: LimitsConfig, router: RouterConfig) -> None:
        self.limits = limits
        self.image_limits = ImageLimits(max_image_bytes=limits.max_image_bytes, max_image_pixels=limits.max_image_pixels)
        self.items = ItemPreprocessor(self.image_limits, limits.max_text_chars)
        self._decode_pool = ThreadPoolExecutor(router.decode_threads, thread_name_prefix="decode")

    def check_count(self, items: list[Item], param: str = "input") -> None:
        if len(items) > self.limits.max_items_per_request:
            raise APIError.too_large(
                f"{len(items)} inputs exceed the limit of {self.limits.max_items_per_request} per request", param=param
            )

    async def embed(self, variant: VariantRuntime, items: list[Item], truncate: bool) -> Embedded:
        self.check_count(items)
        texts = [(i, it) for i, it in enumerate(items) if not isinstance(it, ImageItem)]
        images = [(i, it) for i, it in enumerate(items) if isinstance(it, ImageItem)]
        for tower, group in (("text", texts), ("image", images)):
            if group and not variant.serves(tower):
                raise APIError.invalid(
                    f"model `{variant.id}` does not serve {tower} inputs (towers: {list(variant.handles)})",
                    param=group[0][1].param,
                    code="unsupported_modality",
                )
        await variant.wait_ready(READY_WAIT_S)

        sequences = self._tokenize(variant, [it for _, it in texts], truncate)
        pixels = await self._decode_images(variant.image_spec, [it for _, it in images])
        jobs = []
        if sequences:
            jobs.append(variant.coalescers["text"].submit(sequences))
        if pixels:
            jobs.append(variant.coalescers["image"].submit(pixels))
        try:
            results = await asyncio.gather(*jobs)
        except Exception as exc:
            raise backend_error(exc) from None

        rows: list[np.ndarray | None] = [None] * len(items)
        for group, vectors in zip([g for g in (texts, images) if g], results):
            for (index, _), vector in zip(group, vectors):
                rows[index] = vector
        return Embedded(
            vectors=np.stack(rows).astype(np.float32, copy=False),
            prompt_tokens=sum(len(s) for s in sequences),
            images=len(pixels),
        )

    def _tokenize(self, variant: VariantRuntime, items: list[Item], truncate: bool) -> list[np.ndarray]:
        if not items:
            return []
        assert variant.tokenizer is not None
        return self.items.tokenize(variant.tokenizer, items, truncate)

    async def _decode_images(self, spec: ImageSpec | None, items: list[ImageItem]) -> list[np.ndarray]:
        if not items:
            return []
        assert spec is not None
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(self._decode_pool, self.items.image, it.source, spec) for it in items),
            return_exceptions=True,
        )
        for it, result in zip(items, results):
            if isinstance(result, ImageError):
                raise image_api_error(result, it.param)
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]
