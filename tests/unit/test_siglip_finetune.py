"""Fine-tuning a SigLIP checkpoint without Ray: the sigmoid loss against transformers'
SiglipModel(return_loss=True), the training batches' padding against the processor's
(`padding="max_length"`), a short run of the training loop that lowers the loss, and the
saved checkpoint read back by serving's Checkpoint and scored like SiglipModel."""

from __future__ import annotations

import io
import json
import math
from contextlib import contextmanager
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image
from support.helpers import encode, natural_image

from deployments.jobs.contrastive import (MAX_LOGIT_SCALE, contrastive_loss, objective_for, select_trained,
                                          sigmoid_loss)

pytest.importorskip("sentencepiece")

CAPTIONS = ["a red circle", "a blue square", "a green triangle", "a yellow star", "a photo of a small dog",
            "The old house near the river!", "a purple flower", "a black car"]


@pytest.fixture(scope="module")
def siglip(siglip_model_dir):
    from transformers import AutoProcessor, SiglipModel

    from deployments.backends.checkpoint import Checkpoint

    model = SiglipModel.from_pretrained(siglip_model_dir, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(siglip_model_dir), Checkpoint.open(str(siglip_model_dir))


def pair_batch(ckpt, n: int = 8, seed: int = 0):
    """A training batch as the job's data actors build it, and the same images as PNG."""
    from deployments.jobs.datasets import PairEncoder
    from deployments.preprocess.images import ImageLimits, prepare_image

    pngs = [encode(natural_image(40 + 3 * i, 30 + 5 * i, seed=seed * 100 + i), "PNG") for i in range(n)]
    encoder = PairEncoder(ckpt.image_spec().to_dict(), asdict(ckpt.tokenizer_info()))
    pixels = [prepare_image(png, ckpt.image_spec(), ImageLimits()) for png in pngs]
    return encoder.encode(pixels, CAPTIONS[:n]), pngs


def make_learner(source: str, steps: int = 4, **train):
    from deployments.jobs.clip_pair import open_source
    from deployments.jobs.training import ContrastiveLearner, ModelInit, TrainSettings, load_initial_model

    init = ModelInit(source=source)
    settings = TrainSettings(init=init, steps_per_epoch=steps, epochs=1, batch_size=8, lr=5e-3,
                             warmup_fraction=0, device="cpu", **train)
    model, assets = load_initial_model(init, settings.seed)
    ckpt = open_source(source)
    return ContrastiveLearner(model, settings, torch.device("cpu"), ckpt.image_spec()), ckpt, assets


def test_sigmoid_loss_is_siglips_and_follows_the_family():
    torch.manual_seed(0)
    logits = torch.randn(5, 5) * 4 - 2
    eye = torch.eye(5)
    by_hand = -sum(math.log(torch.sigmoid((1 if i == j else -1) * logits[i, j]).item())
                   for i in range(5) for j in range(5)) / 5
    assert sigmoid_loss(logits).item() == pytest.approx(by_hand, rel=1e-5)
    assert torch.allclose(sigmoid_loss(logits, torch.arange(5) * 3), sigmoid_loss(logits))  # distinct groups
    # Repeated captions are positives for each other, as in CLIP's loss.
    aligned = eye * 10 - 5
    aligned[0, 1] = aligned[1, 0] = 5  # items 0 and 1 share a caption: matching across them is right
    assert sigmoid_loss(aligned, torch.tensor([1, 1, 2, 3, 4])) < sigmoid_loss(aligned) / 2
    assert objective_for("sigmoid").loss is sigmoid_loss and objective_for("softmax").loss is contrastive_loss
    with pytest.raises(ValueError, match="no training objective"):
        objective_for("hinge")


def test_training_batches_pad_like_the_processor(siglip):
    model, processor, ckpt = siglip
    batch, _ = pair_batch(ckpt)
    expected = processor(text=CAPTIONS, padding="max_length", truncation=True).input_ids
    assert batch["ids"].tolist() == expected  # pad id 1 (</s>) up to the context length, not 0
    assert batch["ids"].shape[1] == model.config.text_config.max_position_embeddings
    from deployments.jobs.clip_pair import load_pair

    pair = load_pair(ckpt)
    # What the text tower gets in training: the same rows, whatever the batch's longest text.
    assert pair.pad_texts(batch["ids"], batch["length"]).tolist() == expected
    assert pair.pad_texts(batch["ids"][:2], batch["length"][:2]).tolist() == expected[:2]


def test_loss_equals_siglip_model_return_loss(siglip):
    from deployments.backends.torch_pixels import channel_affine, normalize_pixels
    from deployments.jobs.clip_pair import load_pair

    model, processor, ckpt = siglip
    batch, pngs = pair_batch(ckpt)
    pair = load_pair(ckpt).eval()
    assert pair.family.name == "siglip"
    assert float(pair.logit_bias.detach()) == pytest.approx(float(model.logit_bias.detach()))
    scale, bias = channel_affine(ckpt.image_spec(), torch.device("cpu"))
    pixels = normalize_pixels(torch.as_tensor(batch["pixels"]), scale, bias, torch.float32)
    ids = torch.as_tensor(pair.pad_texts(batch["ids"], batch["length"])).long()
    ref_inputs = processor(text=CAPTIONS, images=[Image.open(io.BytesIO(p)) for p in pngs], padding="max_length",
                           return_tensors="pt")
    with torch.no_grad():
        ours = objective_for(pair.family.score_function).loss(pair(input_ids=ids, pixel_values=pixels).logits_per_image)
        theirs = model(**ref_inputs, return_loss=True).loss
        same_inputs = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
    assert ours.item() == pytest.approx(same_inputs.item(), rel=1e-5)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-4)  # the processor's pixels and ids agree too


