"""/v1/classify on real Ray Serve: probabilities equal transformers' CLIPModel on the same
weights, prompt ensembles equal a direct computation, and the label cache saves the text
tower's work (observed in the encoder's own counters and the router's cache; the
Prometheus metric is checked with the others in test_metrics.py)."""

from __future__ import annotations

import concurrent.futures
import itertools

import numpy as np
import pytest
from support.helpers import HUB_ID, b64, encode, natural_image

IMAGES = [encode(natural_image(70, 50, seed=30 + i)) for i in range(3)]
LABELS = ["a cat", "a dog", "a diagram of a network", "the moon"]
_fresh = itertools.count()


def fresh_labels(n: int) -> list[str]:
    """Labels no other test used, so this test's cache misses are its own."""
    k = next(_fresh)
    return [f"label {k} number {i}" for i in range(n)]


def classify(client, **body) -> dict:
    r = client.post("/v1/classify", json={"model": HUB_ID, **body})
    assert r.status_code == 200, r.text
    return r.json()


def distribution(item: dict, labels: list[str], field: str = "score") -> np.ndarray:
    by_label = {p["label"]: p[field] for p in item["predictions"]}
    return np.array([by_label[label] for label in labels])


@pytest.fixture(scope="module")
def router():
    from ray import serve

    return serve.get_deployment_handle("Router", app_name="clip")


@pytest.fixture(scope="module")
def text_encoder():
    from ray import serve

    return serve.get_deployment_handle("TextEncoder:openai--clip-vit-base-patch32", app_name="clip")


def test_probabilities_equal_transformers(client, reference):
    template = "a photo of {}."
    out = classify(client, input=[{"image": b64(d)} for d in IMAGES], labels=LABELS, hypothesis_template=template)
    expected = reference.zero_shot(IMAGES, [template.replace("{}", label) for label in LABELS])
    assert [d["index"] for d in out["data"]] == [0, 1, 2]
    for item, row in zip(out["data"], expected):
        assert np.abs(distribution(item, LABELS) - row).max() <= 1e-5
        assert [p["label"] for p in item["predictions"]] == LABELS  # full distribution, request order
        assert item["prediction"] == LABELS[int(row.argmax())] and abs(item["score"] - row.max()) <= 1e-5
        assert item["object"] == "classification"
    assert abs(out["logit_scale"] - reference.logit_scale) <= 1e-4
    assert out["model"] == HUB_ID and out["usage"]["images"] == 3


def test_cosines_are_raw_similarities(client, reference):
    out = classify(client, input=[{"image": b64(IMAGES[0])}], labels=LABELS)  # no template: labels as is
    image = reference.image(IMAGES[0])
    expected = reference.texts(LABELS) @ image
    assert np.abs(distribution(out["data"][0], LABELS, "cosine") - expected).max() <= 1e-5
    assert np.abs(distribution(out["data"][0], LABELS) - reference.zero_shot(IMAGES[:1], LABELS)[0]).max() <= 1e-5


def test_prompt_ensemble_equals_direct_computation(client, reference):
    templates = ["a photo of {}.", "a blurry photo of {}.", "art of {}", "{}"]
    out = classify(client, input=[{"image": b64(d)} for d in IMAGES[:2]], labels=LABELS, templates=templates)
    torch = reference.torch
    class_vectors = []
    for label in LABELS:
        prompts = torch.from_numpy(reference.texts([t.replace("{}", label) for t in templates]))
        mean = prompts.mean(0)
        class_vectors.append(mean / mean.norm())
    classes = torch.stack(class_vectors)
    for item, data in zip(out["data"], IMAGES[:2]):
        image = torch.from_numpy(reference.image(data))
        expected = (reference.logit_scale * classes @ image).softmax(-1).numpy()
        assert np.abs(distribution(item, LABELS) - expected).max() <= 1e-5
    assert out["usage"]["prompts"] == 16


