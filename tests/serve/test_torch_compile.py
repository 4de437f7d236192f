"""`torch_compile: true`: inductor-compiled forwards against transformers' CLIPModel on the
same weights, every serving shape covered by the graphs compiled at load, and the option
end to end through the API."""

from __future__ import annotations

import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from support.cluster import extra_app
from support.helpers import b64, cosine, encode, natural_image, wait_ready

from deployments.backends.checkpoint import Checkpoint
from deployments.backends.torch_backend import TorchBackend
from deployments.backends.torch_compile import CompileError, cpu_compiler_available
from deployments.checkpoint_builder import build_clip_checkpoint
from deployments.config import VariantConfig
from deployments.preprocess.images import ImageLimits, prepare_image
from deployments.engine.payloads import pack_tokens

# Inductor turns graphs into C++ on CPU; without a compiler the option fails at load, which
# test_a_failed_compile_says_how_to_serve_without_it checks on any machine.
needs_cxx = pytest.mark.skipif(not cpu_compiler_available(),
                               reason="no C++ compiler for inductor on this machine")

TEXTS = ["a photo of a cat", "a diagram", "two dogs playing in the snow at night", "an extremely long caption " * 20]


@pytest.fixture(scope="module")
def eager(model_dir):
    ckpt = Checkpoint.open(str(model_dir))
    return {t: TorchBackend.load(ckpt, t, device="cpu", dtype="float32") for t in ("image", "text")}


@pytest.fixture(scope="module")
def compiled(model_dir, reference, eager):
    """Compiled after every model class of this module is loaded: the graphs are guarded on
    transformers' process-wide registry of model classes (an encoder replica loads one)."""
    ckpt = Checkpoint.open(str(model_dir))
    return {t: TorchBackend.load(ckpt, t, device="cpu", dtype="float32", threads=1, torch_compile=True)
            for t in ("image", "text")}


def tokens(model_dir, texts):
    from support.helpers import make_tokenizer

    return pack_tokens([e.ids for e in make_tokenizer(model_dir).encode(texts, truncate=True)])


def pixels(model_dir, n: int) -> np.ndarray:
    spec = Checkpoint.open(str(model_dir)).image_spec()
    return np.stack([prepare_image(encode(natural_image(64, 48, seed=s), "JPEG"), spec, ImageLimits())
                     for s in range(n)])


@needs_cxx
def test_compiled_towers_match_the_reference(compiled, reference, model_dir):
    spec = Checkpoint.open(str(model_dir)).image_spec()
    datas = [encode(natural_image(97, 61, seed=s), "JPEG") for s in range(3)]
    batch = np.stack([prepare_image(d, spec, ImageLimits()) for d in datas])
    assert compiled["image"].info().extra["compiled"] is True
    for rows in (compiled["image"].embed_images(batch), compiled["image"].embed_images(batch[:1])):
        for row, data in zip(rows, datas):
            assert cosine(row, reference.image(data)) >= 0.9999
    for texts in (TEXTS, TEXTS[2:3]):
        batch = tokens(model_dir, texts)
        assert (cosine(compiled["text"].embed_texts(batch.ids, batch.lengths), reference.texts(texts)) >= 0.9999).all()


@needs_cxx
def test_no_serving_shape_compiles_after_load(compiled, model_dir):
    """Any batch size and text length runs a graph compiled at load, given as the replica
    gives it (arrays from Ray, inference mode, on a forward thread): under this stance a
    needed compile raises."""
    image = pixels(model_dir, 9)
    ids = tokens(model_dir, ["word " * 80]).ids

    def every_shape() -> None:
        with torch.inference_mode(), torch.compiler.set_stance("fail_on_recompile"):
            for n in range(1, 10):
                compiled["image"].compiled(torch.from_numpy(image[:n]))
            for length in (2, 3, 5, 17, 76, 77):
                for n in (1, 3):
                    batch = np.ascontiguousarray(np.repeat(ids[:, :length], n, 0))
                    compiled["text"].compiled(torch.from_numpy(batch))

    with ThreadPoolExecutor(1) as forward_thread:
        forward_thread.submit(every_shape).result()


def python_model_calls(fn) -> int:
    """How many times `fn` enters transformers' CLIP module code in Python, on a forward thread."""
    def run() -> int:
        calls = 0

        def profile(frame, event, arg):
            nonlocal calls
            if event == "call" and frame.f_code.co_filename.endswith("modeling_clip.py"):
                calls += 1

        sys.setprofile(profile)
        try:
            fn()
        finally:
            sys.setprofile(None)
        return calls

    with ThreadPoolExecutor(1) as forward_thread:
        return forward_thread.submit(run).result()


