"""Prometheus metrics of router and encoder replicas, through `ray.serve.metrics`.

Ray exports them on every node's metrics port with a `ray_` prefix (`clip_requests_total`
is scraped as `ray_clip_requests_total`) and adds `deployment`, `replica` and `application`
labels itself. Our own labels are limited to variant, tower, stage and status (plus the
route template as `endpoint` on HTTP metrics), so cardinality stays bounded: never ids,
URLs, raw paths or users. Units are base units: seconds, bytes, pixels, items.
"""

from __future__ import annotations

import re

from ray.serve.metrics import Counter, Histogram

from ..engine.batching import BatchHooks
from ..engine.tower import TowerHooks

LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
ITEM_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
BYTE_BUCKETS = [1e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7]
PIXEL_BUCKETS = [1e4, 5e4, 1e5, 3e5, 1e6, 3e6, 1e7, 4e7, 1e8]

HTTP_TAGS = ("endpoint", "status")
TOWER_TAGS = ("variant", "tower")
STAGE_TAGS = ("variant", "tower", "stage")


class ClipMetrics:
    """Every clip metric, one per attribute; one instance per replica process (`metrics()`)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "clip_requests_total", description="HTTP requests answered, by route template and status code.",
            tag_keys=HTTP_TAGS,
        )
        self.request_seconds = Histogram(
            "clip_request_duration_seconds", description="HTTP request latency inside the router, by route and status.",
            boundaries=LATENCY_BUCKETS_S, tag_keys=HTTP_TAGS,
        )
        self.request_items = Histogram(
            "clip_request_items", description="Inputs per request (texts and images).",
            boundaries=ITEM_BUCKETS, tag_keys=("variant",),
        )
        self.call_items = Histogram(
            "clip_coalesced_call_items", description="Items per router->encoder call after coalescing.",
            boundaries=ITEM_BUCKETS, tag_keys=TOWER_TAGS,
        )
        self.batch_items = Histogram(
            "clip_encoder_batch_items", description="Items per encoder forward pass (device batch size).",
            boundaries=ITEM_BUCKETS, tag_keys=TOWER_TAGS,
        )
        self.encoded_items = Counter(
            "clip_encoded_items_total", description="Images or texts embedded (forward passes' items).",
            tag_keys=TOWER_TAGS,
        )
        # Observed once per group of items that arrived together (a request's items in a router
        # call, a call in an encoder batch), not per item: a 2048-item request costs 64 records.
        self.queue_wait_seconds = Histogram(
            "clip_queue_wait_seconds",
            description="Time items wait before work starts: stage=coalesce in the router (per request "
            "and call), stage=batch in the encoder (per call: batch forming plus the forward queue).",
            boundaries=LATENCY_BUCKETS_S, tag_keys=STAGE_TAGS,
        )
        self.stage_seconds = Histogram(
            "clip_stage_duration_seconds",
            description="Duration of one pipeline stage: decode (per image), tokenize (per request), "
            "encode (router->encoder call), forward (per device batch).",
            boundaries=LATENCY_BUCKETS_S, tag_keys=STAGE_TAGS,
        )
        self.cache_lookups = Counter(
            "clip_cache_lookups_total", description="Embedding cache lookups by stage (which cache) and status=hit|miss.",
            tag_keys=STAGE_TAGS + ("status",),
        )
        self.image_bytes = Histogram(
            "clip_image_bytes", description="Encoded size of each input image.",
            boundaries=BYTE_BUCKETS, tag_keys=("variant",),
        )
        self.image_pixels = Histogram(
            "clip_image_pixels", description="Pixels (width*height) of each input image as sent, before any resize.",
            boundaries=PIXEL_BUCKETS, tag_keys=("variant",),
        )
        self.errors = Counter(
            "clip_errors_total",
            description="Errors by where they happened (stage: http, encode, forward) and their kind (status).",
            tag_keys=STAGE_TAGS + ("status",),
        )


_metrics: ClipMetrics | None = None


def metrics() -> ClipMetrics:
    """This process's metrics, created on first use: inside a replica, so Serve's
    deployment/replica labels attach."""
    global _metrics
    if _metrics is None:
        _metrics = ClipMetrics()
    return _metrics


_CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def error_status(code: object) -> str:
    """An API error code as a label value; our codes are a fixed vocabulary, anything else is `other`."""
    return code if isinstance(code, str) and _CODE.match(code) else "other"


def exception_status(exc: BaseException) -> str:
    """An exception as one of a few kinds, never its message."""
    name = type(exc).__name__
    if "OutOfMemory" in name:
        return "out_of_memory"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (ValueError, TypeError, IndexError, KeyError)):
        return "invalid_input"
    if isinstance(exc, RuntimeError):
        return "runtime_error"
    return "other"


def _stage(tags: dict[str, str], stage: str) -> dict[str, str]:
    return {**tags, "stage": stage}


def router_call_hooks(tags: dict[str, str]) -> BatchHooks:
    """A router's call coalescer for one (variant, tower): items per encoder call, their
    wait (stage `coalesce`) and the router->encoder round trip (stage `encode`)."""
    wait, call = _stage(tags, "coalesce"), _stage(tags, "encode")
    return BatchHooks(
        size=lambda n: metrics().call_items.observe(n, tags=tags),
        wait=lambda s: metrics().queue_wait_seconds.observe(s, tags=wait),
        duration=lambda s: metrics().stage_seconds.observe(s, tags=call),
    )


def encoder_tower_hooks(tags: dict[str, str]) -> TowerHooks:
    """An encoder replica's tower: device batch sizes, their wait (stage `batch`), the
    forward (stage `forward`), items embedded and forward failures."""
    wait, forward = _stage(tags, "batch"), _stage(tags, "forward")
    return TowerHooks(
        batch=BatchHooks(
            size=lambda n: metrics().batch_items.observe(n, tags=tags),
            wait=lambda s: metrics().queue_wait_seconds.observe(s, tags=wait),
            duration=lambda s: metrics().stage_seconds.observe(s, tags=forward),
        ),
        encoded=lambda n: metrics().encoded_items.inc(n, tags=tags),
        failed=lambda exc: metrics().errors.inc(tags={**forward, "status": exception_status(exc)}),
    )
