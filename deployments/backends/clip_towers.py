"""One CLIP tower as a torch module, from any checkpoint layout: the one place that
chooses which module runs a tower. ViT image towers and text towers are transformers'
CLIP modules (a transformers checkpoint loads into them directly, the other layouts by
clip_layouts' key mapping); ResNet image towers are the native ModifiedResNet; SigLIP's
and SigLIP 2's towers (model families `siglip`, `siglip2`) are transformers' SiglipVisionModel
(attention-pooling head) and SiglipTextModel (last position, linear head), whose pooled
outputs are exactly `SiglipModel.get_image_features` / `get_text_features`; MetaCLIP 2's
(`metaclip_2`) are transformers' MetaClip2{Vision,Text}ModelWithProjection: CLIP's modules,
but the text tower pools at the first EOS of the config's `eos_token_id` (XLM-V's `</s>`),
where CLIP's hub configs pool at argmax(ids).

Serving (TorchBackend), ONNX export and fine-tuning all build towers here, so each
architecture has one code path.
"""

from __future__ import annotations

from typing import Any

import torch

from . import clip_layouts as layouts
from .checkpoint import Checkpoint, CheckpointError


def tower_embeddings(module: torch.nn.Module, tower: str, inputs: torch.Tensor) -> torch.Tensor:
    """A tower module's projected (not normalised) embeddings: pixel values or token ids."""
    out = module(pixel_values=inputs) if tower == "image" else module(input_ids=inputs)
    return embeddings_of(out, tower)


def embeddings_of(out: Any, tower: str) -> torch.Tensor:
    """The projected embeddings in a tower module's output (ONNX export reads the hidden
    states beside them from the same output)."""
    if torch.is_tensor(out):  # the native ResNet
        return out
    projected = getattr(out, "image_embeds" if tower == "image" else "text_embeds", None)
    return projected if projected is not None else out.pooler_output  # SigLIP: the heads' output


def tower_dim(checkpoint: Checkpoint, tower: str, module: torch.nn.Module) -> int:
    """The embedding size `tower_embeddings` gives."""
    config = getattr(module, "config", None)  # the native ResNet has none
    if checkpoint.family.towers == "siglip":
        # The image head keeps the width; the text head projects to projection_size (default: the width).
        return int(config.hidden_size if tower == "image" else (config.projection_size or config.hidden_size))
    return int(config.projection_dim if config else checkpoint.config["projection_dim"])


def _transformers_tower_class(checkpoint: Checkpoint, tower: str):
    towers = checkpoint.family.towers
    if towers == "siglip":
        from transformers import SiglipTextModel, SiglipVisionModel

        return SiglipVisionModel if tower == "image" else SiglipTextModel
    if towers == "metaclip_2":
        from transformers import MetaClip2TextModelWithProjection, MetaClip2VisionModelWithProjection

        return MetaClip2VisionModelWithProjection if tower == "image" else MetaClip2TextModelWithProjection
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection if tower == "image" else CLIPTextModelWithProjection


def _hf_tower(tower: str, config: dict[str, Any]) -> torch.nn.Module:
    from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    if tower == "image":
        return CLIPVisionModelWithProjection(CLIPVisionConfig(**config["vision_config"]))
    return CLIPTextModelWithProjection(CLIPTextConfig(**config["text_config"]))


def new_tower(arch: layouts.ClipArch, tower: str) -> torch.nn.Module:
    """The module that runs `tower` of an open_clip/OpenAI architecture, freshly initialised."""
    if tower == "image" and arch.architecture == "resnet":
        from .openai_resnet import ModifiedResNet

        return ModifiedResNet(arch.resnet_spec())
    return _hf_tower(tower, arch.hf_config())


def build_tower(checkpoint: Checkpoint, tower: str, *, dtype: torch.dtype = torch.float32,
                allow_pickle: bool = False, weights: dict[str, Any] | None = None) -> torch.nn.Module:
    """`tower` of a checkpoint, in eval mode, on the CPU. `weights`: the checkpoint's state
    dict when the caller has read it already (open_clip/OpenAI layouts; both towers share it)."""
    if checkpoint.layout == layouts.TRANSFORMERS:
        files = checkpoint.require_safetensors(allow_pickle)
        model_cls = _transformers_tower_class(checkpoint, tower)
        return model_cls.from_pretrained(checkpoint.path, dtype=dtype,
                                         use_safetensors=files[0].suffix == ".safetensors").eval()
    sd = weights if weights is not None else checkpoint.load_weights(allow_pickle)
    arch = checkpoint.clip_arch
    module = new_tower(arch, tower)
    try:
        state = layouts.tower_weights(sd, arch, tower)
    except layouts.LayoutError as exc:
        raise CheckpointError(f"checkpoint {checkpoint.source!r}: {exc}") from None
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape that disagrees with the architecture read
        raise CheckpointError(f"checkpoint {checkpoint.source!r} ({checkpoint.layout} layout): "
                              f"{str(exc).splitlines()[-1].strip()}") from None
    # transformers keeps position ids as a (non-persistent) buffer; nothing else may be absent.
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {checkpoint.source!r} ({checkpoint.layout} layout, {arch.architecture}): the {tower} "
            f"tower's weights do not match its architecture (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return module.to(dtype).eval()


def save_open_clip(towers: dict[str, torch.nn.Module], arch: layouts.ClipArch, out_dir, *,
                   logit_scale: float, preprocess: dict[str, Any] | None = None):
    """Write both towers in open_clip's hub layout (what this project saves for checkpoints
    whose architecture transformers cannot hold, e.g. a fine-tuned ResNet CLIP)."""
    import json
    import math
    from pathlib import Path

    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {}
    for tower, module in towers.items():
        tower_state = {k: v for k, v in module.state_dict().items() if not k.endswith("position_ids")}
        state.update(layouts.openai_weights(tower_state, arch, tower))
    state["logit_scale"] = torch.tensor(math.log(logit_scale))
    save_file({k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
               for k, v in state.items()}, str(out / layouts.OPEN_CLIP_WEIGHTS))
    (out / layouts.OPEN_CLIP_CONFIG).write_text(json.dumps(layouts.open_clip_config(arch, preprocess), indent=2))
    return out
