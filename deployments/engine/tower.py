"""One tower of one variant, running: the backend loaded through the registry with the
variant's typed options, its TowerInfo, and the device batcher in front of its forwards.

Forwards run on their own threads (`batches_in_flight` of them), so the caller's event
loop keeps answering while the device is busy. Serving's encoder replica and the offline
jobs are thin adapters over this class; the unit tests drive it directly.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..backends.base import TowerBackend, TowerInfo, describe
from ..backends.checkpoint import Checkpoint
from ..backends.devices import replica_threads
from ..backends.registry import get_backend
from ..config import BatchingConfig, VariantConfig
from ..preprocess.image_spec import ImageSpec
from .batching import NO_HOOKS, BatchHooks, DeviceBatcher
from .payloads import Payload, TokenBatch, forward, packer, payload_len, unpack_payload
from .threads import FORWARD_THREAD, named_pool


def cpu_batches_in_flight(setting: int | str, backend: str, cpu_threads: int) -> int:
    """Forwards a CPU replica runs at once; its threads are split between them. With torch,
    two forwards of half the threads each beat one of all threads (docs/benchmarks.md): no
    barrier stalls when another process takes a core, and one batch forms while the other
    computes. onnxruntime shares one thread pool per session, so it runs one."""
    if setting != "auto":
        return int(setting)
    return 2 if backend == "torch" and cpu_threads >= 2 else 1


def load_backend(variant: VariantConfig, tower: str, *, threads: int | None,
                 checkpoint: Checkpoint | None = None) -> TowerBackend:
    """The variant's `tower` on its backend, with its options. Without a `checkpoint`, only
    the files this backend needs for this tower are fetched (hub checkpoints carry more)."""
    backend_cls = get_backend(variant.backend)
    options = variant.backend_options()
    if checkpoint is None:
        files = backend_cls.serving_files(tower, **options)
        checkpoint = Checkpoint.open(variant.resolved_source, variant.revision, allow_patterns=files)
    return backend_cls.load(checkpoint, tower, device=variant.device, dtype=variant.dtype, threads=threads, **options)


def probe_payload(info: TowerInfo) -> Payload:
    """The smallest real input of a tower: one blank image, or one empty text (BOS if the family has one, EOS)."""
    if info.tower == "image":
        height, width = ImageSpec.from_dict(info.image_spec).input_hw
        return np.zeros((1, height, width, 3), dtype=np.uint8)
    tok = info.tokenizer
    ids = [tok.eos_id] if tok.bos_id is None else [tok.bos_id, tok.eos_id]
    return TokenBatch(np.array([ids], dtype=np.int32), np.array([len(ids)], dtype=np.int32))


@dataclass(frozen=True)
class TowerHooks:
    """What a tower runtime reports (serving records these as metrics)."""

    batch: BatchHooks = NO_HOOKS  # device batches: size, wait, forward duration
    encoded: Callable[[int], None] | None = None  # items a forward embedded
    failed: Callable[[BaseException], None] | None = None  # a forward raised


class ProbeStalled(RuntimeError):
    pass


class TowerRuntime:
    def __init__(self, backend: TowerBackend, info: TowerInfo, *, batching: BatchingConfig, batches_in_flight: int,
                 hooks: TowerHooks | None = None) -> None:
        self.backend = backend
        self.info = info
        self.tower = info.tower
        self.pack = packer(self.tower)
        self.batching = batching
        self.batches_in_flight = batches_in_flight
        self.hooks = hooks or TowerHooks()
        self.forwards = 0
        self.items = 0
        self._probe_input = probe_payload(info)
        self._probe: asyncio.Future | None = None
        self.forward_pool = named_pool(batches_in_flight, FORWARD_THREAD)
        self.batcher: DeviceBatcher[Payload] = DeviceBatcher(
            self._forward_call, self.pack, max_batch_size=batching.max_batch_size,
            batch_wait_timeout_s=batching.batch_wait_timeout_s, batches_in_flight=batches_in_flight,
            hooks=self.hooks.batch,
        )

    @classmethod
    def for_replica(cls, variant: VariantConfig, tower: str, *, batching: BatchingConfig | None = None,
                    hooks: TowerHooks | None = None, resources: dict[str, float] | None = None) -> TowerRuntime:
        """A serving replica's tower: the replica's CPU threads (`cpu_threads`, else what the
        process may use) split across its batches in flight."""
        cpu_threads = variant.cpu_threads or replica_threads()
        in_flight = cpu_batches_in_flight(variant.batches_in_flight, variant.backend, cpu_threads)
        backend = load_backend(variant, tower, threads=max(1, cpu_threads // in_flight))
        info = describe(backend, variant_id=variant.id, logit_scale=variant.logit_scale, resources=resources)
        if info.device.startswith("cuda") and variant.batches_in_flight == "auto":
            in_flight = 2  # one batch's host-to-device copy overlaps the other's compute
        return cls(backend, info, batching=batching or BatchingConfig.for_tower(tower), batches_in_flight=in_flight,
                   hooks=hooks)

    def forward(self, payload: Payload) -> np.ndarray:
        """One forward, on the calling thread: float32 (N, D), L2-normalised."""
        return forward(self.backend, payload)

    def forward_items(self, items: list[np.ndarray]) -> np.ndarray:
        """Items (uint8 images or id sequences) packed into one forward, on the calling thread."""
        return self.forward(self.pack(items))

    async def submit(self, items: list[np.ndarray]) -> list[np.ndarray]:
        """Embed items through the device batcher: one row per item, in order."""
        return await self.batcher.submit(items)

    async def embed(self, payload: Payload) -> np.ndarray:
        """`submit` for a packed call (any size): float32 (N, D) in input order."""
        return np.stack(await self.submit(unpack_payload(payload)))

    def reconfigure(self, batching: BatchingConfig) -> None:
        self.batching = batching
        self.batcher.retune(batching.max_batch_size, batching.batch_wait_timeout_s)

    def stats(self) -> dict[str, Any]:
        return {"forwards": self.forwards, "items": self.items, "batches_in_flight": self.batches_in_flight,
                **self.batching.model_dump()}

    async def probe(self, timeout_s: float) -> None:
        """A one-item forward through the forward threads, not counted as traffic; raises
        ProbeStalled when it takes over `timeout_s` (a hung device or thread). A stalled
        thread gets one probe, not a pile."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().run_in_executor(self.forward_pool, self.forward, self._probe_input)
        try:
            await asyncio.wait_for(asyncio.shield(self._probe), timeout_s)
        except asyncio.TimeoutError:
            raise ProbeStalled(f"a one-item forward took over {timeout_s} s") from None

    def stall(self, seconds: float) -> None:
        """Occupy one forward thread for `seconds`, as a hung device would (tests)."""
        self.forward_pool.submit(time.sleep, seconds)

    async def _forward_call(self, payload: Payload) -> np.ndarray:
        """One device batch on a forward thread; counters are kept here, on the event loop."""
        self.forwards += 1
        self.items += payload_len(payload)
        try:
            out = await asyncio.get_running_loop().run_in_executor(self.forward_pool, self.forward, payload)
        except Exception as exc:
            if self.hooks.failed is not None:
                self.hooks.failed(exc)
            raise
        if self.hooks.encoded is not None:
            self.hooks.encoded(len(out))
        return out
