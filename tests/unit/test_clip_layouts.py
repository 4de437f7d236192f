"""open_clip's layout and OpenAI's release archives, ResNet and ViT: served towers match
OpenAI's own `clip/model.py` on the same weights, and bad files are refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.helpers import encode, natural_image
from support.openai_clip import (TINY_RESNET, TINY_VIT, reference_embeddings, save_open_clip, save_openai_archive,
                                 tiny_openai_clip)

from deployments.backends.checkpoint import Checkpoint, CheckpointError
from deployments.backends.torch_backend import TorchBackend
from deployments.preprocess.images import ImageLimits, prepare_image

SHAPES = {"resnet": TINY_RESNET, "resnet-96": {**TINY_RESNET, "image_resolution": 96}, "vit": TINY_VIT,
          "vit-48": {**TINY_VIT, "image_resolution": 48, "vision_patch_size": 16}}
TEXTS = ["a photo of a cat", "A DIAGRAM of a Network, drawn in 1999!", "x", "  café   crème brûlée  "]
# Several sizes and aspect ratios, through the router's own decode/resize/crop.
IMAGES = [encode(natural_image(w, h, seed=i), "PNG") for i, (w, h) in enumerate([(80, 60), (50, 130), (97, 97)])]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (OpenAI's model, its open_clip folder, its .pt archive)."""
    root = tmp_path_factory.mktemp("clip-layouts")
    out = {}
    for name, shape in SHAPES.items():
        # fp16-rounded weights, as OpenAI's archives store them: both layouts then hold the same.
        model = tiny_openai_clip(shape, seed=len(out), fp16_weights=True)
        out[name] = (model, save_open_clip(model, shape, root / name), save_openai_archive(model, root / f"{name}.pt"))
    return out


def load(source: Path, tower: str, dtype: str = "float32") -> TorchBackend:
    return TorchBackend.load(Checkpoint.open(str(source)), tower, device="cpu", dtype=dtype, allow_pickle_weights=True)


def text_batch(backend: TorchBackend) -> np.ndarray:
    seqs = [t.ids for t in backend.tokenizer_info.tokenizer().encode(TEXTS, truncate=False)]
    ids = np.zeros((len(seqs), max(map(len, seqs))), dtype=np.int32)  # OpenAI pads with 0
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
    return ids


def pixels(backend: TorchBackend) -> np.ndarray:
    return np.stack([prepare_image(data, backend.image_spec, ImageLimits()) for data in IMAGES])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# Both layouts share everything after reading the weights: the archive at one size per architecture.
@pytest.mark.parametrize("name, layout", [*((n, "open_clip") for n in SHAPES), ("resnet", "openai"), ("vit", "openai")])
def test_towers_match_openai_code(models, name, layout):
    model, folder, archive = models[name]
    source = folder if layout == "open_clip" else archive
    image, text = load(source, "image"), load(source, "text")
    px, ids = pixels(image), text_batch(text)
    assert px.shape[1:3] == (SHAPES[name]["image_resolution"],) * 2
    assert cosines(image.embed_images(px), reference_embeddings(model, "image", px, image.image_spec)).min() >= 0.9999
    assert cosines(text.embed_texts(ids, None), reference_embeddings(model, "text", ids)).min() >= 0.9999
    info = image.info()
    assert info.extra["layout"] == layout and info.extra["architecture"] == name.split("-")[0]
    assert info.embed_dim == SHAPES[name]["embed_dim"]
    assert info.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-3)
    assert image.param_count == sum(p.numel() for p in model.visual.parameters())


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_bfloat16_towers_stay_close(models, name):
    model, folder, _ = models[name]
    image, text = load(folder, "image", "bfloat16"), load(folder, "text", "bfloat16")
    assert image.dtype_name == "bfloat16"
    px, ids = pixels(image), text_batch(text)
    assert cosines(image.embed_images(px), reference_embeddings(model, "image", px, image.image_spec)).min() >= 0.999
    assert cosines(text.embed_texts(ids, None), reference_embeddings(model, "text", ids)).min() >= 0.999


def test_preprocessing_and_tokenizer_come_from_the_layout(models, tmp_path):
    _, folder, archive = models["resnet"]
    spec = Checkpoint.open(str(folder)).image_spec()
    assert (spec.shortest_edge, spec.crop_hw, spec.resample) == (64, (64, 64), 3)
    ckpt = Checkpoint.open(str(archive))
    ckpt.load_weights(allow_pickle=True)
    assert ckpt.image_spec() == spec  # OpenAI's transform: the same
    tok = ckpt.tokenizer_info()
    assert tok.context_length == 77 and (tok.bos_id, tok.eos_id) == (49406, 49407)
    # open_clip's preprocess_cfg: its own mean/std, bilinear, squash (resize to the square)
    other = shutil.copytree(folder, tmp_path / "squash")
    cfg = json.loads((other / "open_clip_config.json").read_text())
    cfg["preprocess_cfg"] = {"mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bilinear", "resize_mode": "squash"}
    (other / "open_clip_config.json").write_text(json.dumps(cfg))
    spec = Checkpoint.open(str(other)).image_spec()
    assert (spec.resize_hw, spec.crop_hw, spec.resample, spec.mean, spec.std) == (
        (64, 64), None, 2, (0.5,) * 3, (0.25,) * 3)


