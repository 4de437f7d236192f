"""SigLIP 2 and MetaCLIP 2 through fine-tuning and ONNX, the paths SigLIP's tests check in
depth (test_siglip_finetune.py, test_siglip_onnx.py): a few steps with the family's loss,
saved as the family's transformers model and read back as served, and the export served by
the onnx backend as the torch backend serves the checkpoint (same family, score, bias)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sentencepiece")

# family -> (fixture builder, transformers model class, loss)
FAMILIES = {"siglip2": ("support.siglip2_fixtures:build_siglip2_checkpoint", "SiglipModel", "sigmoid"),
            "metaclip_2": ("support.metaclip2_fixtures:build_metaclip2_checkpoint", "MetaClip2Model", "softmax")}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_dir(request, tmp_path_factory):
    import importlib

    module, name = FAMILIES[request.param][0].split(":")
    build = getattr(importlib.import_module(module), name)
    return request.param, build(tmp_path_factory.mktemp(request.param) / "tiny", seed=2)


def test_fine_tune_uses_the_family_loss_and_saves_its_model(family_dir, tmp_path):
    import transformers
    from support.helpers import encode, natural_image

    from deployments.backends.checkpoint import Checkpoint
    from deployments.backends.torch_pixels import channel_affine, normalize_pixels
    from deployments.jobs.datasets import PairEncoder
    from deployments.jobs.training import ContrastiveLearner, ModelInit, TrainSettings, load_initial_model
    from deployments.preprocess.images import ImageLimits, prepare_image

    name, folder = family_dir
    _, model_class, loss = FAMILIES[name]
    init = ModelInit(source=str(folder))
    settings = TrainSettings(init=init, steps_per_epoch=2, epochs=1, batch_size=4, lr=1e-3, warmup_fraction=0,
                             device="cpu")
    model, assets = load_initial_model(init, 0)
    ckpt = Checkpoint.open(str(folder))
    learner = ContrastiveLearner(model, settings, torch.device("cpu"), ckpt.image_spec())
    assert (learner.model.family.name, learner.objective.score_function) == (name, loss)
    from dataclasses import asdict

    encoder = PairEncoder(ckpt.image_spec().to_dict(), asdict(ckpt.tokenizer_info()))
    pngs = [encode(natural_image(40 + 5 * i, 36, seed=60 + i), "PNG") for i in range(4)]
    batch = encoder.encode([prepare_image(p, ckpt.image_spec(), ImageLimits()) for p in pngs],
                           ["a red circle", "a blue square", "a photo of a dog", "an old house"])
    assert all(np.isfinite(learner.train_batch(batch)) for _ in range(2))
    out = learner.save(tmp_path / "tuned", assets)

    saved = Checkpoint.open(str(out))
    assert saved.family.name == name  # the tokenizer files that tell the family apart travelled
    whole = getattr(transformers, model_class).from_pretrained(out, dtype=torch.float32).eval()
    scale, bias = channel_affine(ckpt.image_spec(), torch.device("cpu"))
    pixels = normalize_pixels(torch.as_tensor(batch["pixels"]), scale, bias, torch.float32)
    ids = torch.as_tensor(learner.model.pad_texts(batch["ids"], batch["length"])).long()
    with torch.no_grad():
        ours = learner.model.eval()(input_ids=ids, pixel_values=pixels).logits_per_image
        theirs = whole(input_ids=ids, pixel_values=pixels).logits_per_image
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    if loss == "sigmoid":
        assert saved.logit_bias() == pytest.approx(float(learner.model.logit_bias.detach()), rel=1e-6)


def test_onnx_export_serves_as_the_torch_backend(family_dir, tmp_path):
    from support.helpers import encode, natural_image

    from deployments.backends.checkpoint import Checkpoint
    from deployments.backends.onnx_backend import OnnxBackend
    from deployments.backends.torch_backend import TorchBackend
    from deployments.engine.payloads import pack_tokens
    from deployments.export.onnx_export import export_onnx
    from deployments.preprocess.images import ImageLimits, prepare_image

    name, folder = family_dir
    export_onnx(folder, tmp_path / "onnx")
    source, exported = Checkpoint.open(str(folder)), Checkpoint.open(str(tmp_path / "onnx"))
    pixels = np.stack([prepare_image(encode(natural_image(50, 30 + 9 * i, seed=70 + i), "PNG"), source.image_spec(),
                                     ImageLimits()) for i in range(3)])
    for tower in ("image", "text"):
        torch_tower = TorchBackend.load(source, tower, device="cpu", dtype="float32")
        onnx_tower = OnnxBackend.load(exported, tower, device="cpu")
        want, got = torch_tower.info(), onnx_tower.info()
        assert (got.family, got.score_function, got.logit_scale, got.logit_bias) == (
            name, want.score_function, pytest.approx(want.logit_scale, rel=1e-6), want.logit_bias)
        if tower == "image":
            a, b = torch_tower.embed_images(pixels), onnx_tower.embed_images(pixels)
        else:
            tok = want.tokenizer.tokenizer()
            packed = pack_tokens([e.ids for e in tok.encode(["a photo of a cat", "A RED circle!", "x"], truncate=True)])
            a = torch_tower.embed_texts(packed.ids, packed.lengths)
            b = onnx_tower.embed_texts(packed.ids, packed.lengths)
        assert (a * b).sum(-1).min() >= 0.9999
