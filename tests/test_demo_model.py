"""The embedded demo model, trained once per session on synthetic shapes, served through
the real API: zero-shot classification of held-out generated images must reach 90% top-1."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from conftest import extra_app
from helpers import b64, encode, wait_ready

from deployments.demo import DEMO_HELD_OUT_SEED, DEMO_ID, demo_args
from deployments.jobs.synthetic import class_labels, make_sample, zero_shot_top1

HELD_OUT_IMAGES = 300


@pytest.fixture(scope="module")
def demo_server(server_port, wide_model_dir, demo_model_dir):
    with extra_app(server_port, wide_model_dir, "demo", "/demo", demo_args(demo_model_dir)) as base:
        wait_ready(base)
        with httpx.Client(base_url=base, timeout=120) as client:
            yield client


def api_embed(client: httpx.Client, inputs: list) -> np.ndarray:
    r = client.post("/v1/embeddings", json={"model": DEMO_ID, "input": inputs, "encoding_format": "float"})
    assert r.status_code == 200, r.text
    return np.asarray([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def test_demo_card_records_training_and_held_out_accuracy(demo_model_dir):
    card = json.loads((demo_model_dir / "demo_card.json").read_text())
    assert card["history"][-1]["step"] == card["training"]["epochs"] * card["training"]["steps_per_epoch"]
    losses = [h["train_loss"] for h in card["history"]]
    assert losses[-1] < losses[0]
    for measured in card["zero_shot"].values():
        assert measured["seed"] == DEMO_HELD_OUT_SEED and measured["classes"] == len(class_labels()) == 30
        assert measured["top1"] >= 0.9, measured


def test_zero_shot_classification_through_the_api_on_held_out_images(demo_server):
    """Held-out images (a seed never used in training) against every class label.

    INTEGRATOR: when /v1/classify (issue 3) is merged, also send these images there with
    `labels = class_labels()` and assert the same >= 90% on `data[i].prediction`; here the
    ranking classify uses (argmax cosine of image and label embeddings) is computed from
    /v1/embeddings, which classify is built on.
    """

    def embed_images(images):
        return api_embed(demo_server, [{"image": b64(encode(img))} for img in images])

    def embed_texts(texts):
        return api_embed(demo_server, texts)

    result = zero_shot_top1(embed_images, embed_texts, DEMO_HELD_OUT_SEED, HELD_OUT_IMAGES, chunk=50)
    print(f"demo zero-shot top-1 through the API: {result}")
    assert result["top1"] >= 0.9, result


def test_the_readme_example_image_is_classified_right(demo_server):
    """`python -m deployments sample-image red circle` at 128 px, as the banner suggests."""
    from deployments.jobs.synthetic import render_shape

    labels = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
    text = api_embed(demo_server, labels)
    for colour, shape in [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "star")]:
        img = render_shape(np.random.default_rng(0), colour, shape, "white", "large", 128)
        (vec,) = api_embed(demo_server, [{"image": b64(encode(img))}])
        assert labels[int(np.argmax(text @ vec))] == f"a {colour} {shape}"


def test_generated_samples_are_deterministic_and_labelled():
    a, b = make_sample(3, 17), make_sample(3, 17)
    assert a.caption == b.caption and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.label in class_labels() and a.colour in a.caption and a.shape in a.caption
    assert make_sample(4, 17).caption != a.caption or not np.array_equal(np.asarray(make_sample(4, 17).image), np.asarray(a.image))
