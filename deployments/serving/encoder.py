"""Encoder replicas: one deployment per (variant, tower).

Calls from any number of routers are merged into device batches by `@serve.batch`
(batch size counted in items, not calls); the forward pass runs on a worker thread so
the replica keeps answering health checks and new calls while the device is busy.
`check_health` pushes a one-item forward through that same thread, so a hung device or
thread fails it and Serve replaces the replica.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray import serve

from ..backends.checkpoint import Checkpoint
from ..backends.registry import get_backend
from ..config import BatchingConfig, VariantConfig
from ..preprocess.image_spec import ImageSpec
from .metrics import exception_status, metrics
from .payloads import Payload, TokenBatch, concat_payloads, payload_len, split_payload

logger = logging.getLogger("ray.serve")
_DEFAULT_BATCHING = BatchingConfig()
# Below Serve's default health_check_timeout_s (30 s), so a stall fails with our message.
HEALTH_PROBE_TIMEOUT_S = 20.0
TEST_HOOKS_ENV = "CLIP_SERVE_TEST_HOOKS"


@dataclass
class _Queued:
    """One piece of a call waiting in the batch queue, with its arrival time."""

    payload: Payload
    arrived: float

    def __len__(self) -> int:
        return payload_len(self.payload)


def _count_items(queued: list[_Queued]) -> int:
    return sum(len(q) for q in queued)


_BATCH_DEFAULTS = dict(  # live values come from user_config (reconfigure)
    max_batch_size=_DEFAULT_BATCHING.max_batch_size,
    batch_wait_timeout_s=_DEFAULT_BATCHING.batch_wait_timeout_s,
    batch_size_fn=_count_items,
)


def resolve_batches_in_flight(setting: int | str, device: str) -> int:
    if setting == "auto":
        return 2 if device.startswith("cuda") else 1
    return int(setting)


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
        self.backend = backend_cls.load(
            checkpoint, self.tower, device=self.variant.device, dtype=self.variant.dtype,
            threads=self.variant.cpu_threads, **options,
        )
        info = self.backend.info()
        info.variant_id = self.variant.id
        if info.logit_scale is None:
            info.logit_scale = self.variant.logit_scale
        self._info = info.to_dict()
        self._fingerprint = info.fingerprint
        self._probe_input = _probe_payload(self._info)
        self._probe: asyncio.Future | None = None
        self._tags = {"variant": self.variant.id, "tower": self.tower}
        self._batching = _DEFAULT_BATCHING
        self._max_batch_size = self._batching.max_batch_size
        self._forwards = 0
        self._items = 0
        self.batches_in_flight = resolve_batches_in_flight(self.variant.batches_in_flight, info.device)
        # One forward at a time on CPU (the backend already uses every core it was given);
        # two on GPU, each thread on its own CUDA stream, so copies overlap compute.
        self._batcher = self._encode_batch_overlapped if self.batches_in_flight > 1 else self._encode_batch
        self._forward_pool = ThreadPoolExecutor(max_workers=self.batches_in_flight,
                                                thread_name_prefix=f"{self.tower}-forward")
        logger.info(
            "loaded %s tower of %s (%s, %s on %s)", self.tower, self.variant.id, info.backend, info.dtype, info.device
        )

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        cfg = BatchingConfig.model_validate(user_config or {})
        self._batching = cfg
        self._max_batch_size = cfg.max_batch_size
        self._batcher.set_max_batch_size(cfg.max_batch_size)
        self._batcher.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

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
        arrived = time.perf_counter()
        pieces = split_payload(payload, self._max_batch_size)
        results = await asyncio.gather(*(self._batcher(_Queued(p, arrived)) for p in pieces))
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results[0] if len(results) == 1 else np.concatenate(results)

    async def embed_tagged(self, payload: Payload) -> tuple[str, np.ndarray]:
        """`embed`, plus the fingerprint of the weights that made the vectors: the router
        learns of a weights change in-band (its label cache is keyed by it)."""
        return self._fingerprint, await self.embed(payload)

    def _embed(self, payload: Payload) -> np.ndarray:
        if isinstance(payload, TokenBatch):
            return self.backend.embed_texts(payload.ids, payload.lengths)
        return self.backend.embed_images(payload)

    def _forward(self, payload: Payload) -> tuple[np.ndarray, float, float]:
        """Runs on the forward thread; returns the vectors and when the forward started and ended."""
        started = time.perf_counter()
        self._forwards += 1
        self._items += payload_len(payload)
        out = self._embed(payload)
        return out, started, time.perf_counter()

    async def _run_forward(self, queued: list[_Queued]) -> np.ndarray:
        payload = concat_payloads([q.payload for q in queued])
        out, started, ended = await asyncio.get_running_loop().run_in_executor(self._forward_pool, self._forward, payload)
        self._record_forward(queued, started, ended)
        return out

    def _count_failure(self, exc: BaseException) -> BaseException:
        metrics().errors.inc(tags={**self._tags, "stage": "forward", "status": exception_status(exc)})
        return exc

    def _record_forward(self, queued: list[_Queued], started: float, ended: float) -> None:
        m = metrics()
        items = _count_items(queued)
        m.batch_items.observe(items, tags=self._tags)
        m.encoded_items.inc(items, tags=self._tags)
        m.stage_seconds.observe(ended - started, tags={**self._tags, "stage": "forward"})
        waits = {**self._tags, "stage": "batch"}
        for q in queued:
            m.queue_wait_seconds.observe(started - q.arrived, tags=waits)

    @serve.batch(**_BATCH_DEFAULTS)
    async def _encode_batch(self, queued: list[_Queued]) -> list[np.ndarray | Exception]:
        return await self._process(queued)

    @serve.batch(**_BATCH_DEFAULTS, max_concurrent_batches=2)
    async def _encode_batch_overlapped(self, queued: list[_Queued]) -> list[np.ndarray | Exception]:
        return await self._process(queued)

    async def _process(self, queued: list[_Queued]) -> list[np.ndarray | Exception]:
        try:
            out = await self._run_forward(queued)
        except Exception as exc:
            if len(queued) == 1:
                self._count_failure(exc)
                raise
            # Isolate the failure: rerun each call alone so only the bad one fails.
            logger.exception("batched forward failed; retrying its %d calls one by one", len(queued))
            results: list[np.ndarray | Exception] = []
            for q in queued:
                try:
                    results.append(await self._run_forward([q]))
                except Exception as exc:  # returned, not raised: fails this call only
                    results.append(self._count_failure(exc))
            return results
        bounds = np.cumsum([0] + [len(q) for q in queued])
        return [out[bounds[i] : bounds[i + 1]] for i in range(len(queued))]


ENCODER_DEFAULTS: dict[str, Any] = {
    "ray_actor_options": {"num_cpus": 1},
    "max_ongoing_requests": 64,
    # Calls a router may queue for this deployment when every replica is busy; past it the
    # router gets BackPressureError and answers 503 (routers send few, coalesced calls).
    "max_queued_requests": 64,
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
