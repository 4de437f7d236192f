"""The torch backend on its own: single-tower loading, parity, dtypes, safe loading."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from support.helpers import cosine, encode, natural_image

from deployments.backends.checkpoint import Checkpoint, CheckpointError
from deployments.backends.torch_backend import TorchBackend
from deployments.preprocess.images import ImageLimits, prepare_image
from deployments.engine.payloads import pack_tokens


@pytest.fixture(scope="module")
def towers(model_dir):
    ckpt = Checkpoint.open(str(model_dir))
    return {t: TorchBackend.load(ckpt, t, device="cpu", dtype="float32") for t in ("image", "text")}


def test_each_tower_loads_only_its_own_weights(towers, reference):
    full = reference.model
    vision = sum(p.numel() for p in full.vision_model.parameters()) + full.visual_projection.weight.numel()
    text = sum(p.numel() for p in full.text_model.parameters()) + full.text_projection.weight.numel()
    assert towers["image"].info().param_count == vision
    assert towers["text"].info().param_count == text
    assert vision + text + 1 == sum(p.numel() for p in full.parameters())  # + logit_scale


def test_info_reports_what_the_router_needs(towers, reference):
    image, text = towers["image"].info(), towers["text"].info()
    assert image.embed_dim == text.embed_dim == 16
    assert image.image_spec["crop_hw"] == (32, 32) and image.tokenizer is None
    assert text.tokenizer.context_length == 77 and text.tokenizer.eos_id == 49407
    assert image.logit_scale == pytest.approx(float(reference.model.logit_scale.detach().exp()), rel=1e-6)
    assert image.fingerprint == text.fingerprint


def test_image_parity(towers, reference):
    spec = Checkpoint.open(str(towers["image"].checkpoint.path)).image_spec()
    datas = [encode(natural_image(97, 61, seed=s), fmt) for s, fmt in ((1, "PNG"), (2, "JPEG"), (3, "WEBP"))]
    ours = towers["image"].embed_images(np.stack([prepare_image(d, spec, ImageLimits()) for d in datas]))
    for row, data in zip(ours, datas):
        assert cosine(row, reference.image(data)) >= 0.9999


def test_text_parity_with_padding(towers, reference, model_dir):
    from support.helpers import make_tokenizer

    texts = ["a photo of a cat", "a diagram", "an extremely long caption " * 20]
    tok = make_tokenizer(model_dir)
    batch = pack_tokens([e.ids for e in tok.encode(texts, truncate=True)])
    ours = towers["text"].embed_texts(batch.ids, batch.lengths)
    assert (cosine(ours, reference.texts(texts)) >= 0.9999).all()


def test_bf16_stays_close_to_fp32(model_dir, towers):
    ckpt = Checkpoint.open(str(model_dir))
    bf16 = TorchBackend.load(ckpt, "image", device="cpu", dtype="bfloat16")
    assert bf16.info().dtype == "bfloat16"
    spec = ckpt.image_spec()
    pixels = np.stack([prepare_image(encode(natural_image(64, 48, seed=s)), spec, ImageLimits()) for s in range(8)])
    assert cosine(bf16.embed_images(pixels), towers["image"].embed_images(pixels)).min() >= 0.999

    from support.helpers import make_tokenizer

    texts = ["a photo of a cat", "a diagram of a bicycle", "two dogs playing in the snow at night"]
    batch = pack_tokens([e.ids for e in make_tokenizer(model_dir).encode(texts, truncate=True)])
    bf16_text = TorchBackend.load(ckpt, "text", device="cpu", dtype="bfloat16")
    fp32_rows = towers["text"].embed_texts(batch.ids, batch.lengths)
    assert cosine(bf16_text.embed_texts(batch.ids, batch.lengths), fp32_rows).min() >= 0.999


def test_pickle_only_checkpoint_is_refused(model_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(model_dir, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only pickle weights"):
        TorchBackend.load(Checkpoint.open(str(folder)), "image", device="cpu", dtype="float32")


def test_hub_id_resolves_from_the_offline_cache(hf_home):
    ckpt = Checkpoint.open("openai/clip-vit-base-patch32")
    assert str(ckpt.path).startswith(str(hf_home)) and "snapshots" in str(ckpt.path)
    assert ckpt.fingerprint.startswith("openai/clip-vit-base-patch32@")


def test_missing_sources_say_what_is_missing(hf_home, tmp_path):
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        Checkpoint.open("someone/not-downloaded")
    with pytest.raises(CheckpointError, match="does not exist"):
        Checkpoint.open(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        Checkpoint.open(str(tmp_path / "empty"))


def test_jpeg_draft_decode_stays_close_to_full_decode(towers, reference):
    """Large JPEGs are DCT-downscaled while decoding; vectors stay near the full decode."""
    from deployments.preprocess.images import open_rgb, resize_and_crop

    spec = towers["image"].image_spec
    fast, full = [], []
    for seed in range(6):
        data = encode(natural_image(640, 480, seed=seed), "JPEG", quality=90)
        fast.append(prepare_image(data, spec, ImageLimits()))
        full.append(resize_and_crop(open_rgb(data, spec, ImageLimits(draft_headroom=1e9)), spec))
        assert open_rgb(data, spec, ImageLimits()).size == (80, 60)  # 1/8: the draft did the heavy lifting
    sims = cosine(towers["image"].embed_images(np.stack(fast)), towers["image"].embed_images(np.stack(full)))
    assert sims.min() >= 0.999
    assert cosine(towers["image"].embed_images(np.stack(full[:1]))[0], reference.image(
        encode(natural_image(640, 480, seed=0), "JPEG", quality=90))) >= 0.9999
