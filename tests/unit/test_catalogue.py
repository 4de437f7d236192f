"""The variant catalogue: a config naming an entry by id gets its defaults, OpenAI's names
resolve everywhere a model is named, docs/models.md shows the catalogue as it is, each CLIP
architecture's parameter count is OpenAI's own and every other family's is transformers'
model built from the repository's published config.json, and a fixture shaped like each CLIP
ViT entry loads on both backends."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from support.helpers import REPO, cosine
from support.onnx_fixtures import build_catalogue_fixture
from support.openai_clip import openai_clip_module

from deployments.backends.checkpoint import Checkpoint
from deployments.backends.onnx_backend import OnnxBackend
from deployments.backends.torch_backend import TorchBackend
from deployments.backends.clip_layouts import LayoutError, parse_open_clip_config
from deployments.catalogue import CATALOGUE, architecture_from_config, markdown_table
from deployments.config import parse_app_config
from deployments.export.onnx_export import export_onnx
from deployments.preprocess.tokenizer import ClipTokenizer
from deployments.engine.payloads import pack_tokens
from deployments.protocol.labels import PromptLimits
from deployments.serving.errors import install_error_handlers
from deployments.serving.routes import hf_inference, models
from deployments.serving.variants import VariantRegistry

SEED_MODELS = {"openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14",
               "openai/clip-vit-large-patch14-336", "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K",
               "patrickjohncyh/fashion-clip", "Xenova/clip-vit-base-patch32", "timm/resnet50_clip.openai",
               "timm/resnet101_clip.openai", "timm/resnet50x4_clip.openai", "timm/resnet50x16_clip.openai",
               "timm/resnet50x64_clip.openai", "google/siglip-base-patch16-224", "google/siglip-so400m-patch14-384",
               "google/siglip2-base-patch16-224", "facebook/metaclip-2-worldwide-huge-quickgelu"}
# config.json of the non-OpenAI families' entries as their hub repositories publish it (the
# model class transformers builds from it). Sources: huggingface.co/<id>/blob/main/config.json
# for google/siglip-so400m-patch14-384; Xenova/siglip-base-patch16-224's copy of
# google/siglip-base-patch16-224's original config (the hub's own now states only the
# defaults, the same shape); google/siglip2-base-patch16-512's as mirrored by a third-party
# repository, its 224-px sibling differing only in image_size (224 is the default); and
# MetaCLIP 2's from transformers' convert_metaclip_2_to_hf.py (ViT-H-14-quickgelu-worldwide;
# eos_token_id 2 is facebook/xlm-v-base's </s>).
PUBLISHED_CONFIGS = {
    "google/siglip-base-patch16-224": ("SiglipModel", {
        "model_type": "siglip", "initializer_factor": 1.0,
        "text_config": {"hidden_size": 768, "intermediate_size": 3072, "model_type": "siglip_text_model",
                        "num_attention_heads": 12, "vocab_size": 32000},
        "vision_config": {"model_type": "siglip_vision_model", "patch_size": 16}}),
    "google/siglip-so400m-patch14-384": ("SiglipModel", {
        "model_type": "siglip", "initializer_factor": 1.0,
        "text_config": {"hidden_size": 1152, "intermediate_size": 4304, "model_type": "siglip_text_model",
                        "num_attention_heads": 16, "num_hidden_layers": 27},
        "vision_config": {"hidden_size": 1152, "image_size": 384, "intermediate_size": 4304,
                          "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
                          "patch_size": 14}}),
    "google/siglip2-base-patch16-224": ("SiglipModel", {
        "model_type": "siglip", "initializer_factor": 1.0,
        "text_config": {"model_type": "siglip_text_model", "vocab_size": 256000},
        "vision_config": {"model_type": "siglip_vision_model"}}),
    "facebook/metaclip-2-worldwide-huge-quickgelu": ("MetaClip2Model", {
        "model_type": "metaclip_2", "projection_dim": 1024,
        "text_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                        "num_hidden_layers": 24, "max_position_embeddings": 77, "vocab_size": 901629,
                        "eos_token_id": 2, "hidden_act": "quick_gelu", "projection_dim": 1024},
        "vision_config": {"image_size": 224, "patch_size": 14, "hidden_size": 1280, "intermediate_size": 5120,
                          "num_attention_heads": 16, "num_hidden_layers": 32, "hidden_act": "quick_gelu",
                          "projection_dim": 1024}}),
}
# The names OpenAI's clip package loads (clip.available_models()) and its download files' names.
OPENAI_NAMES = {
    "RN50": "timm/resnet50_clip.openai", "RN101": "timm/resnet101_clip.openai",
    "RN50x4": "timm/resnet50x4_clip.openai", "RN50x16": "timm/resnet50x16_clip.openai",
    "RN50x64": "timm/resnet50x64_clip.openai",
    "ViT-B/32": "openai/clip-vit-base-patch32", "ViT-B-32": "openai/clip-vit-base-patch32",
    "ViT-B/16": "openai/clip-vit-base-patch16", "ViT-B-16": "openai/clip-vit-base-patch16",
    "ViT-L/14": "openai/clip-vit-large-patch14", "ViT-L-14": "openai/clip-vit-large-patch14",
    "ViT-L/14@336px": "openai/clip-vit-large-patch14-336", "ViT-L-14-336px": "openai/clip-vit-large-patch14-336",
}


def test_every_seed_model_is_catalogued():
    assert set(CATALOGUE) == SEED_MODELS
    names = [n for e in CATALOGUE.values() for n in (e.id, *e.aliases)]
    assert len(names) == len(set(names))  # all of them can be served side by side


def test_a_variant_named_by_id_alone_gets_the_entry_defaults():
    xenova, l14, fashion = parse_app_config({"variants": [
        {"id": "Xenova/clip-vit-base-patch32"}, {"id": "openai/clip-vit-large-patch14-336"},
        {"id": "patrickjohncyh/fashion-clip", "aliases": ["fc"], "backend": "torch"},
    ]}).variants
    assert (xenova.backend, xenova.onnx_dtype, xenova.logit_scale) == ("onnx", "fp32", 100.0)
    assert xenova.aliases == ["xenova-clip-vit-base-patch32"] and xenova.resolved_source == xenova.id
    assert (l14.backend, l14.aliases) == (
        "torch", ["clip-vit-large-patch14-336", "ViT-L/14@336px", "ViT-L-14-336", "ViT-L-14-336px"])
    assert fashion.aliases == ["fc"]  # what the config says wins
    # Overriding the backend drops the entry's onnx-only defaults instead of failing.
    as_torch = parse_app_config({"variants": [{"id": "Xenova/clip-vit-base-patch32", "backend": "torch"}]})
    assert as_torch.variants[0].backend_options() == {"allow_pickle_weights": False, "trust_remote_code": False,
                                                      "torch_compile": False}
    q8 = parse_app_config({"variants": [{"id": "Xenova/clip-vit-base-patch32", "onnx_dtype": "quantized"}]})
    assert q8.variants[0].backend_options() == {"onnx_dtype": "q8"}


def openai_app() -> tuple[FastAPI, list]:
    """The model-naming routes over a registry of the nine OpenAI entries, served by id alone;
    the zero-shot work is a stub that records which variant it was asked for."""
    config = parse_app_config({"variants": [{"id": i} for i in sorted(set(OPENAI_NAMES.values()))]})
    asked: list = []

    async def classify(variant, items, prompts, truncate):
        asked.append(variant.id)
        return SimpleNamespace(probabilities=[np.full(len(prompts.labels), 1 / len(prompts.labels))])

    zero_shot = SimpleNamespace(prompt_limits=PromptLimits.from_config(config.limits), classify=classify)
    encoders = {v.id: {t: object() for t in v.towers} for v in config.variants}
    state = SimpleNamespace(config=config, variants=VariantRegistry(config, encoders), zero_shot=zero_shot,
                            truncate=lambda requested: True)
    app = FastAPI()
    install_error_handlers(app)
    app.state.clip = state
    for module in (models, hf_inference):
        app.include_router(module.router)
    return app, asked


def test_openai_names_resolve_in_configs_request_bodies_and_url_paths():
    app, asked = openai_app()
    registry = app.state.clip.variants
    for name, entry_id in OPENAI_NAMES.items():
        assert CATALOGUE[entry_id].aliases.count(name) == 1
        assert registry.resolve(name).id == entry_id  # the `model` field of every request

    async def calls():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for name, entry_id in OPENAI_NAMES.items():
                for path in (name, name.replace("/", "%2F").replace("@", "%40")):  # as written, and encoded
                    r = await client.get(f"/v1/models/{path}")
                    assert (r.status_code, r.json()["id"]) == (200, entry_id), path
                    r = await client.post(f"/models/{path}", json={
                        "inputs": "AAAA", "parameters": {"candidate_labels": ["a cat", "a dog"]}})
                    assert r.status_code == 200 and asked.pop() == entry_id, (path, r.text)
            assert (await client.get("/v1/models/ViT-L/14@224px")).status_code == 404

    asyncio.run(calls())


def test_the_models_page_shows_the_catalogue_as_it_is():
    assert markdown_table() in (REPO / "docs" / "models.md").read_text()


@pytest.mark.parametrize("entry_id", sorted(e for e in CATALOGUE if not CATALOGUE[e].arch.siglip_layout))
def test_parameter_counts_are_those_of_openais_model_code(entry_id):
    """Each CLIP-module architecture (CLIP's family and MetaCLIP 2) built by OpenAI's
    clip/model.py on the meta device (shapes only, no memory): our count from the
    architecture's fields is exactly its number of parameters."""
    import torch

    clip_model = openai_clip_module()
    arch = CATALOGUE[entry_id].arch
    (vision_width, vision_layers, _), (text_width, text_layers, _) = arch.vision, arch.text
    with torch.device("meta"):
        # As OpenAI's build_model: text heads are width // 64; the vision heads it derives itself.
        model = clip_model.CLIP(arch.embed_dim, arch.image_size, vision_layers, vision_width, arch.patch_size,
                                arch.context_length, arch.vocab_size, text_width, text_width // 64, text_layers)
    assert type(model.visual).__name__ == {"vit": "VisionTransformer", "resnet": "ModifiedResNet"}[arch.architecture]
    assert arch.vision_params == sum(p.numel() for p in model.visual.parameters())
    assert arch.params == sum(p.numel() for p in model.parameters())
    if arch.architecture == "resnet":
        assert model.visual.attnpool.num_heads == arch.vision[2]


def test_every_other_family_has_its_published_config():
    others = {e.id for e in CATALOGUE.values() if e.arch.family != "clip"}
    assert others and others <= set(PUBLISHED_CONFIGS)


@pytest.mark.parametrize("entry_id", sorted(PUBLISHED_CONFIGS))
def test_parameter_counts_are_those_of_transformers_on_the_published_config(entry_id):
    """transformers' model (SiglipModel, MetaClip2Model) built on the meta device from the
    repository's config.json: the catalogue's count is exactly its number of parameters, its
    image tower's too, and the config reader (sizing checkpoints outside the catalogue) finds
    the same shape in the published file."""
    import torch
    import transformers

    class_name, published = PUBLISHED_CONFIGS[entry_id]
    arch = CATALOGUE[entry_id].arch
    model_class = getattr(transformers, class_name)
    config = model_class.config_class(**{k: v for k, v in published.items() if k != "model_type"})
    with torch.device("meta"):
        model = model_class(config)
    vision = [model.vision_model, *([model.visual_projection] if hasattr(model, "visual_projection") else [])]
    assert arch.vision_params == sum(p.numel() for m in vision for p in m.parameters())
    assert arch.params == sum(p.numel() for p in model.parameters())
    (width, layers, _), (text_width, text_layers, _) = arch.vision, arch.text
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers, config.text_config.hidden_size,
            config.text_config.num_hidden_layers, config.text_config.vocab_size) == (
        width, layers, text_width, text_layers, arch.vocab_size)
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (arch.image_size, arch.patch_size)
    assert config.text_config.max_position_embeddings == arch.context_length
    assert architecture_from_config(published).params == arch.params


def test_open_clip_configs_give_the_catalogues_architectures():
    """The hub's open_clip_config.json of RN50x64 and a transformers config.json of ViT-B/32,
    as written there, describe the catalogue's shapes."""
    rn50x64 = {"model_cfg": {
        "embed_dim": 1024, "quick_gelu": True,
        "vision_cfg": {"image_size": 448, "layers": [3, 15, 36, 10], "width": 128, "patch_size": None},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 12}},
        "preprocess_cfg": {"interpolation": "bicubic", "resize_mode": "shortest"}}
    assert parse_open_clip_config(rn50x64).arch.catalogue_arch() == CATALOGUE["timm/resnet50x64_clip.openai"].arch
    b32 = {"projection_dim": 512, "vision_config": {"hidden_size": 768, "num_hidden_layers": 12, "patch_size": 32},
           "text_config": {"hidden_size": 512, "num_attention_heads": 8}}
    assert architecture_from_config(b32).params == CATALOGUE["openai/clip-vit-base-patch32"].arch.params
    timm_tower = {"model_cfg": {"embed_dim": 1024, "vision_cfg": {"timm_model_name": "resnetaa50d"}, "text_cfg": {}}}
    with pytest.raises(LayoutError, match="timm_model_name"):
        parse_open_clip_config(timm_tower)
    for unknown in ({"architecture": "resnet50x4_clip_gap"}, {"vision_config": {"hidden_size": "x"}}):
        assert architecture_from_config(unknown) is None


