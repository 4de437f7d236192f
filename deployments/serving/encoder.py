"""Encoder replicas: one deployment per (variant, tower), a thin Ray Serve adapter over the
engine's TowerRuntime (engine/tower.py), which loads the tower, batches calls from any
number of routers into device batches and runs the forwards on their own threads.

`check_health` pushes a one-item forward through those same threads, so a hung device or
thread fails it and Serve replaces the replica. The classes are plain: deployments/app.py
turns them into Serve deployments with the options `get_deployment_options` gives.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import ray

from ..config import BatchingConfig, VariantConfig
from ..engine.payloads import Payload
from ..engine.tower import ProbeStalled, TowerRuntime
from .deployment_options import encoder_deployment_options
from .metrics import encoder_tower_hooks

logger = logging.getLogger("ray.serve")
# Below Serve's default health_check_timeout_s (30 s), so a stall fails with our message.
HEALTH_PROBE_TIMEOUT_S = 20.0
TEST_HOOKS_ENV = "CLIP_SERVE_TEST_HOOKS"


def assigned_resources() -> dict[str, float] | None:
    """What Ray granted this replica ({"CPU": 2.0, ...}); None outside a Ray worker."""
    try:
        return {k: float(v) for k, v in ray.get_runtime_context().get_assigned_resources().items()}
    except Exception:  # not in a Ray worker (a replica class used directly)
        return None


class EncoderReplica:
    tower: str = ""

    def __init__(self, variant: dict[str, Any]) -> None:
        self.variant = VariantConfig.model_validate(variant)
        self.runtime = TowerRuntime.for_replica(
            self.variant, self.tower, hooks=encoder_tower_hooks({"variant": self.variant.id, "tower": self.tower}),
            resources=assigned_resources(),
        )
        info = self.runtime.info
        self._info = info.to_dict()
        self._fingerprint = info.fingerprint
        logger.info("loaded %s tower of %s (%s, %s on %s; resources %s)", self.tower, self.variant.id, info.backend,
                    info.dtype, info.device, info.resources)

    @classmethod
    def get_deployment_options(cls, variant: VariantConfig | None = None) -> dict[str, Any]:
        """Serve options of this tower's deployment (defaults without a variant)."""
        return encoder_deployment_options(cls.tower, variant)

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        self.runtime.reconfigure(BatchingConfig.for_tower(self.tower, user_config))

    async def info(self) -> dict[str, Any]:
        return self._info

    async def stats(self) -> dict[str, Any]:
        """Live batching settings and counters (tests, debugging)."""
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(), "module": __file__,
                **self.runtime.stats()}

    async def check_health(self) -> None:
        """Serve calls this every `health_check_period_s`; raising marks the replica unhealthy
        and Serve replaces it after a few failures in a row. A real one-item forward through
        the forward threads proves that they and the device still make progress."""
        try:
            await self.runtime.probe(HEALTH_PROBE_TIMEOUT_S)
        except ProbeStalled:
            raise RuntimeError(
                f"{self.tower} encoder of {self.variant.id} is stalled: a one-item forward took over "
                f"{HEALTH_PROBE_TIMEOUT_S} s"
            ) from None

    async def debug_stall_forward(self, seconds: float) -> int:
        """Test hook, reachable through a deployment handle only (no HTTP route leads here):
        occupy a forward thread for `seconds`, as a hung device would; returns the pid of
        the replica it stalled. Refused unless the replica runs with CLIP_SERVE_TEST_HOOKS=1."""
        if os.environ.get(TEST_HOOKS_ENV) != "1":
            raise PermissionError(f"test hooks are disabled; set {TEST_HOOKS_ENV}=1 in the replica's environment")
        self.runtime.stall(seconds)
        return os.getpid()

    async def embed(self, payload: Payload) -> np.ndarray:
        """Embed a packed call (any size): float32 (N, D), L2-normalised, in input order."""
        return await self.runtime.embed(payload)

    async def embed_tagged(self, payload: Payload) -> tuple[str, np.ndarray]:
        """`embed`, plus the fingerprint of the weights that made the vectors: the router
        learns of a weights change in-band (its label cache is keyed by it)."""
        return self._fingerprint, await self.embed(payload)


class ImageEncoderReplica(EncoderReplica):
    tower = "image"


class TextEncoderReplica(EncoderReplica):
    tower = "text"


ENCODER_REPLICAS: dict[str, type[EncoderReplica]] = {"image": ImageEncoderReplica, "text": TextEncoderReplica}
