"""The CLIP family through the README's launcher (`python -m deployments serve --config`):
a ResNet CLIP in open_clip's hub layout, resolved by hub id from an offline Hugging Face
cache, and a ViT as OpenAI's .pt release archive, served beside each other; every
endpoint's numbers agree with OpenAI's own code on the same weights. A tiny SigLIP is
served in the same launch and scored its own way (sigmoid with its bias, against
transformers' SiglipModel), while the CLIPs stay softmax. This launch uses Serve's Python
proxy as its ingress (`--ingress proxy`; the quick-start test runs the default, HAProxy).
And a full-size RN50."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import yaml
from support.helpers import b64, encode, listening_process, natural_image
from support.openai_clip import (TINY_RESNET, TINY_VIT, reference_embeddings, save_open_clip, save_openai_archive,
                                 tiny_openai_clip)
from support.serve_process import serving

from deployments.backends.checkpoint import Checkpoint
from deployments.backends.torch_backend import TorchBackend
from deployments.checkpoint_builder import install_in_hf_cache
from deployments.preprocess.image_spec import ImageSpec
from deployments.preprocess.images import ImageLimits, prepare_image

RN_ID = "timm/resnet50_clip.openai"  # the catalogue's RN50 by hub id; the files are the tiny model's
TEXTS = ["a photo of a cat", "a red bicycle, leaning on a wall", "x"]
LABELS = ["a cat", "a dog", "a red car", "a bowl of soup"]
IMAGES = [encode(natural_image(w, h, seed=i), "PNG") for i, (w, h) in enumerate([(90, 60), (40, 110), (64, 64)])]


SIGLIP_ID = "tiny-siglip"


@pytest.fixture(scope="module")
def family(tmp_path_factory, siglip_model_dir):
    root = tmp_path_factory.mktemp("family")
    resnet = tiny_openai_clip(TINY_RESNET, seed=5)
    vit = tiny_openai_clip(TINY_VIT, seed=6, fp16_weights=True)
    hf_home = root / "hf"
    install_in_hf_cache(save_open_clip(resnet, TINY_RESNET, root / "rn50"), RN_ID, hf_home / "hub")
    archive = save_openai_archive(vit, root / "clip-cache" / "ViT-B-32.pt")
    small = {"ray_actor_options": {"num_cpus": 0.5}}
    variants = [
        {"id": RN_ID, "dtype": "float32", "cpu_threads": 1,
         "image_deployment": small, "text_deployment": small},
        {"id": "vit-b32-archive", "source": str(archive), "dtype": "float32", "cpu_threads": 1,
         "options": {"allow_pickle_weights": True}, "image_deployment": small, "text_deployment": small},
        {"id": SIGLIP_ID, "source": str(siglip_model_dir), "dtype": "float32", "cpu_threads": 1,
         "image_deployment": small, "text_deployment": small},
    ]
    config = {"applications": [{"name": "clip", "route_prefix": "/", "import_path": "deployments.app:build_app",
                                "args": {"variants": variants, "router": {"deployment": small}}}]}
    (root / "serve_config.yaml").write_text(yaml.safe_dump(config))
    return {"config": root / "serve_config.yaml", "hf_home": hf_home, RN_ID: resnet, "vit-b32-archive": vit,
            SIGLIP_ID: siglip_model_dir}


@pytest.fixture(scope="module")
def base(family):
    with serving(["--config", str(family["config"]), "--ingress", "proxy"],
                 {"HF_HOME": str(family["hf_home"])}) as server:
        server.banner(timeout_s=300)
        assert listening_process(server.port).startswith("ray::ProxyActor")  # `--ingress proxy` answers on the port
        yield server.base


@pytest.fixture(scope="module")
def client(base):
    with httpx.Client(base_url=base, timeout=60) as c:
        yield c


def embed(client, model: str, inputs: list) -> np.ndarray:
    r = client.post("/v1/embeddings", json={"model": model, "input": inputs})
    assert r.status_code == 200, r.text
    return np.asarray([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def reference(family, card: dict, model_id: str) -> tuple[np.ndarray, np.ndarray]:
    """OpenAI's encode_image/encode_text of the test inputs, through this server's own
    preprocessing and tokenizer (the image spec and context the server reports)."""
    from deployments.backends.checkpoint import packaged_clip_tokenizer_json
    from deployments.preprocess.tokenizer import ClipTokenizer

    model = family[model_id]
    spec = ImageSpec.from_preprocessor_config({}, card["image_size"][0])
    px = np.stack([prepare_image(data, spec, ImageLimits()) for data in IMAGES])
    tok = ClipTokenizer(packaged_clip_tokenizer_json(), card["context_length"], 49406, 49407, 49408)
    seqs = [t.ids for t in tok.encode(TEXTS + LABELS, truncate=False)]
    ids = np.zeros((len(seqs), max(map(len, seqs))), dtype=np.int32)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
    return reference_embeddings(model, "image", px, spec), reference_embeddings(model, "text", ids)


@pytest.mark.parametrize("model_id, architecture, layout", [
    (RN_ID, "resnet", "open_clip"), ("vit-b32-archive", "vit", "openai")])
def test_family_serves_with_parity_to_openai_code(family, client, model_id, architecture, layout):
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    card = cards[model_id]
    assert (card["architecture"], card["layout"], card["ready"]) == (architecture, layout, True)
    model = family[model_id]
    assert card["logit_scale"] == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-3)
    ref_images, ref_texts = reference(family, card, model_id)
    images = embed(client, model_id, [{"image": b64(d)} for d in IMAGES])
    texts = embed(client, model_id, TEXTS + LABELS)
    assert ((images * ref_images).sum(-1)).min() >= 0.9999
    assert ((texts * ref_texts).sum(-1)).min() >= 0.9999
    if model_id == RN_ID:  # a catalogue entry: OpenAI's name works as an alias
        assert "RN50" in card["aliases"]
        np.testing.assert_array_equal(embed(client, "RN50", TEXTS + LABELS), texts)

    # classify: softmax over labels of exp(logit_scale) * cosine, with OpenAI's vectors
    r = client.post("/v1/classify", json={"model": model_id, "input": [{"image": b64(d)} for d in IMAGES],
                                          "labels": LABELS})
    assert r.status_code == 200, r.text
    assert r.json()["score_function"] == "softmax" and r.json().get("logit_bias") is None
    logits = card["logit_scale"] * ref_images @ ref_texts[len(TEXTS):].T
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    for row, item in zip(expected, r.json()["data"]):
        got = {p["label"]: p["score"] for p in item["predictions"]}
        np.testing.assert_allclose([got[label] for label in LABELS], row, atol=2e-4)

    # rerank and similarity: the same cosines
    r = client.post("/v1/rerank", json={"model": model_id, "query": TEXTS[0], "documents": LABELS})
    assert r.status_code == 200, r.text
    ranked = [LABELS[x["index"]] for x in r.json()["results"]]
    cos = ref_texts[len(TEXTS):] @ ref_texts[0]
    assert ranked == [LABELS[i] for i in np.argsort(-cos)]
    r = client.post("/v1/similarity", json={"model": model_id, "queries": [{"image": b64(IMAGES[0])}],
                                            "candidates": LABELS})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["data"][0]["cosine"], ref_images[0] @ ref_texts[len(TEXTS):].T, atol=2e-4)


def classify(client, model: str, labels: list[str], template: str | None = None) -> dict:
    r = client.post("/v1/classify", json={"model": model, "input": [{"image": b64(d)} for d in IMAGES],
                                          "labels": labels, "hypothesis_template": template})
    assert r.status_code == 200, r.text
    return r.json()


def scores(out: dict, labels: list[str]) -> np.ndarray:
    return np.asarray([[{p["label"]: p["score"] for p in item["predictions"]}[label] for label in labels]
                       for item in out["data"]])


def test_siglip_serves_beside_the_clips_with_its_own_score(family, client):
    """SigLIP in the same launch: embeddings equal SiglipModel's features, /v1/classify scores
    each label with sigmoid(exp(logit_scale) * cos + logit_bias) from SiglipModel, and again
    from the router's label cache; POST /models/{id} answers as transformers' pipeline;
    /v1/tokenize gives its tokenizer's ids and context."""
    import io

    import torch
    from PIL import Image
    from transformers import AutoProcessor, SiglipModel

    folder = family[SIGLIP_ID]
    model = SiglipModel.from_pretrained(folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)
    card = {m["id"]: m for m in client.get("/v1/models").json()["data"]}[SIGLIP_ID]
    assert (card["family"], card["score_function"], card["ready"]) == ("siglip", "sigmoid", True)
    assert card["logit_bias"] == pytest.approx(float(model.logit_bias.detach()), rel=1e-6)
    assert card["logit_scale"] == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-6)

    pil = [Image.open(io.BytesIO(d)) for d in IMAGES]
    prompts = [f"a photo of {label}" for label in LABELS]
    with torch.no_grad():
        enc = processor(text=TEXTS + prompts, images=pil, padding="max_length", truncation=True, return_tensors="pt")
        out = model(**enc)
        ref_images, ref_texts = out.image_embeds.numpy(), out.text_embeds.numpy()
        expected = out.logits_per_image.sigmoid().numpy()[:, len(TEXTS):]
    images = embed(client, SIGLIP_ID, [{"image": b64(d)} for d in IMAGES])
    texts = embed(client, SIGLIP_ID, TEXTS + prompts)
    assert ((images * ref_images).sum(-1)).min() >= 0.9999
    assert ((texts * ref_texts).sum(-1)).min() >= 0.9999

    first = classify(client, SIGLIP_ID, LABELS, "a photo of {}")
    assert (first["score_function"], first["logit_bias"]) == ("sigmoid", card["logit_bias"])
    assert first["usage"]["cached_prompts"] == 0
    np.testing.assert_allclose(scores(first, LABELS), expected, atol=2e-5)
    assert not np.allclose(scores(first, LABELS).sum(-1), 1.0)  # per label, not a distribution
    # The same labels again: their embeddings come from the router's label cache, same scores.
    second = classify(client, SIGLIP_ID, LABELS, "a photo of {}")
    assert second["usage"]["cached_prompts"] == len(LABELS)
    np.testing.assert_allclose(scores(second, LABELS), scores(first, LABELS), rtol=0, atol=1e-7)

    # The Hugging Face task answers as transformers' zero-shot-image-classification pipeline
    # does for a SigLIP (sigmoid per label, its default template), run step by step only to
    # pad to this tiny model's context (the pipeline pads SigLIPs to 64 and drops
    # tokenizer_kwargs given to the call).
    from transformers import pipeline

    pipe = pipeline("zero-shot-image-classification", model=str(folder), device="cpu", dtype=torch.float32)
    inputs = pipe.preprocess(pil[0], candidate_labels=LABELS, tokenizer_kwargs={"max_length": 16})
    with torch.no_grad():
        answer = pipe.postprocess(pipe._forward(inputs))
    r = client.post(f"/models/{SIGLIP_ID}", json={"inputs": b64(IMAGES[0]), "parameters": {"candidate_labels": LABELS}})
    assert r.status_code == 200, r.text
    assert [x["label"] for x in r.json()] == [x["label"] for x in answer]
    np.testing.assert_allclose([x["score"] for x in r.json()], [x["score"] for x in answer], atol=2e-5)

    long_text = "an extremely long caption about a small dog " * 6
    r = client.post("/v1/tokenize", json={"model": SIGLIP_ID, "input": [TEXTS[0], long_text]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["context_length"] == model.config.text_config.max_position_embeddings == 16
    for item, text in zip(body["data"], [TEXTS[0], long_text]):
        assert item["tokens"] == processor.tokenizer(text).input_ids  # no BOS, EOS (id 1) last
    assert [item["truncated"] for item in body["data"]] == [False, True]


def test_a_full_size_rn50_loads_with_openai_s_parameter_count(tmp_path):
    """Random weights at RN50's full size (no Ray; here rather than in the unit tier for its
    seconds of building and loading)."""
    import torch
    from support.openai_clip import openai_clip_module

    from deployments.backends.clip_layouts import ClipArch
    from deployments.bench.common import RN50_ID
    from deployments.catalogue import CATALOGUE
    from deployments.checkpoint_builder import build_open_clip_checkpoint

    entry = CATALOGUE[RN50_ID]
    folder = build_open_clip_checkpoint(tmp_path / "rn50", ClipArch.of(entry.arch))
    with torch.device("meta"):  # OpenAI's RN50, shapes only
        theirs = openai_clip_module().CLIP(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12)
    ckpt = Checkpoint.open(str(folder))
    image, text = (TorchBackend.load(ckpt, t, device="cpu", dtype="float32") for t in ("image", "text"))
    # + 1: logit_scale, which the served towers do not hold
    assert image.param_count + text.param_count + 1 == sum(p.numel() for p in theirs.parameters()) == entry.arch.params
    assert image.param_count == sum(p.numel() for p in theirs.visual.parameters())
    assert image.image_spec.input_hw == (224, 224) and image.embed_dim == 1024
    vectors = image.embed_images(np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8))
    assert vectors.shape == (2, 1024) and np.isfinite(vectors).all()
