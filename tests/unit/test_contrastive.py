"""The contrastive objective and its helpers on hand-built embeddings, and the learner
itself, driven step by step without Ray: what each `--train` mode updates (ViT and ResNet,
every checkpoint layout), ResNet BatchNorm statistics, saving, serving and resuming."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deployments.jobs.contrastive import (
    MAX_LOGIT_SCALE,
    caption_groups,
    clamp_temperature,
    contrastive_loss,
    freeze_towers,
    parameter_groups,
    retrieval_accuracy,
    select_trained,
    warmup_cosine,
)


def test_loss_is_clip_symmetric_infonce_for_unique_captions():
    torch.manual_seed(0)
    logits = torch.randn(6, 6) * 3
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    assert torch.allclose(contrastive_loss(logits), expected)
    assert torch.allclose(contrastive_loss(logits, torch.arange(6) * 7), expected)  # all groups distinct


def test_loss_rewards_alignment_and_treats_repeated_captions_as_positives():
    aligned = torch.eye(4) * 10
    assert contrastive_loss(aligned) < contrastive_loss(torch.zeros(4, 4)) < contrastive_loss(-aligned)
    # Items 0 and 1 share a caption: image 0 matching text 1 is not an error ...
    groups = torch.tensor([5, 5, 6, 7])
    swapped = aligned[[1, 0, 2, 3]]
    assert contrastive_loss(swapped, groups) < contrastive_loss(swapped) / 1.5
    # ... and the gradient no longer pushes the two repeats apart.
    cross = aligned.clone()
    cross[0, 1] = cross[1, 0] = 10
    for use_groups, pushed_apart in ((False, True), (True, False)):
        logits = cross.clone().requires_grad_(True)
        contrastive_loss(logits, groups if use_groups else None).backward()
        assert (float(logits.grad[0, 1]) > 1e-3) is pushed_apart


def test_caption_groups_are_stable_and_ignore_case_and_spacing():
    a, b, c = caption_groups(["A red  circle", "a red circle", "a blue square"])
    assert a == b != c
    assert caption_groups(["a red circle"])[0] == a  # same id in another batch / process
    assert caption_groups(["x"]).dtype == np.int64


def test_retrieval_accuracy_counts_distinct_captions():
    text = torch.eye(3)
    groups = torch.tensor([1, 1, 2, 3])
    texts = text[[0, 0, 1, 2]]
    perfect = retrieval_accuracy(texts.clone(), texts, groups)
    assert perfect == {"i2t_top1": 1.0, "t2i_top1": 1.0}
    swapped = text[[0, 0, 2, 1]]  # images 2 and 3 look like each other's caption
    assert retrieval_accuracy(swapped, texts, groups) == {"i2t_top1": 0.5, "t2i_top1": pytest.approx(1 / 3)}


def test_schedule_warms_up_then_decays_to_zero():
    f = warmup_cosine(total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_freezing_a_tower_and_decay_groups(model_dir):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(model_dir)
    frozen = freeze_towers(model, ["image"])
    assert frozen == sum(p.numel() for n, p in model.named_parameters() if n.startswith(("vision_model.", "visual_projection.")))
    trainable = {id(p) for g in parameter_groups(model, 0.1) for p in g["params"]}
    assert all(id(p) not in trainable for p in model.vision_model.parameters())
    decay, no_decay = parameter_groups(model, 0.1)
    assert any(p is model.text_projection.weight for p in decay["params"])
    assert any(p is model.logit_scale for p in no_decay["params"])
    assert not any(p is model.text_model.embeddings.token_embedding.weight for p in decay["params"])
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    clamp_temperature(model)
    assert float(model.logit_scale.detach()) == pytest.approx(MAX_LOGIT_SCALE) and math.exp(MAX_LOGIT_SCALE) == pytest.approx(100)


def test_train_modes_on_a_clip_model(model_dir):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(model_dir)
    select_trained(model, "projections")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "visual_projection.weight", "text_projection.weight", "logit_scale"}
    model = CLIPModel.from_pretrained(model_dir)
    select_trained(model, "text")
    assert not any(p.requires_grad for p in model.vision_model.parameters())
    assert all(p.requires_grad for p in [*model.text_model.parameters(), model.visual_projection.weight])
    with pytest.raises(ValueError, match="train mode"):
        select_trained(model, "image")


# ---------------------------------------------------------------- the learner, step by step

TRAINED = {  # what `--train projections` may change, by hand (not the code's own prefix table)
    "vit": {"image.visual_projection.weight", "text.text_projection.weight", "logit_scale"},
    "resnet": {"image.attnpool.c_proj.weight", "image.attnpool.c_proj.bias", "text.text_projection.weight",
               "logit_scale"},
}
CAPTIONS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]


@pytest.fixture(scope="module")
def sources(model_dir, tmp_path_factory):
    """name -> (source, architecture): a transformers folder, a tiny ResNet in open_clip's
    layout and a tiny ViT as an OpenAI .pt archive (both built with OpenAI's code)."""
    from support.openai_clip import TINY_RESNET, TINY_VIT, save_open_clip, save_openai_archive, tiny_openai_clip

    root = tmp_path_factory.mktemp("finetune-sources")
    return {
        "transformers": (str(model_dir), "vit"),
        "resnet": (str(save_open_clip(tiny_openai_clip(TINY_RESNET, seed=3), TINY_RESNET, root / "rn",
                                      mean=[0.5] * 3, std=[0.25] * 3)), "resnet"),
        "openai-vit": (str(save_openai_archive(tiny_openai_clip(TINY_VIT, seed=4), root / "ViT-tiny.pt")), "vit"),
    }


def make_learner(source: str, steps: int = 3, **train):
    from deployments.jobs.clip_pair import open_source
    from deployments.jobs.training import ContrastiveLearner, ModelInit, TrainSettings, load_initial_model

    init = ModelInit(source=source, allow_pickle_weights=source.endswith(".pt"))
    settings = TrainSettings(init=init, steps_per_epoch=steps, epochs=1, batch_size=4, lr=1e-2,
                             warmup_fraction=0, device="cpu", **train)
    model, assets = load_initial_model(init, settings.seed)
    ckpt = open_source(source, allow_pickle=init.allow_pickle_weights)
    learner = ContrastiveLearner(model, settings, torch.device("cpu"), ckpt.image_spec())
    return learner, ckpt, assets


def batches(ckpt, n: int, size: int = 4, seed: int = 0):
    from dataclasses import asdict

    from deployments.jobs.datasets import PairEncoder

    encoder = PairEncoder(ckpt.image_spec().to_dict(), asdict(ckpt.tokenizer_info()))
    rng = np.random.default_rng(seed)
    h, w = ckpt.image_spec().input_hw
    for _ in range(n):
        yield encoder.encode([rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(size)],
                             [CAPTIONS[i] for i in rng.integers(0, len(CAPTIONS), size)])


def train_steps(learner, ckpt, n: int = 3) -> dict[str, torch.Tensor]:
    """Train n steps; the state dict (buffers included) from before them."""
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    losses = [learner.train_batch(b) for b in batches(ckpt, n)]
    assert all(math.isfinite(x) for x in losses)
    return before


def changed(learner, before) -> set[str]:
    return {k for k, v in learner.model.state_dict().items() if not torch.equal(v, before[k])}


@pytest.mark.parametrize("name", ["transformers", "resnet", "openai-vit"])
def test_train_projections_updates_only_the_projections_and_temperature(sources, name):
    source, arch = sources[name]
    learner, ckpt, _ = make_learner(source, train="projections")
    assert {n for n, p in learner.model.named_parameters() if p.requires_grad} == TRAINED[arch]
    before = train_steps(learner, ckpt)
    # Everything else, BatchNorm statistics included, is bit-identical.
    assert changed(learner, before) == TRAINED[arch]


def test_train_text_on_a_resnet_keeps_the_image_tower_and_its_batchnorm(sources):
    learner, ckpt, _ = make_learner(sources["resnet"][0], train="text")
    before = train_steps(learner, ckpt)
    text = {k for k in before if k.startswith("text.")}
    assert any(k.endswith("running_mean") for k in before)
    assert changed(learner, before) == text | TRAINED["resnet"]


def test_a_full_resnet_fine_tune_keeps_batchnorm_statistics(sources):
    learner, ckpt, _ = make_learner(sources["resnet"][0])
    before = train_steps(learner, ckpt)
    stats = {k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert stats and not stats & changed(learner, before)
    assert {"image.conv1.weight", "image.bn1.weight", "image.layer4.0.conv3.weight"} <= changed(learner, before)


def test_a_fine_tuned_resnet_saves_in_open_clip_layout_and_serves_as_trained(sources, tmp_path):
    from deployments.backends.checkpoint import Checkpoint
    from deployments.backends.clip_towers import tower_embeddings
    from deployments.backends.torch_backend import TorchBackend
    from deployments.backends.torch_pixels import channel_affine, normalize_pixels

    learner, ckpt, assets = make_learner(sources["resnet"][0])
    train_steps(learner, ckpt)
    out = learner.save(tmp_path / "tuned", assets)
    assert {"open_clip_config.json", "open_clip_model.safetensors"} <= {p.name for p in out.iterdir()}
    assert not (out / "config.json").exists()
    saved = Checkpoint.open(str(out))
    assert (saved.layout, saved.architecture, saved.clip_arch) == ("open_clip", "resnet", ckpt.clip_arch)
    assert saved.image_spec() == ckpt.image_spec()  # the source's own mean/std travelled
    assert saved.logit_scale() == pytest.approx(float(learner.model.logit_scale.detach().exp()), rel=1e-6)

    batch = next(batches(ckpt, 1, size=3, seed=9))
    model = learner.model.eval()
    with torch.no_grad():
        scale, bias = channel_affine(ckpt.image_spec(), torch.device("cpu"))
        pixels = normalize_pixels(torch.as_tensor(batch["pixels"]), scale, bias, torch.float32)
        ids = torch.as_tensor(batch["ids"][:, : int(batch["length"].max())]).long()
        trained_image = F.normalize(tower_embeddings(model.image, "image", pixels), dim=-1).numpy()
        trained_text = F.normalize(tower_embeddings(model.text, "text", ids), dim=-1).numpy()
    image = TorchBackend.load(saved, "image", device="cpu", dtype="float32")
    text = TorchBackend.load(saved, "text", device="cpu", dtype="float32")
    served_image, served_text = image.embed_images(batch["pixels"]), text.embed_texts(ids.numpy(), None)
    assert (served_image * trained_image).sum(-1).min() >= 0.9999
    assert (served_text * trained_text).sum(-1).min() >= 0.9999
    source = TorchBackend.load(ckpt, "image", device="cpu", dtype="float32")
    assert (source.embed_images(batch["pixels"]) * served_image).sum(-1).min() < 0.9999  # it did train


@pytest.mark.parametrize("name", ["transformers", "resnet"])
def test_resuming_restores_weights_statistics_and_optimizer(sources, name, tmp_path):
    source, arch = sources[name]
    learner, ckpt, assets = make_learner(source, train="text")
    train_steps(learner, ckpt)
    learner.epochs_done = 1
    learner.save(tmp_path / "ckpt", assets)
    resumed, _, _ = make_learner(source, train="text")
    resumed.load_state(tmp_path / "ckpt")
    expected = learner.model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in resumed.model.state_dict().items())
    assert (resumed.step, resumed.epochs_done) == (3, 1)
    # One more step from either gives the same weights: optimizer and schedule came back too.
    batch = next(batches(ckpt, 1, seed=5))
    learner.train_batch(batch)
    resumed.train_batch(batch)
    expected = learner.model.state_dict()
    assert all(torch.allclose(v, expected[k], atol=1e-6) for k, v in resumed.model.state_dict().items())
    # The optimizer's moments belong to the parameters the run trained: other settings are refused.
    other, _, _ = make_learner(source, train="projections")
    with pytest.raises(RuntimeError, match="--train, --freeze"):
        other.load_state(tmp_path / "ckpt")


def test_a_transformers_source_saves_exactly_as_clip_model_does(model_dir, tmp_path):
    """The two-tower model saves the same Hugging Face folder CLIPModel.save_pretrained does."""
    from safetensors.torch import load_file
    from transformers import CLIPModel

    learner, _, assets = make_learner(str(model_dir), train="projections")
    out = learner.save(tmp_path / "tuned", assets)
    CLIPModel.from_pretrained(model_dir, dtype=torch.float32).save_pretrained(tmp_path / "reference")
    assert (out / "config.json").read_text() == (tmp_path / "reference" / "config.json").read_text()
    ours, reference = load_file(out / "model.safetensors"), load_file(tmp_path / "reference" / "model.safetensors")
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)
    assert (out / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()


def test_a_model_from_a_config_is_clip_models_own_draw(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from deployments.checkpoint_builder import clip_config_dict
    from deployments.jobs.clip_pair import pair_from_config

    config = clip_config_dict(hidden_size=32, layers=2, heads=2, image_size=32, patch_size=8, projection_dim=16)
    pair = pair_from_config(config, seed=7).eval()
    torch.manual_seed(7)
    clip = CLIPModel(CLIPConfig(**config)).eval()
    pixels, ids = torch.randn(3, 3, 32, 32), torch.tensor([[49406, 320, 1125, 49407]] * 3)
    with torch.no_grad():
        assert torch.allclose(pair(input_ids=ids, pixel_values=pixels).logits_per_image,
                              clip(input_ids=ids, pixel_values=pixels).logits_per_image, atol=1e-5)


def test_pickle_sources_need_consent_and_modes_must_agree(sources):
    from pydantic import ValidationError

    from deployments.backends.checkpoint import CheckpointError
    from deployments.jobs.clip_pair import open_source
    from deployments.jobs.training import ModelInit, TrainSettings

    with pytest.raises(CheckpointError, match=r"ViT-tiny\.pt.*--allow-pickle-weights"):
        open_source(sources["openai-vit"][0])
    with pytest.raises(ValidationError, match="freeze"):
        TrainSettings(init=ModelInit(source="x"), steps_per_epoch=1, train="text", freeze=["text"])


def test_train_projections_from_the_command_line_on_a_resnet_exports_open_clip_layout(sources, tmp_path):
    """`finetune --from-checkpoint RESNET --train projections`: the options the command line
    builds train only the attention pool's output projection, the text projection and the
    temperature, and the exported folder (what the Ray Train job writes to --output, with
    the same export) is open_clip's layout again, without the resume state."""
    from safetensors.torch import load_file

    from deployments.jobs.clip_pair import open_source
    from deployments.jobs.finetune import export_checkpoint
    from deployments.jobs.training import ContrastiveLearner, TrainSettings, load_initial_model
    from deployments.tools.finetune import build_parser, options_from_args

    source = sources["resnet"][0]
    opts = options_from_args(build_parser().parse_args([
        str(tmp_path / "pairs.parquet"), "--output", str(tmp_path / "tuned"), "--from-checkpoint", source,
        "--train", "projections", "--epochs", "1", "--batch-size", "4", "--lr", "3e-3", "--threads", "1"]))
    settings = TrainSettings.model_validate({**opts.train, "init": opts.init, "steps_per_epoch": 3})
    assert settings.train == "projections" and opts.init.source == source
    model, assets = load_initial_model(settings.init, settings.seed)
    ckpt = open_source(source)
    learner = ContrastiveLearner(model, settings, torch.device("cpu"), ckpt.image_spec())
    train_steps(learner, ckpt)
    out = export_checkpoint(learner.save(tmp_path / "ray-checkpoint", assets), Path(opts.output))

    from deployments.jobs.training import TRAIN_REPORT, TRAIN_STATE

    names = {p.name for p in out.iterdir()}
    assert {"open_clip_model.safetensors", "open_clip_config.json", TRAIN_REPORT} <= names
    assert not names & {"config.json", "model.safetensors", TRAIN_STATE}
    before = load_file(Path(source) / "open_clip_model.safetensors")
    after = load_file(out / "open_clip_model.safetensors")
    assert after.keys() == before.keys()
    assert {k for k in before if not torch.equal(before[k], after[k])} == {
        "visual.attnpool.c_proj.weight", "visual.attnpool.c_proj.bias", "text_projection", "logit_scale"}
