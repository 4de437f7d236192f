"""OpenAI's own CLIP code (`clip/model.py` from the clip-anytorch wheel) as the reference,
and tiny random models built with it, saved in open_clip's hub layout and as TorchScript
archives like OpenAI's release files.

clip-anytorch is installed with --no-deps (scripts/install.sh): its dependencies would
replace the pinned torch. Only model.py is loaded, by path, because the package's __init__
imports torchvision. A missing install fails the tests that need it rather than skipping
them: the reference is what they are for."""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np


INSTALL = "pip install --no-deps clip-anytorch==2.6.0"


@lru_cache(maxsize=1)
def openai_clip_module() -> ModuleType:
    """`clip/model.py` loaded by path: the package's __init__ imports torchvision, which does
    not import against this project's CPU torch wheel (find_spec does not run __init__)."""
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"OpenAI's CLIP code is not installed: {INSTALL} (scripts/install.sh does)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model.py"
    module_spec = importlib.util.spec_from_file_location("openai_clip_model", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


# Tiny shapes OpenAI's CLIP class accepts (it fixes head width at 64).
TINY_RESNET = dict(embed_dim=32, image_resolution=64, vision_layers=(1, 2, 1, 1), vision_width=8,
                   vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
                   transformer_heads=1, transformer_layers=2)
TINY_VIT = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)


def tiny_openai_clip(shape: dict, seed: int = 0, fp16_weights: bool = False):
    """OpenAI's CLIP with random weights, BatchNorm statistics and affine parameters
    randomised (eval-mode BatchNorm is then not the identity), logit_scale not ln(1/0.07).
    `fp16_weights`: rounded as OpenAI's release files store them (still run in float32)."""
    import torch

    torch.manual_seed(seed)
    model = openai_clip_module().CLIP(**shape)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
        model.logit_scale.fill_(3.2)
        for name, p in model.named_parameters():
            if p.dim() == 1 and "bn" not in name and "ln" not in name and name.endswith("bias"):
                p.normal_(0, 0.02)
    if fp16_weights:
        openai_clip_module().convert_weights(model)
        model.float()
    return model.eval()


def open_clip_config(shape: dict, quick_gelu: bool = True, **preprocess) -> dict:
    """open_clip_config.json for a model of `shape` (open_clip's hub spelling)."""
    layers = shape["vision_layers"]
    vision = {"image_size": shape["image_resolution"], "layers": list(layers) if isinstance(layers, tuple) else layers,
              "width": shape["vision_width"]}
    if shape["vision_patch_size"]:
        vision["patch_size"] = shape["vision_patch_size"]
    else:
        vision["patch_size"] = None
    text = {"context_length": shape["context_length"], "vocab_size": shape["vocab_size"],
            "width": shape["transformer_width"], "heads": shape["transformer_heads"],
            "layers": shape["transformer_layers"]}
    from deployments.backends.clip_layouts import OPENAI_MEAN, OPENAI_STD

    return {"model_cfg": {"embed_dim": shape["embed_dim"], "quick_gelu": quick_gelu, "vision_cfg": vision,
                          "text_cfg": text},
            "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), **preprocess}}


def save_open_clip(model, shape: dict, folder: Path, *, pickle: bool = False, **preprocess) -> Path:
    """open_clip's hub layout: open_clip_config.json + open_clip_model.safetensors (or the
    pickle file only)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(open_clip_config(shape, **preprocess), indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if pickle:
        torch.save(state, folder / "open_clip_pytorch_model.bin")
    else:
        save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


def save_openai_archive(model, path: Path) -> Path:
    """A TorchScript archive like OpenAI's RN50.pt: the traced model, fp16 weights, and the
    three size attributes OpenAI's build_model drops."""
    import copy
    import warnings

    import torch

    traced_from = copy.deepcopy(model)
    for key, value in (("input_resolution", traced_from.visual.input_resolution),
                       ("context_length", traced_from.context_length), ("vocab_size", traced_from.vocab_size)):
        if hasattr(traced_from, key):
            delattr(traced_from, key)
        traced_from.register_buffer(key, torch.tensor(value))
    context_length = int(traced_from.context_length)
    openai_clip_module().convert_weights(traced_from)
    traced_from.float()  # trace in float32 (CPU); the stored weights are rounded to fp16 below
    size = traced_from.visual.input_resolution
    example = (torch.zeros(1, 3, size, size), torch.zeros(1, context_length, dtype=torch.long))
    with torch.no_grad(), warnings.catch_warnings():
        # OpenAI's attention asserts on shapes, which the tracer reports as constants: they are.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(traced_from, example, check_trace=False)
    with torch.no_grad():  # OpenAI's convert_weights: convolutions, linears and projections to fp16
        for name, p in traced.named_parameters():
            if not any(part in name for part in ("bn", "ln_", "downsample.1", "logit_scale")):
                p.data = p.data.half()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path))
    return path


def reference_embeddings(model, tower: str, inputs: np.ndarray, spec=None) -> np.ndarray:
    """OpenAI's encode_image/encode_text, L2-normalised: uint8 NHWC pixels (normalised with
    the checkpoint's image spec as OpenAI's transform does) or padded int token ids."""
    import torch

    with torch.no_grad():
        if tower == "image":
            scale, bias = spec.channel_affine()
            x = torch.from_numpy(inputs).permute(0, 3, 1, 2).float()
            x = x * torch.tensor(scale).view(1, 3, 1, 1) + torch.tensor(bias).view(1, 3, 1, 1)
            out = model.encode_image(x)
        else:
            out = model.encode_text(torch.from_numpy(inputs).long())
    return torch.nn.functional.normalize(out.float(), dim=-1).numpy()
