"""Encoder replicas: one deployment per (variant, tower).

Calls from any number of routers are merged into device batches by a Coalescer (batch
size counted in items, not calls; each batch takes what queued while the previous forward
ran); the forward pass runs on a worker thread so the replica keeps answering health
checks and new calls while the device is busy.
`check_health` pushes a one-item forward through that same thread, so a hung device or
thread fails it and Serve replaces the replica.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import numpy as np
import ray
from ray import serve

from ..backends.checkpoint import Checkpoint
from ..backends.devices import replica_threads
from ..backends.registry import get_backend
from ..config import BatchingConfig, VariantConfig
from ..preprocess.image_spec import ImageSpec
from .metrics import exception_status, metrics
from .coalescer import ENCODER_METRICS, Coalescer
from .payloads import Payload, TokenBatch, pack_images, pack_tokens, payload_len, unpack_payload
from .threads import FORWARD_THREAD, named_pool

logger = logging.getLogger("ray.serve")
# Per-tower defaults: text forwards are cheap per item, and 64 per forward measured 74% ->
# 86% of model-only for 64-text requests (docs/benchmarks.md).
TOWER_BATCHING = {"image": BatchingConfig(), "text": BatchingConfig(max_batch_size=64)}
# Below Serve's default health_check_timeout_s (30 s), so a stall fails with our message.
HEALTH_PROBE_TIMEOUT_S = 20.0
TEST_HOOKS_ENV = "CLIP_SERVE_TEST_HOOKS"


def cpu_batches_in_flight(setting: int | str, backend: str, cpu_threads: int) -> int:
    """Forwards a CPU replica runs at once; its threads are split between them. With torch,
    two forwards of half the threads each beat one of all threads (measured: 78 vs 70 img/s
    for ViT-B/32 on 2 cores, docs/benchmarks.md): no barrier stalls when another process
    takes a core, and one batch forms while the other computes. onnxruntime shares one
    thread pool per session, so it runs one."""
    if setting != "auto":
        return int(setting)
    return 2 if backend == "torch" and cpu_threads >= 2 else 1


def _probe_payload(info: dict[str, Any]) -> Payload:
    """The smallest real input of a tower: one blank image, or one empty text (BOS, EOS)."""
    if info["tower"] == "image":
        height, width = ImageSpec.from_dict(info["image_spec"]).input_hw
        return np.zeros((1, height, width, 3), dtype=np.uint8)
    tok = info["tokenizer"]
    return TokenBatch(np.array([[tok["bos_id"], tok["eos_id"]]], dtype=np.int32), np.array([2], dtype=np.int32))


class _EncoderReplica:
    tower: str = ""

    def __init__(self, variant: dict[str, Any]) -> None:
        self.variant = VariantConfig.model_validate(variant)
        backend_cls = get_backend(self.variant.backend)
        options = self.variant.backend_options()
        # Fetch only what this backend needs for this tower (hub checkpoints carry much more).
        files = backend_cls.serving_files(self.tower, **options)
        checkpoint = Checkpoint.open(self.variant.resolved_source, self.variant.revision, allow_patterns=files)
        cpu_threads = self.variant.cpu_threads or replica_threads()
        in_flight = cpu_batches_in_flight(self.variant.batches_in_flight, self.variant.backend, cpu_threads)
        self.backend = backend_cls.load(
            checkpoint, self.tower, device=self.variant.device, dtype=self.variant.dtype,
            threads=max(1, cpu_threads // in_flight), **options,
        )
        info = self.backend.info()
        if info.device.startswith("cuda") and self.variant.batches_in_flight == "auto":
            in_flight = 2  # one batch's host-to-device copy overlaps the other's compute
        info.variant_id = self.variant.id
        if info.logit_scale is None:
            info.logit_scale = self.variant.logit_scale
        self._info = info.to_dict()
        self._fingerprint = info.fingerprint
        self._probe_input = _probe_payload(self._info)
        self._probe: asyncio.Future | None = None
        self._tags = {"variant": self.variant.id, "tower": self.tower}
        self._batching = TOWER_BATCHING[self.tower]
        self._forwards = 0
        self._items = 0
        self.batches_in_flight = in_flight
        self._forward_pool = named_pool(self.batches_in_flight, FORWARD_THREAD)
        # Calls queue item by item; each forward takes what queued while the last one ran
        # (batch sizes counted in items, not calls). A failed batch is rerun call by call,
        # so only the call at fault fails.
        self._batcher: Coalescer[Payload] = Coalescer(
            self._forward_call, pack_images if self.tower == "image" else pack_tokens,
            max_items=self._batching.max_batch_size, wait_s=self._batching.batch_wait_timeout_s,
            max_inflight=self.batches_in_flight, isolate=lambda exc: True,
            metric_tags=self._tags, metric_names=ENCODER_METRICS,
        )
        logger.info(
            "loaded %s tower of %s (%s, %s on %s)", self.tower, self.variant.id, info.backend, info.dtype, info.device
        )

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        # Knobs left out keep this tower's default, not the other tower's.
        cfg = TOWER_BATCHING[self.tower].model_copy(update=BatchingConfig.model_validate(user_config or {}).model_dump(
            exclude_unset=True))
        self._batching = cfg
        self._batcher.max_items = cfg.max_batch_size
        self._batcher.wait_s = cfg.batch_wait_timeout_s

    async def info(self) -> dict[str, Any]:
        return self._info

    async def stats(self) -> dict[str, Any]:
        """Live batching settings and counters (tests, debugging)."""
        return {
            "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(), "module": __file__,
            "forwards": self._forwards, "items": self._items, "batches_in_flight": self.batches_in_flight,
            **self._batching.model_dump(),
        }

    async def check_health(self) -> None:
        """Serve calls this every `health_check_period_s`; raising marks the replica unhealthy
        and Serve replaces it after a few failures in a row. A real one-item forward through
        the forward thread proves that the thread and the device still make progress."""
        if self._probe is None or self._probe.done():  # a stalled thread gets one probe, not a pile
            self._probe = asyncio.get_running_loop().run_in_executor(self._forward_pool, self._run_probe)
        try:
            await asyncio.wait_for(asyncio.shield(self._probe), HEALTH_PROBE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise RuntimeError(
                f"{self.tower} encoder of {self.variant.id} is stalled: a one-item forward took over {HEALTH_PROBE_TIMEOUT_S} s"
            ) from None

    def _run_probe(self) -> None:
        self._embed(self._probe_input)  # not counted in stats or metrics: it is not traffic

    async def debug_stall_forward(self, seconds: float) -> int:
        """Test hook, reachable through a deployment handle only (no HTTP route leads here):
        occupy the forward thread for `seconds`, as a hung device would; returns the pid of
        the replica it stalled. Refused unless the replica runs with CLIP_SERVE_TEST_HOOKS=1."""
        if os.environ.get(TEST_HOOKS_ENV) != "1":
            raise PermissionError(f"test hooks are disabled; set {TEST_HOOKS_ENV}=1 in the replica's environment")
        self._forward_pool.submit(time.sleep, seconds)
        return os.getpid()

    async def embed(self, payload: Payload) -> np.ndarray:
        """Embed a packed call (any size): float32 (N, D), L2-normalised, in input order."""
        return np.stack(await self._batcher.submit(unpack_payload(payload)))

    async def embed_tagged(self, payload: Payload) -> tuple[str, np.ndarray]:
        """`embed`, plus the fingerprint of the weights that made the vectors: the router
        learns of a weights change in-band (its label cache is keyed by it)."""
        return self._fingerprint, await self.embed(payload)

    def _embed(self, payload: Payload) -> np.ndarray:
        if isinstance(payload, TokenBatch):
            return self.backend.embed_texts(payload.ids, payload.lengths)
        return self.backend.embed_images(payload)

    async def _forward_call(self, payload: Payload) -> np.ndarray:
        """One device batch on a forward thread; counters are kept here, on the event loop."""
        self._forwards += 1
        self._items += payload_len(payload)
        try:
            out = await asyncio.get_running_loop().run_in_executor(self._forward_pool, self._embed, payload)
        except Exception as exc:
            metrics().errors.inc(tags={**self._tags, "stage": "forward", "status": exception_status(exc)})
            raise
        metrics().encoded_items.inc(len(out), tags=self._tags)
        return out


ENCODER_DEFAULTS: dict[str, Any] = {
    "ray_actor_options": {"num_cpus": 1},
    "max_ongoing_requests": 64,
    # Calls a router may queue for this deployment when every replica is busy; past it the
    # router gets BackPressureError and answers 503 (routers send few, coalesced calls).
    "max_queued_requests": 64,
    "health_check_period_s": 10,
    "health_check_timeout_s": 30,
}


@serve.deployment(**ENCODER_DEFAULTS, user_config=TOWER_BATCHING["image"].model_dump())
class ImageEncoder(_EncoderReplica):
    tower = "image"


@serve.deployment(**ENCODER_DEFAULTS, user_config=TOWER_BATCHING["text"].model_dump())
class TextEncoder(_EncoderReplica):
    tower = "text"


ENCODER_DEPLOYMENTS = {"image": ImageEncoder, "text": TextEncoder}