def test_texts_classify_against_labels_and_top_k(client, reference):
    texts = ["a small kitten", "a network topology"]
    out = classify(client, input=texts, labels=LABELS, top_k=2)
    probs = (reference.logit_scale * reference.texts(texts) @ reference.texts(LABELS).T)
    probs = np.exp(probs - probs.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for item, row in zip(out["data"], probs):
        best_two = [LABELS[j] for j in np.argsort(-row)[:2]]
        assert [p["label"] for p in item["predictions"]] == best_two
        assert np.abs([p["score"] for p in item["predictions"]] - np.sort(row)[::-1][:2]).max() <= 1e-5
    assert len(classify(client, input="x", labels=LABELS, top_k=99)["data"][0]["predictions"]) == 4


def test_repeated_labels_cost_no_text_tower_work(client, router, text_encoder):
    labels = fresh_labels(10)
    body = {"input": [{"image": b64(IMAGES[0])}], "labels": labels, "hypothesis_template": "a photo of {}"}
    first = classify(client, **body)
    stats_before, text_before = router.label_cache_stats.remote().result(), text_encoder.stats.remote().result()
    second = classify(client, **body)
    stats_after, text_after = router.label_cache_stats.remote().result(), text_encoder.stats.remote().result()
    assert first["usage"]["cached_prompts"] == 0 and first["usage"]["prompt_tokens"] > 0
    assert second["usage"]["cached_prompts"] == 10 and second["usage"]["prompt_tokens"] == 0
    assert text_after["items"] == text_before["items"]  # the text tower did nothing
    assert stats_after["hits"] - stats_before["hits"] == 10 and stats_after["misses"] == stats_before["misses"]
    assert np.abs(distribution(first["data"][0], labels) - distribution(second["data"][0], labels)).max() <= 1e-6


def test_concurrent_identical_misses_encode_once(client, router, text_encoder):
    labels = fresh_labels(6)
    bodies = [{"model": HUB_ID, "input": [{"image": b64(d)}], "labels": labels} for d in IMAGES * 3]
    text_before, stats_before = text_encoder.stats.remote().result(), router.label_cache_stats.remote().result()
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: client.post("/v1/classify", json=b), bodies))
    assert all(r.status_code == 200 for r in responses)
    text_after, stats_after = text_encoder.stats.remote().result(), router.label_cache_stats.remote().result()
    assert text_after["items"] - text_before["items"] == 6  # each prompt embedded once for 9 requests
    assert stats_after["encoded"] - stats_before["encoded"] == 6
    # Same image, same labels: same answer (up to the float noise of different image batches).
    firsts = [distribution(r.json()["data"][0], labels, "cosine") for r in responses[:3]]
    for r, expected in zip(responses, itertools.cycle(firsts)):
        assert np.abs(distribution(r.json()["data"][0], labels, "cosine") - expected).max() <= 1e-6



def test_more_labels_than_items_per_request(client, reference):
    """Label prompts are embedded in chunks under `max_items_per_request` (64 in the test app)."""
    labels = fresh_labels(70)
    out = classify(client, input=[{"image": b64(IMAGES[1])}], labels=labels)
    expected = reference.zero_shot(IMAGES[1:2], labels)[0]
    assert np.abs(distribution(out["data"][0], labels) - expected).max() <= 1e-5
    assert out["usage"]["prompts"] == 70 and out["usage"]["cached_prompts"] == 0


def test_the_largest_prompt_set_succeeds_on_an_idle_server(client):
    """200 labels x 100 templates: the documented maximum of prompts (limits.max_prompts) fits
    through the router's queue bound (router.max_pending_items) and is answered."""
    labels = [f"thing number {i}" for i in range(200)]
    templates = [f"template {j}: a photo of a {{}}." for j in range(100)]
    r = client.post("/v1/classify", json={"model": HUB_ID, "input": ["a cat"], "labels": labels, "templates": templates})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompts"] == 20_000 and len(r.json()["data"][0]["predictions"]) == 200
