"""The Grafana dashboard (k8s/grafana-dashboard.json), built on the exported metric names.

Ray's metrics agent prefixes every application metric with `ray_`: clip_requests_total is
scraped as ray_clip_requests_total. Histograms are read through their buckets (quantiles):
Ray computes a histogram's `_sum` from bucket midpoints, so averages from `_sum/_count`
are approximate.
"""

from __future__ import annotations

from typing import Any

APP = 'application="clip"'
WINDOW = "[5m]"


def _quantiles(metric: str, by: str, qs=(0.5, 0.95, 0.99)) -> list[tuple[str, str]]:
    legend = " ".join("{{%s}}" % label for label in by.split(", "))
    return [(f"histogram_quantile({q}, sum by (le, {by}) (rate(ray_{metric}_bucket{{{APP}}}{WINDOW})))",
             f"p{round(q * 100)} {legend}") for q in qs]


# (title, unit, [(PromQL, legend)]) per panel, two panels per row
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Requests per second by endpoint and status", "reqps",
     [(f"sum by (endpoint, status) (rate(ray_clip_requests_total{{{APP}}}{WINDOW}))", "{{endpoint}} {{status}}")]),
    ("Request latency (router)", "s", _quantiles("clip_request_duration_seconds", "endpoint")),
    ("Server error ratio (5xx / all)", "percentunit",
     [(f'sum(rate(ray_clip_requests_total{{{APP},status=~"5.."}}{WINDOW})) / '
       f"sum(rate(ray_clip_requests_total{{{APP}}}{WINDOW}))", "5xx ratio")]),
    ("Errors by stage and kind", "ops",
     [(f"sum by (stage, status) (rate(ray_clip_errors_total{{{APP}}}{WINDOW}))", "{{stage}} {{status}}")]),
    ("Items per request", "short", _quantiles("clip_request_items", "variant", (0.5, 0.95))),
    ("Items per router->encoder call (coalescing)", "short",
     _quantiles("clip_coalesced_call_items", "variant, tower", (0.5, 0.95))),
    ("Encoder batch size (items per forward)", "short",
     _quantiles("clip_encoder_batch_items", "variant, tower", (0.5, 0.95))),
    ("Queue wait p95 (coalesce in router, batch in encoder)", "s",
     _quantiles("clip_queue_wait_seconds", "stage, tower", (0.95,))),
    ("Stage duration p95 (decode, tokenize, encode, forward)", "s",
     _quantiles("clip_stage_duration_seconds", "stage, tower", (0.95,))),
    ("Forward pass p95 by variant", "s",
     [(f"histogram_quantile(0.95, sum by (le, variant, tower) "
       f'(rate(ray_clip_stage_duration_seconds_bucket{{{APP},stage="forward"}}{WINDOW})))',
       "{{variant}} {{tower}}")]),
    ("Image size (bytes as sent)", "bytes", _quantiles("clip_image_bytes", "variant", (0.5, 0.95))),
    ("Image size (pixels as sent)", "short", _quantiles("clip_image_pixels", "variant", (0.5, 0.95))),
    ("Embedding cache hit ratio", "percentunit",
     [(f'sum by (variant, stage) (rate(ray_clip_cache_lookups_total{{{APP},status="hit"}}{WINDOW})) / '
       f"sum by (variant, stage) (rate(ray_clip_cache_lookups_total{{{APP}}}{WINDOW}))", "{{variant}} {{stage}}")]),
    ("Healthy replicas per deployment (autoscaling)", "short",
     [(f"sum by (deployment) (ray_serve_deployment_replica_healthy{{{APP}}})", "{{deployment}}")]),
    ("Requests being processed per deployment", "short",
     [(f"sum by (deployment) (ray_serve_replica_processing_queries{{{APP}}})", "{{deployment}}")]),
    ("Images and texts embedded per second", "ops",
     [(f"sum by (variant, tower) (rate(ray_clip_encoded_items_total{{{APP}}}{WINDOW}))", "{{variant}} {{tower}}")]),
]


def _panel(index: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)],
    }


def dashboard(title: str = "clip-serve") -> dict[str, Any]:
    return {
        "title": title,
        "uid": "clip-serve",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "tags": ["clip-serve", "ray-serve"],
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": [_panel(i, *panel) for i, panel in enumerate(PANELS)],
    }
