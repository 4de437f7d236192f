"""SigLIP 2's fixed-resolution checkpoints end to end without Ray: a tiny random SiglipModel
with a Gemma tokenizer built offline (tests/support/siglip2_fixtures.py), placed in the
Hugging Face cache as google/siglip2-base-patch16-224 and opened by that hub id offline, then
checked against transformers on the same files: token ids (the repository's own processor on
lowercased texts with `padding="max_length"`, and transformers' Siglip2Tokenizer, which
lowercases itself), embeddings, and zero-shot scores (sigmoid, with the bias)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from support.family_checks import load_towers, open_by_hub_id, reference_images, sample_images, served_images, served_scores, served_texts
from support.helpers import cosine

from deployments.backends.checkpoint import Checkpoint, CheckpointError
from deployments.engine.payloads import fit_padding, pack_tokens
from deployments.preprocess.model_family import SIGLIP, SIGLIP2, UnsupportedFamily, family_for_model_type

pytest.importorskip("sentencepiece")  # trains the fixture's Gemma-style tokenizer.model

HUB_ID = "google/siglip2-base-patch16-224"
TEXTS = ["a photo of a cat", "A Red CIRCLE!!", "", "  leading and trailing  ", "tab\there\nnew line",
         "café 🐈 ＡＢＣ", "ÉCOLE Straße ﬁne", "don't stop, it's 1,000.5% {}", "an extremely long caption " * 20]


@pytest.fixture(scope="module")
def siglip2_ckpt(tmp_path_factory):
    from support.siglip2_fixtures import build_siglip2_checkpoint

    folder = build_siglip2_checkpoint(tmp_path_factory.mktemp("siglip2") / "tiny-siglip2", seed=4)
    return open_by_hub_id(folder, HUB_ID)  # offline: the session's HF cache (tests/conftest.py)


@pytest.fixture(scope="module")
def towers(siglip2_ckpt):
    return load_towers(siglip2_ckpt)


@pytest.fixture(scope="module")
def reference(siglip2_ckpt):
    import torch
    from transformers import AutoProcessor, SiglipModel

    path = siglip2_ckpt.path
    return SiglipModel.from_pretrained(path, dtype=torch.float32).eval(), AutoProcessor.from_pretrained(path)


def _processor_ids(processor, texts, context_length):
    """The documented use of a SigLIP 2 repository's processor: lowercased texts, max_length padding."""
    return processor(text=[t.lower() for t in texts], padding="max_length", max_length=context_length,
                     truncation=True, return_tensors="pt").input_ids


def test_siglip2_is_told_from_siglip_by_its_gemma_tokenizer(siglip2_ckpt):
    assert siglip2_ckpt.config["model_type"] == "siglip" and siglip2_ckpt.family is SIGLIP2
    assert family_for_model_type("siglip", "GemmaTokenizer") is SIGLIP2
    assert family_for_model_type("siglip", "SiglipTokenizer") is SIGLIP is family_for_model_type("siglip")
    assert (SIGLIP2.score_function, SIGLIP2.text_padding, SIGLIP2.bos_token, SIGLIP2.lowercase) == (
        "sigmoid", "max_length", None, True)


def test_naflex_is_refused_by_name(tmp_path):
    with pytest.raises(UnsupportedFamily, match="NaFlex"):
        family_for_model_type("siglip2")
    (tmp_path / "config.json").write_text('{"model_type": "siglip2", "text_config": {}, "vision_config": {}}')
    with pytest.raises(CheckpointError, match=r"NaFlex.*fixed-resolution checkpoints are"):
        _ = Checkpoint.open(str(tmp_path)).family


def test_a_siglip2_checkpoint_without_tokenizer_json_names_the_file(siglip2_ckpt, tmp_path):
    import shutil

    folder = tmp_path / "no-tokenizer-json"
    shutil.copytree(siglip2_ckpt.path, folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="has no tokenizer.json"):
        Checkpoint.open(str(folder)).tokenizer_info()


