"""Items -> embeddings: tokenize texts, decode images, send both towers' work to the
variant concurrently, and put the vectors back in input order.

Every endpoint (embeddings, classify, rerank, similarity) and the offline batch job go
through `embed`, so limits, error mapping and batching behave the same everywhere. What
it needs from a variant is `EmbeddingVariant` (engine/variant.py). Metrics go to the
`metrics` object the caller passes (serving: its Prometheus metrics), none by default.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

import numpy as np

from ..config import LimitsConfig, RouterConfig
from ..preprocess.image_spec import ImageSpec
from ..preprocess.images import (
    ImageError, ImageLimits, OpenedImage, PixelBudget, decode_image_source, decode_rgb, open_image, resize_and_crop,
)
from ..preprocess.items import ItemPreprocessor, image_api_error
from ..preprocess.tokenizer import TextSpans
from ..preprocess.url_policy import UrlRejected
from ..protocol.errors import APIError
from ..protocol.inputs import ImageItem, Item, TextItem
from .concurrency import gather_or_cancel
from .fair_pool import FairPool
from .threads import DECODE_THREAD, TOKENIZE_THREAD
from .variant import EmbeddingVariant

logger = logging.getLogger("ray.serve")

READY_WAIT_S = 10.0
# One tokenizer task: small enough that a request's texts interleave with others' in the
# pool, large enough that the per-task overhead stays small.
TOKENIZE_CHUNK_CHARS = 65_536
TOKENIZE_CHUNK_TEXTS = 256


@dataclass
class Embedded:
    vectors: np.ndarray  # float32 (N, D), L2-normalised, input order
    prompt_tokens: int
    images: int


def is_url(source: str) -> bool:
    return source[:8].lower().startswith(("http://", "https://"))


def text_chunks(items: list[Item]) -> list[list[Item]]:
    """Consecutive runs of items, each at most TOKENIZE_CHUNK_CHARS characters (or one
    longer text) and TOKENIZE_CHUNK_TEXTS items."""
    chunks: list[list[Item]] = []
    chars = 0
    for it in items:
        size = len(it.text) if isinstance(it, TextItem) else len(it.ids)  # type: ignore[union-attr]
        if not chunks or chars + size > TOKENIZE_CHUNK_CHARS or len(chunks[-1]) >= TOKENIZE_CHUNK_TEXTS:
            chunks.append([])
            chars = 0
        chunks[-1].append(it)
        chars += size
    return chunks


class ImageFetcher(Protocol):
    def fetch(self, url: str) -> Awaitable[bytes]: ...


class _NullMetric:
    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        pass


class NullMetrics:
    """Records nothing; stands in for serving's metrics (any metric attribute)."""

    def __getattr__(self, name: str) -> _NullMetric:
        return _NullMetric()


def encoder_failure(exc: BaseException) -> APIError:
    """A failed forward as the client sees it (serving maps its own transport errors first)."""
    if isinstance(exc, APIError):
        return exc
    logger.error("encoder call failed: %r", exc)
    return APIError(500, "the encoder failed on this request", type="server_error", code="encoder_error")


def first_failure(results: list) -> None:
    """Raise the first exception among pool results (input order)."""
    for result in results:
        if isinstance(result, BaseException):
            raise result


