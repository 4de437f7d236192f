"""MetaCLIP 2 end to end without Ray: a tiny random MetaClip2Model with an XLM-V-style
SentencePiece tokenizer built offline (tests/support/metaclip2_fixtures.py), placed in the
Hugging Face cache as facebook/metaclip-2-worldwide-huge-quickgelu and opened by that hub id
offline, then checked against transformers on the same files: token ids (the repository's
CLIPProcessor with `padding=True`, as transformers' integration test uses it), embeddings
(the text tower pools at the first `</s>`), and zero-shot scores (softmax)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from support.family_checks import load_towers, open_by_hub_id, reference_images, sample_images, served_images, served_scores, served_texts
from support.helpers import cosine

from deployments.engine.payloads import fit_padding
from deployments.preprocess.model_family import METACLIP_2, family_for_model_type

pytest.importorskip("sentencepiece")  # trains the fixture's sentencepiece.bpe.model

HUB_ID = "facebook/metaclip-2-worldwide-huge-quickgelu"
TEXTS = ["a photo of a cat", "A Red CIRCLE!!", "", "  leading and trailing  ", "tab\there\nnew line",
         "café 🐈 ＡＢＣ", "ÉCOLE Straße ﬁne", "don't stop, it's 1,000.5% {}", "two  spaces", "ein Foto einer Katze",
         "猫の写真", "фото кошки", "an extremely long caption " * 20]


@pytest.fixture(scope="module")
def metaclip2_ckpt(tmp_path_factory):
    from support.metaclip2_fixtures import build_metaclip2_checkpoint

    folder = build_metaclip2_checkpoint(tmp_path_factory.mktemp("metaclip2") / "tiny-metaclip2", seed=5)
    return open_by_hub_id(folder, HUB_ID)  # offline: the session's HF cache (tests/conftest.py)


@pytest.fixture(scope="module")
def towers(metaclip2_ckpt):
    return load_towers(metaclip2_ckpt)


@pytest.fixture(scope="module")
def reference(metaclip2_ckpt):
    import torch
    from transformers import CLIPProcessor, MetaClip2Model

    path = metaclip2_ckpt.path
    return MetaClip2Model.from_pretrained(path, dtype=torch.float32).eval(), CLIPProcessor.from_pretrained(path)


def _processor_ids(processor, texts, context_length):
    return processor(text=texts, padding=True, max_length=context_length, truncation=True,
                     return_tensors="pt").input_ids


def test_family_comes_from_model_type(metaclip2_ckpt):
    assert metaclip2_ckpt.family is METACLIP_2 is family_for_model_type("metaclip_2", "XLMRobertaTokenizer")
    assert (METACLIP_2.score_function, METACLIP_2.text_padding, METACLIP_2.text_pooling) == (
        "softmax", "longest", "first_eos")


def test_info_carries_the_family_to_the_router(towers, reference):
    model, _ = reference
    image, text = towers["image"].info(), towers["text"].info()
    for info in (image, text):
        assert (info.family, info.score_function, info.logit_bias) == ("metaclip_2", "softmax", None)
        assert info.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-6)
        assert info.embed_dim == 24
    spec = image.image_spec
    assert spec["resize_hw"] == (32, 32) and spec["crop_hw"] == (32, 32)  # height/width size: no aspect kept
    tok = text.tokenizer
    # XLM-R's ids: <s> 0, <pad> 1, </s> 2; padded per batch (the tower is causal).
    assert (tok.context_length, tok.bos_id, tok.eos_id, tok.pad_id, tok.padding) == (16, 0, 2, None, "longest")


def test_token_ids_equal_the_processor(towers, reference):
    from support.metaclip2_fixtures import WORLDWIDE
    from support.siglip_fixtures import sentences

    _, processor = reference
    info = towers["text"].info().tokenizer
    tok = info.tokenizer()
    texts = TEXTS + WORLDWIDE + sentences(150, seed=11)
    ours = tok.encode(texts, truncate=True)
    assert [e.ids.tolist() for e in ours] == processor.tokenizer(
        texts, max_length=info.context_length, truncation=True).input_ids
    assert ours[len(TEXTS) - 1].truncated and not ours[0].truncated
    assert tok.token_ids(["a photo of a cat"])[0] == processor.tokenizer("a photo of a cat").input_ids


def test_text_embeddings_equal_get_text_features(towers, reference):
    import torch

    model, processor = reference
    ours, batch = served_texts(towers, TEXTS)
    with torch.no_grad():
        ids = _processor_ids(processor, TEXTS, towers["text"].info().tokenizer.context_length)
        ref = torch.nn.functional.normalize(model.get_text_features(input_ids=ids).pooler_output, dim=-1).numpy()
    assert (cosine(ours, ref) >= 0.9999).all()
    # The batch is packed with 0 (<s>), the processor pads with <pad>: the causal tower never
    # looks past the first </s>, so neither the pad id nor the batch's length matters.
    assert batch.ids.shape[1] == ids.shape[1]
    assert fit_padding(batch.ids, batch.lengths, "longest", 16, None) is batch.ids
    alone, _ = served_texts(towers, TEXTS[:1])
    assert cosine(alone[0], ours[0]) >= 0.99999


def test_image_embeddings_equal_get_image_features(towers, reference, metaclip2_ckpt):
    datas = sample_images()
    assert metaclip2_ckpt.image_spec().to_dict() == towers["image"].info().image_spec
    assert (cosine(served_images(towers, datas), reference_images(*reference, datas)) >= 0.9999).all()


def test_zero_shot_scores_equal_logits_per_image_softmax(towers, reference):
    import torch

    model, processor = reference
    datas = sample_images()
    prompts = ["a photo of a cat", "una foto de un perro", "猫の写真", "a diagram"]
    ours = served_scores(towers, datas, prompts)
    with torch.no_grad():
        enc = processor(text=prompts, images=[Image.open(io.BytesIO(d)) for d in datas], padding=True,
                        return_tensors="pt")
        expected = model(**enc).logits_per_image.softmax(-1).numpy()
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    np.testing.assert_allclose(ours.sum(-1), 1.0)
    info = towers["text"].info()
    assert (info.score_function, info.logit_bias) == ("softmax", None)
