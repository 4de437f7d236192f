"""New weights invalidate cached label embeddings, for real: a second app serves a local
folder; its weights are rewritten and only the encoders are redeployed (the router and its
cache live on). The router learns the new fingerprint from the encoders' answers and
never serves a label embedding of the old weights again."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from support.cluster import app_args
from support.helpers import Reference, b64, bpe_path, encode, natural_image

from deployments.launch import app_config, deploy

APP, PREFIX, VARIANT = "swap", "/swap", "local/swap"
ENCODERS = ("ImageEncoder:local--swap", "TextEncoder:local--swap")
IMAGE = encode(natural_image(50, 40, seed=80))
LABELS = ["a cat", "a dog", "a bird"]


def write_weights(folder: Path, seed: int, logit_scale: float) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel

    from deployments.checkpoint_builder import clip_config_dict, save_clip_checkpoint

    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(**clip_config_dict())).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(logit_scale))
    return save_clip_checkpoint(model, folder, bpe_path=bpe_path())


def swap_app(folder: Path, encoder_cpus: float) -> dict:
    small = {"ray_actor_options": {"num_cpus": 0.25}}
    args = {
        "variants": [{"id": VARIANT, "source": str(folder), "dtype": "float32", "cpu_threads": 1,
                      "image_deployment": small, "text_deployment": small}],
        "router": {"deployment": small},
    }
    # Tuning overrides only touch the encoders: changing them restarts encoder replicas
    # (which load the folder's current weights) and leaves the router running.
    tuning = [{"name": name, "ray_actor_options": {"num_cpus": encoder_cpus}} for name in ENCODERS]
    return {**app_config(args, tuning), "name": APP, "route_prefix": PREFIX}


@pytest.fixture(scope="module")
def apply(server_port, wide_model_dir):
    session_app = app_config(app_args(wide_model_dir))  # unchanged: the session app keeps running

    def apply_swap(app: dict) -> None:
        deploy([session_app, app], "127.0.0.1", server_port)

    yield apply_swap
    deploy([session_app], "127.0.0.1", server_port)  # removes the swap app


def classify(client) -> dict:
    r = client.post(f"{PREFIX}/v1/classify", json={"model": VARIANT, "input": [{"image": b64(IMAGE)}],
                                                  "labels": LABELS, "hypothesis_template": "a photo of {}"})
    assert r.status_code == 200, r.text
    return r.json()


def probabilities(out: dict) -> np.ndarray:
    return np.array([p["score"] for p in out["data"][0]["predictions"]])


def test_new_weights_invalidate_cached_labels(client, apply, tmp_path):
    from ray import serve

    folder = write_weights(tmp_path / "swap", seed=11, logit_scale=20.0)
    prompts = [f"a photo of {label}" for label in LABELS]
    old_expected = Reference(folder).zero_shot([IMAGE], prompts)[0]
    apply(swap_app(folder, encoder_cpus=0.25))
    router = serve.get_deployment_handle("Router", app_name=APP)

    first, second = classify(client), classify(client)
    assert np.abs(probabilities(first) - old_expected).max() <= 1e-5
    assert second["usage"]["cached_prompts"] == 3 and second["logit_scale"] == pytest.approx(20.0, rel=1e-6)
    before = router.label_cache_stats.remote().result()

    write_weights(folder, seed=12, logit_scale=40.0)  # same folder, new weights
    new_expected = Reference(folder).zero_shot([IMAGE], prompts)[0]
    assert np.abs(new_expected - old_expected).max() > 1e-3  # the swap is visible in the answer
    apply(swap_app(folder, encoder_cpus=0.3))  # encoders restart on the new files

    during = router.label_cache_stats.remote().result()
    assert during["entries"] == before["entries"] >= 3  # same router replica, cache still full
    assert during["fingerprints"] == before["fingerprints"]  # it has not heard of the change yet
    after_swap = classify(client)
    assert np.abs(probabilities(after_swap) - new_expected).max() <= 1e-5
    assert after_swap["usage"]["cached_prompts"] == 0 and after_swap["usage"]["prompt_tokens"] > 0
    assert after_swap["logit_scale"] == pytest.approx(40.0, rel=1e-6)
    after = router.label_cache_stats.remote().result()
    assert after["fingerprints"][VARIANT] != before["fingerprints"][VARIANT]
    assert classify(client)["usage"]["cached_prompts"] == 3  # cached again, under the new weights