def test_train_projections_trains_the_heads_and_both_scalars(siglip_model_dir):
    learner, _, _ = make_learner(str(siglip_model_dir), train="projections")
    trained = {n for n, p in learner.model.named_parameters() if p.requires_grad}
    assert {"logit_scale", "logit_bias", "text.head.weight", "text.head.bias", "image.head.probe",
            "image.head.mlp.fc2.weight"} <= trained
    assert all(n.startswith(("image.head.", "text.head.")) or n in ("logit_scale", "logit_bias") for n in trained)
    assert select_trained(learner.model, "all") == 0  # nothing more to freeze


class Batches:
    def __init__(self, batches):
        self.batches = batches

    def train(self, epoch, batch_size):
        return iter(self.batches)

    def val(self, batch_size):
        return iter(self.batches[:1])


class KeepLast:
    world_rank = 0

    def __init__(self, folder):
        self.folder, self.metrics = folder, []

    @contextmanager
    def restored(self):
        yield None

    def report(self, metrics, checkpoint_dir):
        import shutil

        self.metrics.append(metrics)
        shutil.copytree(checkpoint_dir, self.folder, dirs_exist_ok=True)


def test_a_short_fine_tune_lowers_the_loss_and_serves_as_trained(siglip, siglip_model_dir, tmp_path):
    """The training loop (run_training, as each Ray Train worker runs it) for a few steps;
    the saved folder is SiglipModel's own layout, read back by serving's Checkpoint and
    scored as SiglipModel scores the saved weights."""
    from transformers import SiglipModel

    from deployments.backends.checkpoint import Checkpoint
    from deployments.backends.torch_backend import TorchBackend
    from deployments.jobs.training import ModelInit, TrainSettings, run_training
    from deployments.preprocess.images import ImageLimits, prepare_image
    from deployments.serving.scoring import Scorer, cosine_matrix

    _, processor, ckpt = siglip
    batch, pngs = pair_batch(ckpt)
    settings = TrainSettings(init=ModelInit(source=str(siglip_model_dir)), steps_per_epoch=8, epochs=1,
                             batch_size=8, lr=1e-3, warmup_fraction=0, device="cpu", threads=1)
    reporter = KeepLast(tmp_path / "tuned")
    learner = run_training(settings, Batches([batch] * 8), reporter, ckpt.image_spec(), device="cpu")
    (metrics,) = reporter.metrics
    assert metrics["last_batch_loss"] < 0.8 * metrics["first_batch_loss"]
    assert metrics["val_loss"] < metrics["first_batch_loss"]
    assert metrics["logit_bias"] == pytest.approx(float(learner.model.logit_bias.detach()))
    assert metrics["logit_bias"] != pytest.approx(ckpt.logit_bias(), abs=1e-4)  # the bias trained

    out = reporter.folder
    source_files = {p.name for p in siglip_model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "spiece.model", "tokenizer_config.json",
            "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    for name in ("spiece.model", "tokenizer_config.json", "preprocessor_config.json") + (
            ("special_tokens_map.json",) if "special_tokens_map.json" in source_files else ()):
        assert (out / name).read_bytes() == (siglip_model_dir / name).read_bytes()
    # config.json as SiglipModel.save_pretrained writes it for the source.
    saved = SiglipModel.from_pretrained(out, dtype=torch.float32).eval()
    SiglipModel.from_pretrained(siglip_model_dir, dtype=torch.float32).save_pretrained(tmp_path / "reference")
    reference_config = json.loads((tmp_path / "reference" / "config.json").read_text())
    assert json.loads((out / "config.json").read_text()) == reference_config
    assert float(saved.logit_bias.detach()) == pytest.approx(metrics["logit_bias"], rel=1e-6)
    assert float(saved.logit_scale.detach().exp()) == pytest.approx(metrics["logit_scale"], rel=1e-6)

    served = Checkpoint.open(str(out))
    assert served.family.name == "siglip" and served.logit_bias() == pytest.approx(metrics["logit_bias"], rel=1e-6)
    image, text = (TorchBackend.load(served, t, device="cpu", dtype="float32") for t in ("image", "text"))
    info = text.info()
    assert (info.score_function, info.logit_bias) == ("sigmoid", pytest.approx(metrics["logit_bias"], rel=1e-6))
    images = image.embed_images(np.stack([prepare_image(p, served.image_spec(), ImageLimits()) for p in pngs[:3]]))
    tok = info.tokenizer.tokenizer()
    from deployments.engine.payloads import pack_tokens

    labels = CAPTIONS[:5]
    packed = pack_tokens([e.ids for e in tok.encode(labels, truncate=True)])
    texts = text.embed_texts(packed.ids, packed.lengths)
    ours = Scorer(info.score_function, info.logit_scale, info.logit_bias)(cosine_matrix(images, texts))
    with torch.no_grad():
        enc = processor(text=labels, images=[Image.open(io.BytesIO(p)) for p in pngs[:3]], padding="max_length",
                        return_tensors="pt")
        expected = saved(**enc).logits_per_image.sigmoid().numpy()
    np.testing.assert_allclose(ours, expected, atol=2e-5)

    # Resuming reads the folder back as serving does: every weight and both scalars return.
    resumed, _, _ = make_learner(str(siglip_model_dir), steps=8)
    resumed.load_state(out)
    expected_state = learner.model.state_dict()
    assert all(torch.equal(v, expected_state[k]) for k, v in resumed.model.state_dict().items())


def test_siglip_temperature_is_not_capped_at_clips_100(siglip_model_dir):
    learner, _, _ = make_learner(str(siglip_model_dir))
    with torch.no_grad():
        learner.model.logit_scale.fill_(math.log(117.0))  # google/siglip-base-patch16-224's
    learner.objective.clamp(learner.model)
    assert float(learner.model.logit_scale.detach().exp()) == pytest.approx(117.0)
    assert objective_for("softmax").max_logit_scale == MAX_LOGIT_SCALE
