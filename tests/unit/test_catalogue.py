"""The variant catalogue: a config naming an entry by id gets its defaults, docs/models.md
shows the catalogue as it is, and a fixture shaped like each entry loads on both backends."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.helpers import REPO, cosine
from support.onnx_fixtures import build_catalogue_fixture

from deployments.backends.checkpoint import Checkpoint
from deployments.backends.onnx_backend import OnnxBackend
from deployments.backends.torch_backend import TorchBackend
from deployments.catalogue import CATALOGUE, markdown_table
from deployments.config import parse_app_config
from deployments.export.onnx_export import export_onnx
from deployments.preprocess.tokenizer import ClipTokenizer
from deployments.engine.payloads import pack_tokens

SEED_MODELS = {"openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14",
               "openai/clip-vit-large-patch14-336", "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K",
               "patrickjohncyh/fashion-clip", "Xenova/clip-vit-base-patch32"}


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
    assert (l14.backend, l14.aliases) == ("torch", ["clip-vit-large-patch14-336", "ViT-L-14-336"])
    assert fashion.aliases == ["fc"]  # what the config says wins
    # Overriding the backend drops the entry's onnx-only defaults instead of failing.
    as_torch = parse_app_config({"variants": [{"id": "Xenova/clip-vit-base-patch32", "backend": "torch"}]})
    assert as_torch.variants[0].backend_options() == {"allow_pickle_weights": False, "trust_remote_code": False,
                                                      "torch_compile": False}
    q8 = parse_app_config({"variants": [{"id": "Xenova/clip-vit-base-patch32", "onnx_dtype": "quantized"}]})
    assert q8.variants[0].backend_options() == {"onnx_dtype": "q8"}


def test_the_models_page_shows_the_catalogue_as_it_is():
    assert markdown_table() in (REPO / "docs" / "models.md").read_text()


def one_entry_per_architecture() -> list[str]:
    """Entries sharing an architecture (a fine-tune of a checkpoint, its ONNX export) would
    build, export and compare the same graph again: one of each."""
    chosen: dict = {}
    for entry_id in sorted(CATALOGUE, key=str.lower):
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
