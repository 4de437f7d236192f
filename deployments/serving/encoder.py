"""Encoder replicas: one deployment per (variant, tower).

Calls from any number of routers are merged into device batches by `@serve.batch`
(batch size counted in items, not calls); the forward pass runs on a worker thread so
the replica keeps answering health checks and new calls while the device is busy.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve

from ..backends.checkpoint import Checkpoint
from ..backends.registry import get_backend
from ..config import BatchingConfig, VariantConfig
from .payloads import Payload, TokenBatch, concat_payloads, payload_len, split_payload

logger = logging.getLogger("ray.serve")
_DEFAULT_BATCHING = BatchingConfig()


def _count_items(payloads: list[Payload]) -> int:
    return sum(payload_len(p) for p in payloads)


class _EncoderReplica:
    tower: str = ""

    def __init__(self, variant: dict[str, Any]) -> None:
        self.variant = VariantConfig.model_validate(variant)
        backend_cls = get_backend(self.variant.backend)
        options = self.variant.backend_options()
        # Fetch only what this backend needs for this tower (hub checkpoints carry much more).
        files = backend_cls.serving_files(self.tower, **options)
        checkpoint = Checkpoint.open(self.variant.resolved_source, self.variant.revision, allow_patterns=files)
        self.backend = backend_cls.load(
            checkpoint, self.tower, device=self.variant.device, dtype=self.variant.dtype,
            threads=self.variant.cpu_threads, **options,
        )
        info = self.backend.info()
        info.variant_id = self.variant.id
        if info.logit_scale is None:
            info.logit_scale = self.variant.logit_scale
        self._info = info.to_dict()
        self._batching = _DEFAULT_BATCHING
        self._max_batch_size = self._batching.max_batch_size
        self._forwards = 0
        self._items = 0
        # One forward at a time per replica: the backend already uses every core it was given.
        self._forward_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.tower}-forward")
        logger.info(
            "loaded %s tower of %s (%s, %s on %s)", self.tower, self.variant.id, info.backend, info.dtype, info.device
        )

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        cfg = BatchingConfig.model_validate(user_config or {})
        self._batching = cfg
        self._max_batch_size = cfg.max_batch_size
        self._encode_batch.set_max_batch_size(cfg.max_batch_size)
        self._encode_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    async def info(self) -> dict[str, Any]:
        return self._info

    async def stats(self) -> dict[str, Any]:
        """Live batching settings and counters (tests, debugging)."""
        return {"pid": os.getpid(), "module": __file__, "forwards": self._forwards, "items": self._items, **self._batching.model_dump()}

    async def embed(self, payload: Payload) -> np.ndarray:
        """Embed a packed call (any size): float32 (N, D), L2-normalised, in input order."""
        pieces = split_payload(payload, self._max_batch_size)
        results = await asyncio.gather(*(self._encode_batch(p) for p in pieces))
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results[0] if len(results) == 1 else np.concatenate(results)

    def _forward(self, payload: Payload) -> np.ndarray:
        self._forwards += 1
        self._items += payload_len(payload)
        if isinstance(payload, TokenBatch):
            return self.backend.embed_texts(payload.ids, payload.lengths)
        return self.backend.embed_images(payload)

    async def _run_forward(self, payload: Payload) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._forward_pool, self._forward, payload)

    @serve.batch(
        max_batch_size=_DEFAULT_BATCHING.max_batch_size,
        batch_wait_timeout_s=_DEFAULT_BATCHING.batch_wait_timeout_s,
        batch_size_fn=_count_items,
    )
    async def _encode_batch(self, payloads: list[Payload]) -> list[np.ndarray | Exception]:
        try:
            out = await self._run_forward(concat_payloads(payloads) if len(payloads) > 1 else payloads[0])
        except Exception:
            if len(payloads) == 1:
                raise
            # Isolate the failure: rerun each call alone so only the bad one fails.
            logger.exception("batched forward failed; retrying its %d calls one by one", len(payloads))
            results: list[np.ndarray | Exception] = []
            for p in payloads:
                try:
                    results.append(await self._run_forward(p))
                except Exception as exc:  # returned, not raised: fails this call only
                    results.append(exc)
            return results
        bounds = np.cumsum([0] + [payload_len(p) for p in payloads])
        return [out[bounds[i] : bounds[i + 1]] for i in range(len(payloads))]


ENCODER_DEFAULTS: dict[str, Any] = {
    "ray_actor_options": {"num_cpus": 1},
    "max_ongoing_requests": 64,
    "user_config": _DEFAULT_BATCHING.model_dump(),
    "health_check_period_s": 10,
    "health_check_timeout_s": 30,
}


@serve.deployment(**ENCODER_DEFAULTS)
class ImageEncoder(_EncoderReplica):
    tower = "image"


@serve.deployment(**ENCODER_DEFAULTS)
class TextEncoder(_EncoderReplica):
    tower = "text"


ENCODER_DEPLOYMENTS = {"image": ImageEncoder, "text": TextEncoder}
