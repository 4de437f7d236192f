"""ONNX variants served over HTTP beside the torch ones (same tiny weights): embeddings,
zero-shot decisions and tokenization agree, and ONNX replicas never load torch."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from support.helpers import HUB_ID, b64, cosine, encode, natural_image
from support.onnx_fixtures import L14_336_ID, ONNX_APP, RESNET_ONNX_ID, XENOVA_ID

from deployments.config import VariantConfig

TEXTS = ["a photo of a cat", "A DIAGRAM of a Network!", "word " * 150, "x"]
LABELS = ["a cat", "a dog", "a red car", "a bowl of soup", "a mountain at night"]
IMAGES = [encode(natural_image(80 + 7 * i, 60, seed=40 + i), "JPEG" if i % 2 else "PNG") for i in range(8)]


@pytest.fixture(scope="module")
def onnx_client(onnx_server):
    with httpx.Client(base_url=onnx_server, timeout=60) as c:
        yield c


def embed(client, model, inputs, **extra) -> tuple[np.ndarray, dict]:
    r = client.post("/v1/embeddings", json={"model": model, "input": inputs, **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    return np.stack([np.asarray(d["embedding"], dtype=np.float32) for d in body["data"]]), body["usage"]


def images(data) -> list[dict]:
    return [{"image": b64(d)} for d in data]


@pytest.mark.parametrize("model, bar", [(XENOVA_ID, 0.9999), ("local/tiny-q8", 0.99)])
def test_embeddings_match_the_torch_variant(client, onnx_client, model, bar):
    for inputs in (TEXTS, images(IMAGES[:4])):
        ours, usage = embed(onnx_client, model, inputs)
        theirs, torch_usage = embed(client, HUB_ID, inputs)
        assert cosine(ours, theirs).min() >= bar
        assert usage == torch_usage  # token counts: the same tokenization


@pytest.mark.parametrize("model, tolerance", [(XENOVA_ID, 1e-3), ("local/tiny-q8", 0.1)])
def test_zero_shot_decisions_agree(client, onnx_client, model, tolerance):
    def probabilities(c, name):
        vectors, _ = embed(c, name, [*LABELS, *images(IMAGES)])
        text, image = vectors[: len(LABELS)], vectors[len(LABELS):]
        logits = 100.0 * image @ text.T
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    ours, theirs = probabilities(onnx_client, model), probabilities(client, HUB_ID)
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
    assert np.abs(ours - theirs).max() < tolerance  # int8 error is amplified by the x100 temperature


def test_resnet_export_serves_openai_s_embeddings(onnx_client, resnet_onnx):
    """No torch ResNet variant is served: the reference is OpenAI's code on the same weights."""
    from support.openai_clip import reference_embeddings

    from deployments.backends.checkpoint import Checkpoint
    from deployments.preprocess.images import ImageLimits, prepare_image

    model, source, _ = resnet_onnx
    spec = Checkpoint.open(str(source)).image_spec()  # the source's transform, as OpenAI's code runs it
    ours, _ = embed(onnx_client, RESNET_ONNX_ID, images(IMAGES[:3]))
    pixels = np.stack([prepare_image(data, spec, ImageLimits()) for data in IMAGES[:3]])
    assert cosine(ours, reference_embeddings(model, "image", pixels, spec)).min() >= 0.9999
    models = {m["id"]: m for m in onnx_client.get("/v1/models").json()["data"]}
    assert (models[RESNET_ONNX_ID]["backend"], models[RESNET_ONNX_ID]["architecture"]) == ("onnx", "resnet")


def test_tokenizer_and_preprocessing_are_the_torch_variant_s(onnx_client):
    from ray import serve

    def info(app, deployment):
        return serve.get_deployment_handle(deployment, app_name=app).info.remote().result()

    xenova = VariantConfig(id=XENOVA_ID)
    torch_text = info("clip", "TextEncoder:openai--clip-vit-base-patch32")
    onnx_text = info(ONNX_APP, xenova.deployment_name("text"))
    assert onnx_text["tokenizer"] == torch_text["tokenizer"]
    assert info(ONNX_APP, xenova.deployment_name("image"))["image_spec"] == info(
        "clip", "ImageEncoder:openai--clip-vit-base-patch32")["image_spec"]
    ids = [320, 1125, 539, 320, 2368]  # pre-tokenized "a photo of a cat"
    by_ids, _ = embed(onnx_client, XENOVA_ID, [ids])
    by_text, _ = embed(onnx_client, XENOVA_ID, ["a photo of a cat"])
    assert cosine(by_ids, by_text).min() >= 0.99999


def test_models_list_backend_variant_and_catalogue_defaults(onnx_client):
    models = {m["id"]: m for m in onnx_client.get("/v1/models").json()["data"]}
    xenova = models[XENOVA_ID]
    assert (xenova["backend"], xenova["dtype"], xenova["embedding_dimension"]) == ("onnx", "float32", 16)
    assert xenova["aliases"] == ["xenova-clip-vit-base-patch32"]
    assert (models["local/tiny-q8"]["backend"], models["local/tiny-q8"]["dtype"]) == ("onnx", "q8")
    l14 = models[L14_336_ID]
    assert (l14["backend"], l14["image_size"], l14["embedding_dimension"]) == ("torch", [336, 336], 768)
    assert "ViT-L-14-336" in l14["aliases"]
    # OpenAI's name, '/' and '@' in it, in a URL path through Serve's HTTP ingress: as written and encoded.
    for path in ("ViT-L/14@336px", "ViT-L%2F14%40336px"):
        assert onnx_client.get(f"/v1/models/{path}").json()["id"] == L14_336_ID, path


def test_336_px_variant_preprocesses_to_336(onnx_client, l14_336_dir):
    from support.helpers import Reference

    reference = Reference(l14_336_dir)
    big = encode(natural_image(500, 400, seed=9), "JPEG", quality=92)
    vectors, _ = embed(onnx_client, "ViT-L-14-336", [{"image": b64(big)}, "a photo of a cat"])
    assert reference.processor(images=natural_image(8, 8), return_tensors="np").pixel_values.shape[-2:] == (336, 336)
    assert cosine(vectors[0], reference.image(big)) >= 0.9999
    assert cosine(vectors[1], reference.texts(["a photo of a cat"])[0]) >= 0.9999


def mapped_libraries(deployment: str, app: str) -> str:
    from ray import serve

    pid = serve.get_deployment_handle(deployment, app_name=app).stats.remote().result()["pid"]
    return Path(f"/proc/{pid}/maps").read_text()


def test_onnx_threads_follow_the_replica_allotment(onnx_client):
    from ray import serve

    q8 = VariantConfig(id="local/tiny-q8", backend="onnx")
    info = serve.get_deployment_handle(q8.deployment_name("image"), app_name=ONNX_APP).info.remote().result()
    # num_cpus 0.25 on a 2-core machine: one thread, not one per core.
    assert info["extra"]["threads"] == 1 and info["extra"]["providers"] == ["CPUExecutionProvider"]


def test_onnx_replicas_never_load_torch(onnx_client):
    xenova = VariantConfig(id=XENOVA_ID)
    for tower in ("image", "text"):
        maps = mapped_libraries(xenova.deployment_name(tower), ONNX_APP)
        assert "onnxruntime" in maps and "libtorch" not in maps
    # The check can fail: a torch replica does map libtorch.
    assert "libtorch" in mapped_libraries(VariantConfig(id=L14_336_ID).deployment_name("image"), ONNX_APP)
