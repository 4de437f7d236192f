"""Everything a router replica's endpoints share, built once per replica."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ..config import AppConfig
from .auth import KeyStore
from .admission import Capacity
from ..engine.embedding_service import EmbeddingService
from .errors import backend_error
from .label_cache import LabelCache
from .metrics import metrics
from .url_fetch import fetcher_from_config
from .variants import VariantRegistry
from .zero_shot import ZeroShotService


def count_label_lookups(variant: str, status: str, count: int) -> None:
    """Label cache lookups in `clip_cache_lookups_total` (the text tower's `label` cache)."""
    metrics().cache_lookups.inc(count, tags={"variant": variant, "tower": "text", "stage": "label", "status": status})


class RouterState:
    def __init__(self, config: AppConfig, encoders: dict[str, dict[str, Any]]) -> None:
        self.config = config
        self.keys = KeyStore(config.auth) if config.auth.enabled else None  # fails closed without keys
        self.capacity = Capacity(config.router.max_concurrent_requests)
        self.variants = VariantRegistry(config, encoders)
        self.embeddings = EmbeddingService(
            config.limits, config.router, fetcher_from_config(config), config.image_urls.max_urls_per_request,
            metrics=metrics, map_error=backend_error,
        )
        self.label_cache = LabelCache(
            config.label_cache.max_entries,
            config.label_cache.max_bytes,
            on_lookup=count_label_lookups,
        )
        self.zero_shot = ZeroShotService(self.embeddings, self.label_cache, config.limits,
                                         config.router.max_pending_items)

    def stats(self) -> dict[str, Any]:
        """Work in progress in this replica (tests, debugging): all zero when idle, whatever
        happened before (cancelled, timed out or shed requests leave nothing behind)."""
        return {
            "active_requests": self.capacity.active,
            "shed_requests": self.capacity.shed,
            "coalescers": {f"{v.id}/{tower}": {"pending": c.pending, "inflight": c.inflight,
                                               "retried_calls": v.retried_calls[tower]}
                           for v in self.variants for tower, c in v.coalescers.items()},
            "label_encodes_inflight": self.label_cache.inflight,
        }

    def truncate(self, requested: bool | None) -> bool:
        return self.config.router.truncate_default if requested is None else requested


async def get_state(request: Request) -> RouterState:
    """FastAPI dependency: the replica's RouterState. Async so FastAPI calls it on the event
    loop: a plain `def` dependency costs every request a hop through AnyIO's thread pool."""
    return request.app.state.clip
