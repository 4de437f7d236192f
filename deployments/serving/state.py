"""Everything a router replica's endpoints share, built once per replica."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ..config import AppConfig
from .embedding_service import EmbeddingService
from .label_cache import LabelCache
from .metrics import metrics
from .variants import VariantRegistry
from .zero_shot import ZeroShotService


def count_label_lookups(variant: str, status: str, count: int) -> None:
    """Label cache lookups in `clip_cache_lookups_total` (the text tower's `label` cache)."""
    metrics().cache_lookups.inc(count, tags={"variant": variant, "tower": "text", "stage": "label", "status": status})


class RouterState:
    def __init__(self, config: AppConfig, encoders: dict[str, dict[str, Any]]) -> None:
        self.config = config
        self.variants = VariantRegistry(config, encoders)
        self.embeddings = EmbeddingService(config.limits, config.router)
        self.label_cache = LabelCache(
            config.label_cache.max_entries,
            config.label_cache.max_bytes,
            on_lookup=count_label_lookups,
        )
        self.zero_shot = ZeroShotService(self.embeddings, self.label_cache, config.limits)

    def truncate(self, requested: bool | None) -> bool:
        return self.config.router.truncate_default if requested is None else requested


def get_state(request: Request) -> RouterState:
    """FastAPI dependency: the replica's RouterState."""
    return request.app.state.clip
