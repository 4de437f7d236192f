"""The clip_* metrics as Prometheus scrapes them from the session cluster's real metrics
endpoint (Ray's metrics agent, `_metrics_export_port`), after real traffic."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest
from support.helpers import data_uri, encode, natural_image
from prometheus_client.parser import text_string_to_metric_families

IMAGE_ENCODER = "ImageEncoder:openai--clip-vit-base-patch32"
VARIANT = "openai/clip-vit-base-patch32"
# Labels Ray and Serve attach themselves; everything else on a clip_* series must be ours.
RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "JobId", "application",
              "deployment", "replica", "le", "otel_scope_name", "otel_scope_schema_url", "otel_scope_version"}
OUR_LABELS = {"variant", "tower", "stage", "status", "endpoint"}
EXPORT_WAIT_S = 45  # generous: the session cluster reports every 2 s (tests/support/cluster.py)


def scrape(port: int) -> dict[str, list]:
    """Samples by name, e.g. {'ray_clip_requests_total': [Sample, ...]}."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def find(samples: dict[str, list], name: str, **labels: str) -> list:
    return [s for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]


def total(samples: dict[str, list], name: str, **labels: str) -> float:
    return sum(s.value for s in find(samples, name, **labels))


def drive_traffic(client, server) -> int:
    """Texts, images, a mixed list, a model card, errors; returns the model-card GETs made."""
    img = data_uri(encode(natural_image(64, 48, seed=3)))
    for body in (
        {"model": VARIANT, "input": ["a photo of a cat", "a diagram"]},
        {"model": VARIANT, "input": [{"image": img}, {"image": img}]},
        {"model": "clip-b32", "input": ["a dog", {"image": img}]},
    ):
        assert client.post("/v1/embeddings", json=body).status_code == 200
    classify = {"model": VARIANT, "input": [{"image": img}], "labels": ["a metrics cat", "a metrics dog"]}
    for _ in range(2):  # label prompts miss the router's label cache, then hit it
        assert client.post("/v1/classify", json=classify).status_code == 200
    assert client.post("/v1/embeddings", json={"model": "no-such-model", "input": "x"}).status_code == 404
    assert client.post("/v1/embeddings", json={"model": VARIANT, "input": []}).status_code == 400
    assert client.get("/no/such/route/123").status_code == 404
    cards = 3
    for _ in range(cards):
        assert client.get(f"/v1/models/{VARIANT}").status_code == 200
    return cards


def break_one_forward() -> None:
    """A call the image encoder's forward rejects (wrong image size), through its handle."""
    from ray import serve

    encoder = serve.get_deployment_handle(IMAGE_ENCODER, app_name="clip")

    async def call():
        return await asyncio.gather(encoder.embed.remote(np.zeros((1, 7, 7, 3), np.uint8)), return_exceptions=True)

    assert isinstance(asyncio.run(call())[0], Exception)


@pytest.fixture(scope="module")
def exported(server, client, metrics_port):
    before = scrape(metrics_port)
    card_route = {"endpoint": "/v1/models/{model:path}", "status": "200", "application": "clip"}
    cards_before = total(before, "ray_clip_requests_total", **card_route)
    cards = drive_traffic(client, server)
    break_one_forward()
    deadline = time.monotonic() + EXPORT_WAIT_S
    while True:  # until everything we did is exported
        samples = scrape(metrics_port)
        done = (
            total(samples, "ray_clip_requests_total", **card_route) >= cards_before + cards
            and find(samples, "ray_clip_errors_total", stage="forward")
            and find(samples, "ray_clip_stage_duration_seconds_count", stage="forward", tower="text")
            and find(samples, "ray_clip_queue_wait_seconds_count", stage="batch", tower="text")
            and find(samples, "ray_clip_cache_lookups_total", stage="label", status="hit")
        )
        if done or time.monotonic() > deadline:
            return samples
        time.sleep(0.5)


def test_label_cache_lookups_by_status(exported):
    lookups = {"variant": VARIANT, "tower": "text", "stage": "label", "deployment": "Router"}
    assert total(exported, "ray_clip_cache_lookups_total", status="miss", **lookups) >= 2
    assert total(exported, "ray_clip_cache_lookups_total", status="hit", **lookups) >= 2


