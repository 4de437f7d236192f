"""Items -> embeddings: tokenize texts, decode images, send both towers' work through the
coalescers concurrently, and put the vectors back in input order.

Every endpoint (embeddings, classify, rerank, similarity) goes through `embed`, so limits,
error mapping and batching behave the same everywhere.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from ..config import LimitsConfig, RouterConfig
from ..preprocess.image_spec import ImageSpec
from ..preprocess.images import ImageError, ImageLimits, decode_image_source, open_rgb, resize_and_crop
from ..preprocess.items import ItemPreprocessor, image_api_error
from ..preprocess.url_policy import UrlRejected
from ..protocol.errors import APIError
from ..protocol.inputs import ImageItem, Item, TextItem
from .concurrency import gather_or_cancel
from .errors import backend_error
from .metrics import metrics
from .threads import DECODE_THREAD, named_pool
from .url_fetch import UrlFetcher
from .variants import VariantRuntime

READY_WAIT_S = 10.0


@dataclass
class Embedded:
    vectors: np.ndarray  # float32 (N, D), L2-normalised, input order
    prompt_tokens: int
    images: int


def is_url(source: str) -> bool:
    return source[:8].lower().startswith(("http://", "https://"))


class EmbeddingService:
    def __init__(self, limits: LimitsConfig, router: RouterConfig, fetcher: UrlFetcher | None = None,
                 max_urls_per_request: int = 0) -> None:
        self.limits = limits
        self.image_limits = ImageLimits(
            max_image_bytes=limits.max_image_bytes, max_image_pixels=limits.max_image_pixels,
            max_aspect_ratio=limits.max_image_aspect_ratio, formats=frozenset(limits.image_formats),
        )
        self.items = ItemPreprocessor(self.image_limits, limits.max_text_chars)
        self._decode_pool = named_pool(router.decode_threads, DECODE_THREAD)
        self.fetcher = fetcher  # None: image URLs are refused (decode_image_source says so)
        self.max_urls_per_request = max_urls_per_request

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
        metrics().request_items.observe(len(items), tags={"variant": variant.id})

        sequences = self._tokenize(variant, [it for _, it in texts], truncate)
        pixels = await self._decode_images(variant, [it for _, it in images])
        jobs = []
        if sequences:
            jobs.append(variant.coalescers["text"].submit(sequences))
        if pixels:
            jobs.append(variant.coalescers["image"].submit(pixels))
        try:
            results = await gather_or_cancel(*jobs)
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
        started = time.perf_counter()
        assert variant.tokenizer is not None
        out = self.items.tokenize(variant.tokenizer, items, truncate)
        metrics().stage_seconds.observe(
            time.perf_counter() - started, tags={"variant": variant.id, "tower": "text", "stage": "tokenize"}
        )
        return out

    def check_texts(self, variant: VariantRuntime, items: list[TextItem], truncate: bool) -> None:
        """Raise the 4xx that `embed` would raise for these texts, without embedding them."""
        if truncate:  # nothing but the character limit can fail
            self.items.check_chars(items)
        else:
            self._tokenize(variant, items, truncate)

    def _prepare(self, source: str | bytes, spec: ImageSpec) -> tuple[np.ndarray, int, int, float]:
        """Decode and resize one image (sent inline, or bytes fetched from its URL); also
        returns its bytes, source pixels and decode seconds."""
        started = time.perf_counter()
        data = source if isinstance(source, bytes) else decode_image_source(source, self.image_limits)
        img = open_rgb(data, spec, self.image_limits)
        width, height = img.info["source_size"]
        return resize_and_crop(img, spec), len(data), width * height, time.perf_counter() - started

    async def _decode_images(self, variant: VariantRuntime, items: list[ImageItem]) -> list[np.ndarray]:
        if not items:
            return []
        spec = variant.image_spec
        assert spec is not None
        sources = await self._fetch_urls(items)
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(self._decode_pool, self._prepare, source, spec) for source in sources),
            return_exceptions=True,
        )
        for it, result in zip(items, results):
            if isinstance(result, ImageError):
                raise image_api_error(result, it.param)
            if isinstance(result, BaseException):
                raise result
        m, by_variant = metrics(), {"variant": variant.id}
        stage = {"variant": variant.id, "tower": "image", "stage": "decode"}
        for _, nbytes, npixels, seconds in results:
            m.image_bytes.observe(nbytes, tags=by_variant)
            m.image_pixels.observe(npixels, tags=by_variant)
            m.stage_seconds.observe(seconds, tags=stage)
        return [r[0] for r in results]  # type: ignore[index]

    async def _fetch_urls(self, items: list[ImageItem]) -> list[str | bytes]:
        """Each item's inline source, or the bytes fetched from its URL. The first failed
        fetch (in input order among those finished) fails the request and cancels the rest."""
        urls = [k for k, it in enumerate(items) if is_url(it.source)]
        sources: list[str | bytes] = [it.source for it in items]
        if not urls or self.fetcher is None:
            return sources
        if len(urls) > self.max_urls_per_request:
            raise APIError.too_large(
                f"{len(urls)} image URLs exceed the limit of {self.max_urls_per_request} per request",
                param=items[urls[self.max_urls_per_request]].param,
            )
        tasks = {k: asyncio.ensure_future(self.fetcher.fetch(items[k].source)) for k in urls}
        try:
            await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks.values():
                task.cancel()
        failures = [(k, t.exception()) for k, t in tasks.items() if t.done() and not t.cancelled() and t.exception()]
        if failures:
            k, exc = failures[0]
            if isinstance(exc, UrlRejected):
                raise APIError(exc.status, str(exc), param=items[k].param, code=exc.code)
            raise exc
        for k, task in tasks.items():
            sources[k] = task.result()
        return sources
