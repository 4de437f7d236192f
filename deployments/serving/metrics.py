"""Prometheus metrics of this replica, on `ray.serve.metrics` (Ray adds deployment,
replica and application tags and exports them through its metrics agent).

Created lazily, once per replica process: importing this module records nothing and
needs no running Ray.
"""

from __future__ import annotations


class ReplicaMetrics:
    def __init__(self) -> None:
        from ray.serve import metrics

        self.label_cache_lookups = metrics.Counter(
            "clip_label_cache_lookups_total",
            description="Label/prompt embedding lookups in the router's cache, by outcome (hit or miss).",
            tag_keys=("variant", "status"),
        )

    def label_cache_lookup(self, variant: str, status: str, count: int) -> None:
        self.label_cache_lookups.inc(count, tags={"variant": variant, "status": status})


_metrics: ReplicaMetrics | None = None


def replica_metrics() -> ReplicaMetrics:
    global _metrics
    if _metrics is None:
        _metrics = ReplicaMetrics()
    return _metrics