def one_entry_per_architecture() -> list[str]:
    """Entries sharing an architecture (a fine-tune of a checkpoint, its ONNX export) would
    build, export and compare the same graph again: one of each."""
    chosen: dict = {}
    for entry_id in sorted(CATALOGUE, key=str.lower):
        arch = CATALOGUE[entry_id].arch
        # ResNets: the ResNet loader's tests cover them; other families: their own test files
        # (test_siglip.py, test_siglip2.py, test_metaclip2.py); the onnx backend serves CLIP's family only.
        if arch.architecture == "vit" and arch.family == "clip":
            chosen.setdefault(CATALOGUE[entry_id].arch, entry_id)
    return sorted(chosen.values())


@pytest.mark.parametrize("entry_id", one_entry_per_architecture())
def test_a_fixture_shaped_like_each_architecture_serves_on_both_backends(entry_id, tmp_path):
    entry = CATALOGUE[entry_id]
    arch = entry.arch
    folder = build_catalogue_fixture(entry_id, tmp_path / "ckpt")
    cfg = json.loads((folder / "config.json").read_text())
    vision, text = cfg["vision_config"], cfg["text_config"]
    assert (vision["image_size"], vision["patch_size"], cfg["projection_dim"]) == (
        arch.image_size, arch.patch_size, arch.embed_dim)
    assert (vision["hidden_act"], text["hidden_act"], text["eos_token_id"], text["max_position_embeddings"]) == (
        arch.hidden_act, arch.hidden_act, arch.eos_token_id, arch.context_length)

    ckpt = Checkpoint.open(str(folder))
    torch_towers = {t: TorchBackend.load(ckpt, t, device="cpu", dtype="float32") for t in ("image", "text")}
    export_onnx(folder, tmp_path / "onnx")
    onnx_ckpt = Checkpoint.open(str(tmp_path / "onnx"))
    onnx_towers = {t: OnnxBackend.load(onnx_ckpt, t) for t in ("image", "text")}
    image = torch_towers["image"].info()
    assert image.embed_dim == onnx_towers["text"].info().embed_dim == arch.embed_dim
    assert tuple(image.image_spec["crop_hw"]) == (arch.image_size, arch.image_size)

    pixels = np.random.default_rng(0).integers(0, 256, (2, arch.image_size, arch.image_size, 3), dtype=np.uint8)
    assert cosine(onnx_towers["image"].embed_images(pixels), torch_towers["image"].embed_images(pixels)).min() >= 0.9999
    t = torch_towers["text"].tokenizer_info
    tok = ClipTokenizer(t.json, t.context_length, t.bos_id, t.eos_id, t.vocab_size)
    # Padded batches: with eos_token_id 2 the text tower pools at argmax(ids), in both runtimes.
    batch = pack_tokens([e.ids for e in tok.encode(["a photo of a cat", "a much longer caption " * 4], truncate=True)])
    ours = onnx_towers["text"].embed_texts(batch.ids, batch.lengths)
    assert cosine(ours, torch_towers["text"].embed_texts(batch.ids, batch.lengths)).min() >= 0.9999