def test_info_carries_the_family_to_the_router(towers, reference):
    model, _ = reference
    image, text = towers["image"].info(), towers["text"].info()
    for info in (image, text):
        assert (info.family, info.score_function) == ("siglip2", "sigmoid")
        assert info.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-6)
        assert info.logit_bias == pytest.approx(float(model.logit_bias.detach()), rel=1e-6)
        assert info.embed_dim == 32
    spec = image.image_spec
    assert spec["resize_hw"] == (32, 32) and spec["crop_hw"] is None and spec["mean"] == spec["std"] == (0.5,) * 3
    tok = text.tokenizer
    # Gemma's ids: <pad> 0, <eos> 1; no BOS; the padding is <pad>, not EOS as in SigLIP.
    assert (tok.context_length, tok.bos_id, tok.eos_id, tok.pad_id, tok.padding) == (16, None, 1, 0, "max_length")


def test_token_ids_equal_the_processor_and_siglip2_tokenizer(towers, reference, siglip2_ckpt):
    from support.siglip_fixtures import sentences
    from transformers import Siglip2Tokenizer

    _, processor = reference
    info = towers["text"].info().tokenizer
    tok = info.tokenizer()
    texts = TEXTS + sentences(150, seed=11) + [s.upper() for s in sentences(20, seed=12)]
    ours = tok.encode(texts, truncate=True)
    batch = pack_tokens([e.ids for e in ours])
    padded = fit_padding(batch.ids, batch.lengths, info.padding, info.context_length, info.pad_id)
    assert padded.tolist() == _processor_ids(processor, texts, info.context_length).tolist()
    # transformers' own SigLIP 2 tokenizer (lowercasing built in) on the same tokenizer.json.
    siglip2 = Siglip2Tokenizer.from_pretrained(siglip2_ckpt.path)
    expected = siglip2(texts, padding="max_length", max_length=info.context_length, truncation=True).input_ids
    assert padded.tolist() == expected
    assert ours[len(TEXTS) - 1].truncated and not ours[0].truncated and ours[len(TEXTS) - 1].ids[-1] == info.eos_id
    # /v1/tokenize's view: the ids before truncation, no BOS, EOS last.
    assert tok.token_ids(["A Photo of a Cat"])[0] == processor.tokenizer("a photo of a cat").input_ids


def test_text_embeddings_equal_get_text_features(towers, reference):
    import torch

    model, processor = reference
    ours, batch = served_texts(towers, TEXTS)
    with torch.no_grad():
        ids = _processor_ids(processor, TEXTS, towers["text"].info().tokenizer.context_length)
        ref = torch.nn.functional.normalize(model.get_text_features(input_ids=ids).pooler_output, dim=-1).numpy()
    assert (cosine(ours, ref) >= 0.9999).all()
    alone, _ = served_texts(towers, TEXTS[:1])  # the padding is fixed, never the batch's longest
    assert cosine(alone[0], ours[0]) >= 0.99999


def test_image_embeddings_equal_get_image_features(towers, reference, siglip2_ckpt):
    datas = sample_images()
    assert siglip2_ckpt.image_spec().to_dict() == towers["image"].info().image_spec
    assert (cosine(served_images(towers, datas), reference_images(*reference, datas)) >= 0.9999).all()


def test_zero_shot_scores_equal_logits_per_image_sigmoid(towers, reference):
    import torch

    model, processor = reference
    datas = sample_images()
    prompts = ["This is a photo of a Cat.", "a red circle", "A blue square", "a diagram"]
    ours = served_scores(towers, datas, prompts)
    with torch.no_grad():
        enc = processor(text=[p.lower() for p in prompts], images=[Image.open(io.BytesIO(d)) for d in datas],
                        padding="max_length", max_length=towers["text"].info().tokenizer.context_length,
                        return_tensors="pt")
        expected = model(**enc).logits_per_image.sigmoid().numpy()
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    assert not np.allclose(ours.sum(-1), 1.0)