@needs_cxx
def test_requests_run_the_compiled_graphs_not_the_python_model(compiled, eager, model_dir):
    """The serving path (run-only mode) uses the graphs: CLIP's Python code never runs."""
    images, batch = pixels(model_dir, 5), tokens(model_dir, TEXTS)
    assert python_model_calls(lambda: eager["image"].embed_images(images)) > 0  # the probe sees eager code
    for n in (1, 5):
        assert python_model_calls(lambda: compiled["image"].embed_images(images[:n])) == 0
    assert python_model_calls(lambda: compiled["text"].embed_texts(batch.ids, batch.lengths)) == 0


@needs_cxx
def test_bf16_compiled_stays_close_to_fp32_eager(model_dir, compiled, eager):
    ckpt = Checkpoint.open(str(model_dir))
    bf16 = {t: TorchBackend.load(ckpt, t, device="cpu", dtype="bfloat16", threads=1, torch_compile=True)
            for t in ("image", "text")}
    images = pixels(model_dir, 6)
    assert cosine(bf16["image"].embed_images(images), eager["image"].embed_images(images)).min() >= 0.999
    batch = tokens(model_dir, TEXTS)
    assert cosine(bf16["text"].embed_texts(batch.ids, batch.lengths),
                  eager["text"].embed_texts(batch.ids, batch.lengths)).min() >= 0.999


@needs_cxx
def test_two_checkpoints_compiled_in_one_process_keep_their_own_weights(compiled, model_dir, tmp_path):
    """Same shapes, different weights: each instance runs its own graphs on its own weights."""
    other = build_clip_checkpoint(tmp_path / "other", seed=7)
    ckpt = Checkpoint.open(str(other))
    theirs = TorchBackend.load(ckpt, "image", device="cpu", dtype="float32", threads=1, torch_compile=True)
    their_eager = TorchBackend.load(ckpt, "image", device="cpu", dtype="float32")
    images = pixels(model_dir, 4)
    ours = compiled["image"].embed_images(images)
    np.testing.assert_allclose(theirs.embed_images(images), their_eager.embed_images(images), atol=1e-5)
    assert cosine(theirs.embed_images(images), ours).max() < 0.99
    np.testing.assert_allclose(compiled["image"].embed_images(images), ours, atol=1e-6)


def test_a_failed_compile_says_how_to_serve_without_it(model_dir, monkeypatch):
    import torch._inductor.config as inductor

    # No C++ compiler (as in a slim container image); caches off so nothing compiled earlier is reused.
    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/c++",))
    monkeypatch.setattr(inductor, "fx_graph_cache", False)
    monkeypatch.setattr(inductor, "autotune_local_cache", False)
    torch._dynamo.reset()
    with pytest.raises(CompileError, match="set torch_compile: false"):
        TorchBackend.load(Checkpoint.open(str(model_dir)), "image", device="cpu", dtype="float32", threads=1,
                          torch_compile=True)
    torch._dynamo.reset()


def test_torch_compile_is_a_torch_option():
    with pytest.raises(ValueError, match="torch_compile applies to backend 'torch'"):
        VariantConfig.model_validate({"id": "x", "source": "/m", "backend": "onnx", "torch_compile": True})


@needs_cxx
def test_compiled_variant_served_end_to_end(server_port, wide_model_dir, model_dir, reference, tmp_path):
    source = tmp_path / "tiny"
    shutil.copytree(model_dir, source)
    args = {"variants": [{"id": "tiny-compiled", "source": str(source), "dtype": "float32", "cpu_threads": 1,
                          "torch_compile": True,
                          "image_deployment": {"ray_actor_options": {"num_cpus": 0.5}},
                          "text_deployment": {"ray_actor_options": {"num_cpus": 0.5}}}],
            "router": {"deployment": {"ray_actor_options": {"num_cpus": 0.5}}}}
    with extra_app(server_port, wide_model_dir, "compiled", "/compiled", args) as base:
        wait_ready(base, timeout_s=300)
        with httpx.Client(base_url=base, timeout=120) as client:
            model = client.get("/v1/models/tiny-compiled").json()
            assert model["compiled"] is True and model["ready"] is True
            datas = [encode(natural_image(80, 60, seed=s), "JPEG") for s in range(3)]
            r = client.post("/v1/embeddings", json={"model": "tiny-compiled",
                                                    "input": [{"image": b64(d)} for d in datas] + TEXTS[:2]})
            assert r.status_code == 200, r.text
            rows = [d["embedding"] for d in r.json()["data"]]
    for row, data in zip(rows, datas):
        assert cosine(np.array(row), reference.image(data)) >= 0.999
    assert (cosine(np.array(rows[3:]), reference.texts(TEXTS[:2])) >= 0.999).all()
