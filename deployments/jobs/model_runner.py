"""A served variant run in-process for offline jobs: the engine's tower runtime (the same
backend registry, typed backend options, checkpoint loading and forward code as the
encoder replicas) and what the router learns from the encoders (image preprocessing,
tokenizer), so vectors equal the API's for the same dtype.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ..backends.base import TowerInfo, describe
from ..backends.checkpoint import Checkpoint
from ..config import BatchingConfig, VariantConfig
from ..engine.tower import TowerRuntime, load_backend
from ..preprocess.image_spec import ImageSpec
from ..preprocess.tokenizer import ClipTokenizer
from ..protocol.errors import APIError

# Concurrent batch-file requests share forward passes, one at a time (the tower uses every core).
LOCAL_BATCH_WAIT_S = 0.002


class ModelRunner:
    def __init__(self, variant: VariantConfig, threads: int | None = None, batch_size: int = 32) -> None:
        self.variant = variant
        self.threads = variant.cpu_threads or threads
        self.batch_size = batch_size
        self.checkpoint = Checkpoint.open(variant.resolved_source, variant.revision)
        self._towers: dict[str, TowerRuntime] = {}

    def tower(self, name: str) -> TowerRuntime:
        if name not in self._towers:
            if name not in self.variant.towers:
                raise APIError.invalid(
                    f"model `{self.variant.id}` does not serve {name} inputs (towers: {self.variant.towers})",
                    code="unsupported_modality",
                )
            backend = load_backend(self.variant, name, threads=self.threads, checkpoint=self.checkpoint)
            info = describe(backend, variant_id=self.variant.id, logit_scale=self.variant.logit_scale)
            batching = BatchingConfig(max_batch_size=self.batch_size, batch_wait_timeout_s=LOCAL_BATCH_WAIT_S)
            self._towers[name] = TowerRuntime(backend, info, batching=batching, batches_in_flight=1)
        return self._towers[name]

    def info(self, name: str | None = None) -> TowerInfo:
        return self.tower(name or next(iter(self._towers), self.variant.towers[0])).info

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
        return t.tokenizer()

    def embed_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        """uint8 images at the input size -> float32 (N, D), L2-normalised."""
        return self._chunked("image", pixels)

    def embed_sequences(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Token id sequences (BOS ... EOS) -> float32 (N, D), L2-normalised."""
        return self._chunked("text", sequences)

    def _chunked(self, tower: str, items: list[np.ndarray]) -> np.ndarray:
        runtime = self.tower(tower)
        parts = [runtime.forward_items(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.info().embed_dim), dtype=np.float32)


class LocalVariant:
    """engine.variant.EmbeddingVariant over a ModelRunner's towers, so offline requests run
    through the API's own request code (EmbeddingService)."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.config = runner.variant

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def towers(self) -> list[str]:
        return list(self.config.towers)

    def serves(self, tower: str) -> bool:
        return tower in self.config.towers

    async def wait_ready(self, timeout_s: float) -> None:
        return None

    async def submit(self, tower: str, items: list[np.ndarray]) -> list[np.ndarray]:
        return await self.runner.tower(tower).submit(items)

    @property
    def any_info(self) -> TowerInfo:
        return self.runner.info()

    @property
    def image_spec(self) -> ImageSpec | None:
        return self.runner.image_spec if self.serves("image") else None

    @property
    def tokenizer(self) -> ClipTokenizer | None:
        return self.runner.tokenizer if self.serves("text") else None