class EmbeddingService:
    def __init__(self, limits: LimitsConfig, router: RouterConfig, fetcher: ImageFetcher | None = None,
                 max_urls_per_request: int = 0, *, metrics: Callable[[], Any] = NullMetrics,
                 map_error: Callable[[BaseException], APIError] = encoder_failure) -> None:
        self.limits = limits
        self.image_limits = ImageLimits(
            max_image_bytes=limits.max_image_bytes, max_image_pixels=limits.max_image_pixels,
            max_aspect_ratio=limits.max_image_aspect_ratio, formats=frozenset(limits.image_formats),
        )
        self.items = ItemPreprocessor(self.image_limits, limits.max_text_chars, limits.max_request_text_chars)
        # CPU work runs in pools, never on the event loop, where it would hold up every
        # other request and the deadlines; no request may claim a whole pool.
        self._decode_pool = FairPool(router.decode_threads, DECODE_THREAD)
        self._tokenize_pool = FairPool(router.tokenize_threads, TOKENIZE_THREAD)
        self.fetcher = fetcher  # None: image URLs are refused (decode_image_source says so)
        self.max_urls_per_request = max_urls_per_request
        self._metrics = metrics  # called per use: serving's metrics live per process
        self._map_error = map_error

    def check_count(self, items: list[Item], param: str = "input") -> None:
        if len(items) > self.limits.max_items_per_request:
            raise APIError.too_large(
                f"{len(items)} inputs exceed the limit of {self.limits.max_items_per_request} per request", param=param
            )

    async def embed(self, variant: EmbeddingVariant, items: list[Item], truncate: bool) -> Embedded:
        self.check_count(items)
        return await self.embed_items(variant, items, truncate)

    async def embed_items(self, variant: EmbeddingVariant, items: list[Item], truncate: bool) -> Embedded:
        """`embed` without the per-request item limit, for the server's own item sets (label prompts)."""
        texts = [(i, it) for i, it in enumerate(items) if not isinstance(it, ImageItem)]
        images = [(i, it) for i, it in enumerate(items) if isinstance(it, ImageItem)]
        for tower, group in (("text", texts), ("image", images)):
            if group and not variant.serves(tower):
                raise APIError.invalid(
                    f"model `{variant.id}` does not serve {tower} inputs (towers: {list(variant.towers)})",
                    param=group[0][1].param,
                    code="unsupported_modality",
                )
        await variant.wait_ready(READY_WAIT_S)
        self._metrics().request_items.observe(len(items), tags={"variant": variant.id})

        sequences = await self._tokenize(variant, [it for _, it in texts], truncate)
        pixels = await self._decode_images(variant, [it for _, it in images])
        jobs = []
        if sequences:
            jobs.append(variant.submit("text", sequences))
        if pixels:
            jobs.append(variant.submit("image", pixels))
        try:
            results = await gather_or_cancel(*jobs)
        except Exception as exc:
            raise self._map_error(exc) from None

        rows: list[np.ndarray | None] = [None] * len(items)
        for group, vectors in zip([g for g in (texts, images) if g], results):
            for (index, _), vector in zip(group, vectors):
                rows[index] = vector
        return Embedded(
            vectors=np.stack(rows).astype(np.float32, copy=False),
            prompt_tokens=sum(len(s) for s in sequences),
            images=len(pixels),
        )

    async def _tokenize(self, variant: EmbeddingVariant, items: list[Item], truncate: bool) -> list[np.ndarray]:
        if not items:
            return []
        started = time.perf_counter()
        tokenizer = variant.tokenizer
        assert tokenizer is not None
        self.items.check_chars([it for it in items if isinstance(it, TextItem)])  # before any work
        results = await self._tokenize_pool.map(
            self.items.tokenize, [(tokenizer, chunk, truncate) for chunk in text_chunks(items)]
        )
        first_failure(results)
        self._metrics().stage_seconds.observe(
            time.perf_counter() - started, tags={"variant": variant.id, "tower": "text", "stage": "tokenize"}
        )
        return [ids for chunk in results for ids in chunk]

    async def token_spans(self, variant: EmbeddingVariant, items: list[TextItem]) -> list[TextSpans]:
        """Each text's ids (BOS ... EOS), token strings and character spans before any
        truncation, for /v1/tokenize."""
        tokenizer = variant.tokenizer
        assert tokenizer is not None
        self.items.check_chars(items)
        results = await self._tokenize_pool.map(
            tokenizer.spans, [([it.text for it in chunk],) for chunk in text_chunks(items)]  # type: ignore[union-attr]
        )
        first_failure(results)
        return [spans for chunk in results for spans in chunk]

    async def check_texts(self, variant: EmbeddingVariant, items: list[TextItem], truncate: bool) -> None:
        """Raise the 4xx that `embed` would raise for these texts, without embedding them."""
        if truncate:  # nothing but the character limits can fail
            self.items.check_chars(items)
        else:
            await self._tokenize(variant, items, truncate)

    def _open(self, source: str | bytes, spec: ImageSpec, budget: PixelBudget) -> tuple[OpenedImage, int, float]:
        """Check one image (sent inline, or bytes fetched from its URL) from its header and
        charge its request's pixel budget; also returns its bytes and the seconds spent."""
        started = time.perf_counter()
        data = source if isinstance(source, bytes) else decode_image_source(source, self.image_limits)
        return open_image(data, spec, self.image_limits, budget), len(data), time.perf_counter() - started

    @staticmethod
    def _decode(opened: OpenedImage, spec: ImageSpec) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        return resize_and_crop(decode_rgb(opened), spec), time.perf_counter() - started

    async def _decode_images(self, variant: EmbeddingVariant, items: list[ImageItem]) -> list[np.ndarray]:
        if not items:
            return []
        spec = variant.image_spec
        assert spec is not None
        sources = await self._fetch_urls(items)
        # Every header first: a request over its pixel budget is refused before any decode.
        budget = PixelBudget(self.limits.max_request_pixels)
        opened = self._raise_image_errors(
            items, await self._decode_pool.map(self._open, [(source, spec, budget) for source in sources])
        )
        decoded = self._raise_image_errors(
            items, await self._decode_pool.map(self._decode, [(image, spec) for image, _, _ in opened])
        )
        m, by_variant = self._metrics(), {"variant": variant.id}
        stage = {"variant": variant.id, "tower": "image", "stage": "decode"}
        for (image, nbytes, open_seconds), (_, seconds) in zip(opened, decoded):
            m.image_bytes.observe(nbytes, tags=by_variant)
            m.image_pixels.observe(image.source_size[0] * image.source_size[1], tags=by_variant)
            m.stage_seconds.observe(open_seconds + seconds, tags=stage)
        return [array for array, _ in decoded]

    @staticmethod
    def _raise_image_errors(items: list[ImageItem], results: list) -> list:
        """The first failure among per-image results (input order), as the API error naming its item."""
        for it, result in zip(items, results):
            if isinstance(result, ImageError):
                raise image_api_error(result, it.param)
        first_failure(results)
        return results

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
