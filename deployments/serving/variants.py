"""The router's view of each served variant: its encoder handles, what the encoders
reported about themselves (dims, preprocessing, tokenizer), and its call coalescers.
`VariantRuntime` is the serving side of engine.variant.EmbeddingVariant."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from ..backends.base import TowerInfo
from ..config import AppConfig, RouterConfig, VariantConfig
from ..engine.batching import CallCoalescer, CoalescingSettings
from ..engine.concurrency import start_shared
from ..engine.payloads import packer
from ..preprocess.image_spec import ImageSpec
from ..preprocess.tokenizer import ClipTokenizer
from ..protocol.errors import APIError
from .metrics import router_call_hooks
from .retry import input_specific, with_retries
from .scoring import DEFAULT_LOGIT_SCALE, Scorer

logger = logging.getLogger("ray.serve")


class VariantRuntime:
    def __init__(self, config: VariantConfig, handles: dict[str, Any], router: RouterConfig) -> None:
        self.config = config
        self.handles = handles
        self.retries = router.encoder_retries
        self.retried_calls = {tower: 0 for tower in handles}  # encoder calls sent again after a replica loss
        self.created = int(time.time())
        self.infos: dict[str, TowerInfo] = {}
        self.image_spec: ImageSpec | None = None
        self.tokenizer: ClipTokenizer | None = None
        self.load_error: str | None = None
        self._ready: asyncio.Event | None = None
        # The weights the encoders last said they run (every encoder call reports it).
        self.fingerprint: str | None = None
        self._refreshes: dict[str, asyncio.Task] = {}
        settings = CoalescingSettings(max_items=router.max_items_per_call, wait_s=router.coalesce_wait_ms / 1000,
                                      max_inflight=router.max_inflight_calls, max_pending=router.max_pending_items)
        self.coalescers = {
            tower: CallCoalescer(
                self._encoder_call(tower), packer(tower), settings, isolate=input_specific,
                hooks=router_call_hooks({"variant": config.id, "tower": tower}),
            )
            for tower in handles
        }

    def _encoder_call(self, tower: str):
        handle = self.handles[tower]

        tags = {"variant": self.id, "tower": tower}

        def count() -> None:
            self.retried_calls[tower] += 1

        async def call(payload: Any):
            fingerprint, rows = await with_retries(lambda: handle.embed_tagged.remote(payload), self.retries, tags, count)
            self.observe_fingerprint(tower, fingerprint)
            return rows

        return call

    def observe_fingerprint(self, tower: str, fingerprint: str) -> None:
        """An encoder reported its weights. New weights (a redeploy, a restarted replica
        that loaded changed files): from now on results are keyed by the new fingerprint,
        and the tower's info (temperature, tokenizer, preprocessing) is fetched again."""
        if fingerprint != self.fingerprint:
            logger.info("variant %s: %s encoder runs weights %s (was %s)", self.id, tower, fingerprint, self.fingerprint)
            self.fingerprint = fingerprint
        info = self.infos.get(tower)
        if info is not None and info.fingerprint != fingerprint and tower not in self._refreshes:
            self._refreshes[tower] = start_shared(self._refresh(tower, fingerprint))

    async def _refresh(self, tower: str, fingerprint: str) -> None:
        try:
            info = TowerInfo.from_dict(await self.handles[tower].info.remote())
            if info.fingerprint == fingerprint:  # not an old replica still draining
                self._install(info)
        except Exception as exc:
            logger.warning("variant %s: could not refresh %s encoder info: %r", self.id, tower, exc)
        finally:
            self._refreshes.pop(tower, None)

    async def settled(self) -> None:
        """Wait for info refreshes after a weights change (returns at once when none)."""
        if self._refreshes:
            await asyncio.gather(*list(self._refreshes.values()), return_exceptions=True)

    @property
    def logit_scale(self) -> float:
        """exp() of the learned temperature; the text tower's, else the image tower's."""
        for tower in ("text", "image"):
            info = self.infos.get(tower)
            if info is not None and info.logit_scale is not None:
                return float(info.logit_scale)
        return DEFAULT_LOGIT_SCALE

    @property
    def scorer(self) -> Scorer:
        """The model family's zero-shot score function with the checkpoint's learned
        temperature (and bias, for sigmoid scores); the text tower's report first."""
        info = self.infos.get("text") or self.infos.get("image")
        if info is None or info.score_function != "sigmoid":
            return Scorer("softmax", self.logit_scale)
        bias = next((i.logit_bias for i in (self.infos.get("text"), self.infos.get("image"))
                     if i is not None and i.logit_bias is not None), 0.0)
        return Scorer("sigmoid", self.logit_scale, bias)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def ready(self) -> bool:
        return len(self.infos) == len(self.handles)

    @property
    def towers(self) -> list[str]:
        return list(self.handles)

    def serves(self, tower: str) -> bool:
        return tower in self.handles

    async def submit(self, tower: str, items: list[np.ndarray]) -> list[np.ndarray]:
        return await self.coalescers[tower].submit(items)

    @property
    def any_info(self) -> TowerInfo | None:
        return next(iter(self.infos.values()), None)

    def _event(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    async def load(self) -> None:
        """Ask each tower's encoders what they loaded; retried until they answer."""
        delay = 0.5
        while not self.ready:
            for tower, handle in self.handles.items():
                if tower in self.infos:
                    continue
                try:
                    self._install(TowerInfo.from_dict(await handle.info.remote()))
                    self.load_error = None
                except Exception as exc:  # encoders still starting, or failing: keep trying
                    self.load_error = f"{tower} encoder: {exc!r}"[:500]
                    logger.warning("variant %s not ready: %s", self.id, self.load_error)
            if not self.ready:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._event().set()

    def _install(self, info: TowerInfo) -> None:
        if info.tower == "image" and info.image_spec:
            self.image_spec = ImageSpec.from_dict(info.image_spec)
        if info.tower == "text" and info.tokenizer:
            self.tokenizer = info.tokenizer.tokenizer()
            info.tokenizer = None  # the JSON is large; the live tokenizer is what we keep
        self.infos[info.tower] = info
        if self.fingerprint is None:
            self.fingerprint = info.fingerprint

    async def wait_ready(self, timeout_s: float) -> None:
        if self.ready:
            return
        try:
            await asyncio.wait_for(self._event().wait(), timeout_s)
        except asyncio.TimeoutError:
            raise APIError.unavailable(
                f"model `{self.id}` is still loading; retry shortly", retry_after_s=5, code="model_loading"
            ) from None

    def describe(self) -> dict[str, Any]:
        info = self.any_info
        spec = self.image_spec
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": "clip-serve",
            "aliases": list(self.config.aliases),
            "towers": list(self.handles),
            "backend": self.config.backend,
            "ready": self.ready,
            "embedding_dimension": info.embed_dim if info else None,
            "image_size": list(spec.input_hw) if spec else None,
            "context_length": self.tokenizer.context_length if self.tokenizer else None,
            "dtype": info.dtype if info else None,
            "device": info.device if info else None,
            "compiled": bool(info.extra.get("compiled")) if info else None,
            "architecture": info.extra.get("architecture") if info else None,
            "layout": info.extra.get("layout") if info else None,
            "logit_scale": self.logit_scale if info else None,
            "family": info.family if info else None,
            "score_function": info.score_function if info else None,
            "logit_bias": self.scorer.logit_bias if info else None,
            # What each loaded tower's replica was granted (Ray resources, e.g. {"CPU": 2.0}).
            "resources": {tower: i.resources for tower, i in self.infos.items()},
        }


class VariantRegistry:
    def __init__(self, config: AppConfig, encoders: dict[str, dict[str, Any]]) -> None:
        self.variants = {v.id: VariantRuntime(v, encoders[v.id], config.router) for v in config.variants}
        self._names = {name: self.variants[v.id] for v in config.variants for name in v.names()}
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(v.load()) for v in self.variants.values()]

    def resolve(self, name: str) -> VariantRuntime:
        try:
            return self._names[name]
        except (KeyError, TypeError):
            raise APIError.model_not_found(str(name)) from None

    @property
    def all_ready(self) -> bool:
        return all(v.ready for v in self.variants.values())

    def __iter__(self):
        return iter(self.variants.values())
