"""SigLIP's model family end to end without Ray: a tiny random SiglipModel and a SentencePiece
tokenizer built offline (tests/support/siglip_fixtures.py), checked against transformers on
the same files: tokenization ids, embeddings, and zero-shot scores (sigmoid, with the bias)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from support.family_checks import load_towers, reference_images, sample_images, served_images, served_scores, served_texts
from support.helpers import cosine

from deployments.backends.base import TowerInfo
from deployments.backends.checkpoint import Checkpoint, CheckpointError
from deployments.backends.torch_backend import TorchBackend
from deployments.engine.payloads import fit_padding, pack_tokens
from deployments.preprocess.images import ImageLimits, prepare_image
from deployments.preprocess.model_family import CLIP, SIGLIP, UnsupportedFamily, family_for_model_type
from deployments.serving import scoring

pytest.importorskip("sentencepiece")  # builds the fixture's spiece.model and runs the reference tokenizer

TEXTS = ["a photo of a cat", "A Red CIRCLE!!", "", "  leading and trailing  ", "tab\there\nnew line",
         "café 🐈 ＡＢＣ", "ÉCOLE Straße ﬁne", "don't stop, it's 1,000.5% {}", "an extremely long caption " * 20]


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    from support.siglip_fixtures import build_siglip_checkpoint

    return build_siglip_checkpoint(tmp_path_factory.mktemp("siglip") / "tiny-siglip", seed=3)


@pytest.fixture(scope="module")
def siglip_towers(siglip_dir):
    return load_towers(Checkpoint.open(str(siglip_dir)))


@pytest.fixture(scope="module")
def siglip_reference(siglip_dir):
    import torch
    from transformers import AutoProcessor, SiglipModel

    return SiglipModel.from_pretrained(siglip_dir, dtype=torch.float32).eval(), AutoProcessor.from_pretrained(siglip_dir)


def test_family_comes_from_model_type():
    assert family_for_model_type("clip") is CLIP and family_for_model_type(None) is CLIP
    assert family_for_model_type("siglip") is SIGLIP
    assert (SIGLIP.score_function, SIGLIP.text_padding, SIGLIP.bos_token) == ("sigmoid", "max_length", None)
    assert (CLIP.score_function, CLIP.text_padding, CLIP.bos_token) == ("softmax", "longest", "<|startoftext|>")
    with pytest.raises(UnsupportedFamily, match="SigLIP 2 NaFlex"):
        family_for_model_type("siglip2")  # SigLIP 2's fixed-resolution checkpoints: test_siglip2.py


def test_unsupported_family_is_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "siglip2", "text_config": {}, "vision_config": {}}')
    with pytest.raises(CheckpointError, match="SigLIP 2 NaFlex"):
        _ = Checkpoint.open(str(tmp_path)).family


def test_siglip_with_its_sentencepiece_tokenizer_stays_siglip(siglip_dir):
    assert Checkpoint.open(str(siglip_dir)).family is SIGLIP  # tokenizer_class SiglipTokenizer, not Gemma's


def test_info_carries_the_family_to_the_router(siglip_towers, siglip_reference):
    model, _ = siglip_reference
    image, text = siglip_towers["image"].info(), siglip_towers["text"].info()
    for info in (image, text):
        assert (info.family, info.score_function) == ("siglip", "sigmoid")
        assert info.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-6)
        assert info.logit_bias == pytest.approx(float(model.logit_bias.detach()), rel=1e-6)
        assert info.embed_dim == 32
        again = TowerInfo.from_dict(info.to_dict())  # what travels encoder -> router
        assert (again.family, again.score_function, again.logit_bias) == (info.family, "sigmoid", info.logit_bias)
    spec = image.image_spec
    assert spec["resize_hw"] == (32, 32) and spec["crop_hw"] is None and spec["shortest_edge"] is None
    assert spec["mean"] == spec["std"] == (0.5, 0.5, 0.5)
    tok = text.tokenizer
    assert (tok.context_length, tok.bos_id, tok.eos_id, tok.pad_id, tok.padding) == (16, None, 1, 1, "max_length")


def test_token_ids_equal_the_processor_with_max_length_padding(siglip_towers, siglip_reference):
    from support.siglip_fixtures import sentences

    _, processor = siglip_reference
    info = siglip_towers["text"].info().tokenizer
    tok = info.tokenizer()
    texts = TEXTS + sentences(150, seed=11)
    ours = tok.encode(texts, truncate=True)
    batch = pack_tokens([e.ids for e in ours])
    padded = fit_padding(batch.ids, batch.lengths, info.padding, info.context_length, info.pad_id)
    expected = processor(text=texts, padding="max_length", truncation=True).input_ids
    assert padded.tolist() == expected
    assert ours[len(TEXTS) - 1].truncated and not ours[0].truncated
    # /v1/tokenize's view: the ids before truncation, no BOS, EOS last.
    assert tok.token_ids(["a photo of a cat"])[0] == processor.tokenizer("a photo of a cat").input_ids


def test_text_tower_gets_exactly_the_processor_padding(siglip_towers, siglip_reference):
    import torch

    model, processor = siglip_reference
    ours, _ = served_texts(siglip_towers, TEXTS)
    with torch.no_grad():
        ids = processor(text=TEXTS, padding="max_length", truncation=True, return_tensors="pt").input_ids
        ref = torch.nn.functional.normalize(model.get_text_features(input_ids=ids).pooler_output, dim=-1).numpy()
    assert (cosine(ours, ref) >= 0.9999).all()
    # Batch composition must not matter (the padding is fixed, never the batch's longest).
    alone, _ = served_texts(siglip_towers, TEXTS[:1])
    assert cosine(alone[0], ours[0]) >= 0.99999


def test_image_embeddings_equal_get_image_features(siglip_towers, siglip_reference, siglip_dir):
    datas = sample_images()
    assert Checkpoint.open(str(siglip_dir)).image_spec().to_dict() == siglip_towers["image"].info().image_spec
    assert (cosine(served_images(siglip_towers, datas), reference_images(*siglip_reference, datas)) >= 0.9999).all()


def test_zero_shot_scores_equal_logits_per_image_sigmoid(siglip_towers, siglip_reference):
    import torch

    model, processor = siglip_reference
    datas = sample_images()
    prompts = ["a photo of a cat", "a red circle", "a blue square", "a diagram"]
    info = siglip_towers["text"].info()
    scorer = scoring.Scorer(info.score_function, info.logit_scale, info.logit_bias)
    ours = served_scores(siglip_towers, datas, prompts)
    with torch.no_grad():
        enc = processor(text=prompts, images=[Image.open(io.BytesIO(d)) for d in datas], padding="max_length",
                        return_tensors="pt")
        expected = model(**enc).logits_per_image.sigmoid().numpy()
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    assert not np.allclose(ours.sum(-1), 1.0)  # independent per label, not a distribution
    assert scorer.describe() == {"score_function": "sigmoid", "logit_scale": info.logit_scale,
                                 "logit_bias": info.logit_bias}


def test_clip_scores_stay_softmax(model_dir, reference):
    from support.helpers import make_tokenizer

    ckpt = Checkpoint.open(str(model_dir))
    towers = {t: TorchBackend.load(ckpt, t, device="cpu", dtype="float32") for t in ("image", "text")}
    info = towers["text"].info()
    assert (info.family, info.score_function, info.logit_bias) == ("clip", "softmax", None)
    assert info.tokenizer.padding == "longest" and info.tokenizer.bos_id is not None
    datas = sample_images()
    prompts = ["a photo of a cat", "a red circle", "a diagram"]
    images = towers["image"].embed_images(np.stack([prepare_image(d, ckpt.image_spec(), ImageLimits()) for d in datas]))
    batch = pack_tokens([e.ids for e in make_tokenizer(model_dir).encode(prompts, truncate=True)])
    texts = towers["text"].embed_texts(batch.ids, batch.lengths)
    scorer = scoring.Scorer(info.score_function, info.logit_scale)
    ours = scorer(scoring.cosine_matrix(images, texts))
    np.testing.assert_allclose(ours, reference.zero_shot(datas, prompts), atol=2e-5)
    np.testing.assert_allclose(ours, scoring.probabilities(scoring.cosine_matrix(images, texts), info.logit_scale))
    assert scorer.describe() == {"score_function": "softmax", "logit_scale": info.logit_scale}


def test_sigmoid_is_stable_at_large_logits():
    out = scoring.Scorer("sigmoid", 100.0, -10.0)(np.array([[-5.0, 0.0, 0.1, 5.0]]))
    assert np.isfinite(out).all() and out[0, 0] < 1e-200 and out[0, 3] == pytest.approx(1.0)
    assert out[0, 1] == pytest.approx(1 / (1 + np.exp(10.0)))