def test_router_http_metrics_by_route_template_and_status(exported):
    router = {"application": "clip", "deployment": "Router"}
    assert total(exported, "ray_clip_requests_total", endpoint="/v1/embeddings", status="200", **router) >= 3
    assert total(exported, "ray_clip_requests_total", endpoint="/v1/embeddings", status="404", **router) >= 1
    assert total(exported, "ray_clip_requests_total", endpoint="/v1/embeddings", status="400", **router) >= 1
    assert total(exported, "ray_clip_requests_total", endpoint="/v1/models/{model:path}", status="200") >= 3
    # unmatched paths share one label value: the raw path never becomes a label
    assert total(exported, "ray_clip_requests_total", endpoint="unmatched", status="404") >= 1
    endpoints = {s.labels["endpoint"] for s in exported["ray_clip_requests_total"]}
    assert not any("123" in e or VARIANT in e for e in endpoints), endpoints
    latency = find(exported, "ray_clip_request_duration_seconds_count", endpoint="/v1/embeddings", status="200")
    assert latency and sum(s.value for s in latency) >= 3
    buckets = find(exported, "ray_clip_request_duration_seconds_bucket", endpoint="/v1/embeddings", status="200")
    assert {s.labels["le"] for s in buckets} >= {"0.01", "0.1", "1.0", "+Inf"}
    assert total(exported, "ray_clip_errors_total", stage="http", status="model_not_found") >= 1
    assert total(exported, "ray_clip_errors_total", stage="http", status="not_found") >= 1


def test_pipeline_metrics_per_variant_tower_and_stage(exported):
    v = {"variant": VARIANT}
    # Ray reports a histogram's _sum from bucket midpoints, so check buckets, not sums:
    # three of our requests carried 2 items each.
    assert find(exported, "ray_clip_request_items_bucket", le="2.0", **v)[0].value >= 3
    for tower in ("image", "text"):
        t = {**v, "tower": tower}
        assert total(exported, "ray_clip_coalesced_call_items_count", deployment="Router", **t) >= 1
        deployment = f"{'ImageEncoder' if tower == 'image' else 'TextEncoder'}:openai--clip-vit-base-patch32"
        assert total(exported, "ray_clip_encoder_batch_items_count", deployment=deployment, **t) >= 1
        assert total(exported, "ray_clip_encoded_items_total", deployment=deployment, **t) >= 2
        assert total(exported, "ray_clip_stage_duration_seconds_count", stage="forward", deployment=deployment, **t) >= 1
        assert total(exported, "ray_clip_stage_duration_seconds_count", stage="encode", deployment="Router", **t) >= 1
        assert total(exported, "ray_clip_queue_wait_seconds_count", stage="coalesce", **t) >= 1
        assert total(exported, "ray_clip_queue_wait_seconds_count", stage="batch", deployment=deployment, **t) >= 1
    assert total(exported, "ray_clip_stage_duration_seconds_count", stage="decode", tower="image", **v) >= 3
    assert total(exported, "ray_clip_stage_duration_seconds_count", stage="tokenize", tower="text", **v) >= 2
    # the 64x48 test image: 3072 pixels, a few kB of PNG
    assert total(exported, "ray_clip_image_pixels_count", **v) >= 3
    assert find(exported, "ray_clip_image_pixels_bucket", le="10000.0", **v)[0].value >= 3
    assert find(exported, "ray_clip_image_bytes_bucket", le="30000.0", **v)[0].value >= 3
    assert total(exported, "ray_clip_errors_total", stage="forward", tower="image", deployment=IMAGE_ENCODER) >= 1


def test_only_bounded_labels(exported):
    clip = {name: samples for name, samples in exported.items() if name.startswith("ray_clip_")}
    assert len({n.rsplit("_", 1)[0] if n.endswith(("_bucket", "_count", "_sum")) else n for n in clip}) >= 10
    for name, samples in clip.items():
        for s in samples:
            extra = set(s.labels) - RAY_LABELS - OUR_LABELS
            assert not extra, f"{name} has unexpected labels {extra}"
    # no series without Serve's deployment label: every metric was created inside a replica
    assert all("deployment" in s.labels for samples in clip.values() for s in samples)


def test_dashboard_queries_only_exported_metrics(exported):
    """Every series the Grafana dashboard queries is one the cluster really exports."""
    import json
    import re

    from support.helpers import REPO

    board = json.loads((REPO / "k8s" / "grafana-dashboard.json").read_text())
    queried = {name for panel in board["panels"] for target in panel["targets"]
               for name in re.findall(r"\bray_[a-z_]+", target["expr"])}
    assert queried <= set(exported), sorted(queried - set(exported))
    assert len(queried) >= 12
