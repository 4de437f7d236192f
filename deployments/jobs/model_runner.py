"""A served variant run in-process for offline jobs: the same backend registry, checkpoint
loading and tower code as the encoder replicas, and what the router learns from them
(image preprocessing, tokenizer), so vectors equal the API's for the same dtype.
"""

from __future__ import annotations

import asyncio
from functools import cached_property
from typing import Any

import numpy as np

from ..backends.base import TowerInfo
from ..backends.checkpoint import Checkpoint
from ..backends.registry import get_backend
from ..config import VariantConfig
from ..preprocess.image_spec import ImageSpec
from ..preprocess.tokenizer import ClipTokenizer
from ..protocol.errors import APIError
from ..serving.coalescer import Coalescer
from ..serving.payloads import pack_images, pack_tokens


class ModelRunner:
    def __init__(self, variant: VariantConfig, threads: int | None = None, batch_size: int = 32) -> None:
        self.variant = variant
        self.threads = variant.cpu_threads or threads
        self.batch_size = batch_size
        self.checkpoint = Checkpoint.open(variant.resolved_source, variant.revision)
        self._backend_cls = get_backend(variant.backend)
        self._towers: dict[str, Any] = {}
        self._infos: dict[str, TowerInfo] = {}

    def tower(self, name: str) -> Any:
        if name not in self._towers:
            if name not in self.variant.towers:
                raise APIError.invalid(
                    f"model `{self.variant.id}` does not serve {name} inputs (towers: {self.variant.towers})",
                    code="unsupported_modality",
                )
            self._towers[name] = self._backend_cls.load(
                self.checkpoint, name, device=self.variant.device, dtype=self.variant.dtype, threads=self.threads
            )
            self._infos[name] = self._towers[name].info()
        return self._towers[name]

    def info(self, name: str | None = None) -> TowerInfo:
        name = name or next(iter(self._infos), self.variant.towers[0])
        self.tower(name)
        return self._infos[name]

    @property
    def dtype(self) -> str:
        return self.info().dtype

    @cached_property
    def image_spec(self) -> ImageSpec:
        return ImageSpec.from_dict(self.info("image").image_spec)

    @cached_property
    def tokenizer(self) -> ClipTokenizer:
        t = self.info("text").tokenizer
        assert t is not None
        return ClipTokenizer(t.json, t.context_length, t.bos_id, t.eos_id, t.vocab_size)

    def embed_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        """uint8 images at the input size -> float32 (N, D), L2-normalised."""
        tower = self.tower("image")
        return self._chunked(pixels, lambda chunk: tower.embed_images(pack_images(chunk)))

    def embed_sequences(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Token id sequences (BOS ... EOS) -> float32 (N, D), L2-normalised."""
        tower = self.tower("text")

        def run(chunk: list[np.ndarray]) -> np.ndarray:
            batch = pack_tokens(chunk)
            return tower.embed_texts(batch.ids, batch.lengths)

        return self._chunked(sequences, run)

    def _chunked(self, items: list[np.ndarray], fn) -> np.ndarray:
        parts = [fn(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.info().embed_dim), dtype=np.float32)


def _local_coalescer(runner: ModelRunner, tower: str) -> Coalescer:
    """The router's coalescer, calling the local tower instead of an encoder replica:
    concurrent requests share forward passes, one at a time (the tower uses every core)."""

    def forward(payload: Any) -> np.ndarray:
        backend = runner.tower(tower)
        if tower == "image":
            return backend.embed_images(payload)
        return backend.embed_texts(payload.ids, payload.lengths)

    async def call(payload: Any) -> np.ndarray:
        return await asyncio.to_thread(forward, payload)

    return Coalescer(call, pack_images if tower == "image" else pack_tokens,
                     max_items=runner.batch_size, wait_s=0.002, max_inflight=1)


class LocalVariant:
    """The slice of serving.variants.VariantRuntime that EmbeddingService uses, backed by
    a ModelRunner, so offline requests run through the API's own request code."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.config = runner.variant
        self.handles = {tower: None for tower in runner.variant.towers}
        self.coalescers = {tower: _local_coalescer(runner, tower) for tower in runner.variant.towers}

    @property
    def id(self) -> str:
        return self.config.id

    def serves(self, tower: str) -> bool:
        return tower in self.handles

    async def wait_ready(self, timeout_s: float) -> None:
        return None

    @property
    def any_info(self) -> TowerInfo:
        return self.runner.info()

    @property
    def image_spec(self) -> ImageSpec | None:
        return self.runner.image_spec if self.serves("image") else None

    @property
    def tokenizer(self) -> ClipTokenizer | None:
        return self.runner.tokenizer if self.serves("text") else None