def test_layout_detection_prefers_a_transformers_config(models, model_dir, tmp_path):
    _, folder, _ = models["vit"]
    both = shutil.copytree(model_dir, tmp_path / "both")
    shutil.copyfile(folder / "open_clip_config.json", both / "open_clip_config.json")
    assert Checkpoint.open(str(both)).layout == "transformers"
    # timm's repositories carry a config.json of their own beside open_clip's files.
    timm = shutil.copytree(folder, tmp_path / "timm")
    (timm / "config.json").write_text(json.dumps({"architecture": "resnet50_clip", "num_classes": 0}))
    assert Checkpoint.open(str(timm)).layout == "open_clip"
    with pytest.raises(CheckpointError, match="no config.json .*open_clip_config.json .*\\.pt"):
        Checkpoint.open(str(tmp_path))


def test_pickle_and_torchscript_need_allow_pickle_weights(models, tmp_path):
    model, _, archive = models["resnet"]
    with pytest.raises(CheckpointError, match=r"RN50\.pt.*TorchScript.*allow_pickle_weights: true") as err:
        TorchBackend.load(Checkpoint.open(str(shutil.copyfile(archive, tmp_path / "RN50.pt"))), "image", device="cpu")
    assert "RN50.pt" in str(err.value)
    pickled = save_open_clip(model, TINY_RESNET, tmp_path / "pickled", pickle=True)
    with pytest.raises(CheckpointError, match=r"open_clip_pytorch_model\.bin.*allow_pickle_weights: true"):
        TorchBackend.load(Checkpoint.open(str(pickled)), "image", device="cpu")
    ids = text_batch(load(pickled, "text"))
    assert cosines(load(pickled, "text").embed_texts(ids, None), reference_embeddings(model, "text", ids)).min() >= 0.9999
    # A folder with several archives (like ~/.cache/clip) names them.
    shutil.copyfile(archive, tmp_path / "RN101.pt")
    with pytest.raises(CheckpointError, match="RN101.pt, RN50.pt"):
        Checkpoint.open(str(tmp_path))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model_cfg"]["vision_cfg"].update(width="wide"), r"model_cfg\.vision_cfg\.width"),
    (lambda c: c["model_cfg"]["vision_cfg"].update(layers=[1, 2]), r"model_cfg\.vision_cfg\.layers.*four stages"),
    (lambda c: c["model_cfg"].pop("embed_dim"), r"model_cfg\.embed_dim"),
    (lambda c: c["model_cfg"]["vision_cfg"].update(timm_model_name="resnet50"), r"model_cfg\.vision_cfg\.timm_model_name"),
    (lambda c: c["model_cfg"]["text_cfg"].update(hf_model_name="xlm-roberta-base"), r"text_cfg\.hf_model_name"),
    (lambda c: c["preprocess_cfg"].update(resize_mode="longest"), r"preprocess_cfg\.resize_mode"),
    (lambda c: c.update(model_cfg=[]), r"model_cfg"),
])
def test_a_malformed_open_clip_config_names_the_field(models, tmp_path, edit, message):
    _, folder, _ = models["resnet"]
    bad = shutil.copytree(folder, tmp_path / "bad")
    cfg = json.loads((bad / "open_clip_config.json").read_text())
    edit(cfg)
    (bad / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=f"open_clip_config.json: .*{message}"):
        TorchBackend.load(Checkpoint.open(str(bad)), "image", device="cpu")


def test_weights_that_disagree_with_the_config_are_refused(models, tmp_path):
    _, folder, _ = models["resnet"]
    bad = shutil.copytree(folder, tmp_path / "bad")
    cfg = json.loads((bad / "open_clip_config.json").read_text())
    cfg["model_cfg"]["vision_cfg"]["width"] = 16
    (bad / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="open_clip layout"):
        TorchBackend.load(Checkpoint.open(str(bad)), "image", device="cpu")


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_towers_saved_in_open_clip_layout_load_back_unchanged(models, name, tmp_path):
    """What this project writes (fine-tuned or benchmark ResNets) is open_clip's layout."""
    from deployments.backends.clip_towers import build_tower, save_open_clip

    model, folder, _ = models[name]
    ckpt = Checkpoint.open(str(folder))
    towers = {t: build_tower(ckpt, t) for t in ("image", "text")}
    out = save_open_clip(towers, ckpt.clip_arch, tmp_path / "saved", logit_scale=ckpt.logit_scale())
    again = Checkpoint.open(str(out))
    assert again.clip_arch == ckpt.clip_arch and again.logit_scale() == pytest.approx(ckpt.logit_scale())
    image = load(out, "image")
    px = pixels(image)
    assert cosines(image.embed_images(px), reference_embeddings(model, "image", px, image.image_spec)).min() >= 0.9999



def test_a_hub_download_fetches_only_the_chosen_layout_s_weights():
    from fnmatch import fnmatch

    from deployments.backends.checkpoint import METADATA_FILES, download_patterns

    def fetched(layout, name, **options):
        return any(fnmatch(name, p) for p in download_patterns(layout, TorchBackend.serving_files("image", **options)))

    assert "open_clip_config.json" in METADATA_FILES and "config.json" in METADATA_FILES  # read first, to choose
    assert fetched("open_clip", "open_clip_model.safetensors") and not fetched("open_clip", "model.safetensors")
    assert not fetched("open_clip", "open_clip_pytorch_model.bin")
    assert fetched("open_clip", "open_clip_pytorch_model.bin", allow_pickle_weights=True)
    assert not fetched("open_clip", "pytorch_model.bin", allow_pickle_weights=True)  # timm's image-only copy
    assert fetched("transformers", "model.safetensors") and not fetched("transformers", "open_clip_model.safetensors")
