"""The CLIP checkpoint layouts besides transformers': open_clip's hub layout and OpenAI's
release archives. Both name their weights as OpenAI's `clip/model.py` does; this module
reads what architecture they hold and maps the weights onto the modules that run them:
ViT image towers and every text tower run as transformers' CLIP modules (one code path per
architecture), ResNet image towers natively (`openai_resnet.py`).

- transformers: `config.json` (model_type clip) + `model.safetensors`.
- open_clip: `open_clip_config.json` (model_cfg, preprocess_cfg) + `open_clip_model.safetensors`
  (or `open_clip_pytorch_model.bin`, pickle).
- openai: `RN50.pt` ... `ViT-L-14-336px.pt`, TorchScript archives (pickle inside); the
  architecture comes from the weights' shapes, as OpenAI's `build_model` infers it.

A folder is read as transformers when its config.json is a CLIP config (repositories such
as laion's carry both layouts; transformers' is the one this project has always served),
else as open_clip, else as an OpenAI archive. timm's repositories carry a config.json of
their own (no model_type), which is why the test is the model type, not the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

TRANSFORMERS, OPEN_CLIP, OPENAI = "transformers", "open_clip", "openai"
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
OPEN_CLIP_PICKLE = "open_clip_pytorch_model.bin"
# transformers model types this layout reader treats as CLIP checkpoints.
CLIP_MODEL_TYPES = {"clip"}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class LayoutError(ValueError):
    """A checkpoint's files that do not describe a model this project can run."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LayoutError(f"{path.name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LayoutError(f"{path.name}: expected a JSON object")
    return data


def openai_archives(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.pt") if p.is_file())


def detect_layout(folder: Path) -> str | None:
    """Which layout a folder holds (see the module docstring), or None."""
    config = folder / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return TRANSFORMERS  # let the transformers reader name the problem
        if not isinstance(data, dict) or data.get("model_type") in CLIP_MODEL_TYPES or "text_config" in data \
                or not (folder / OPEN_CLIP_CONFIG).is_file():
            return TRANSFORMERS
    if (folder / OPEN_CLIP_CONFIG).is_file():
        return OPEN_CLIP
    if openai_archives(folder):
        return OPENAI
    return None


@dataclass(frozen=True)
class ClipArch:
    """A CLIP model as OpenAI's and open_clip's code describe it."""

    embed_dim: int
    image_size: int
    vision_layers: int | tuple[int, int, int, int]  # int: ViT depth; 4-tuple: ResNet stages
    vision_width: int
    vision_heads: int
    patch_size: int | None
    context_length: int
    vocab_size: int
    text_width: int
    text_heads: int
    text_layers: int
    quick_gelu: bool
    vision_mlp_ratio: float = 4.0
    text_mlp_ratio: float = 4.0

    @property
    def architecture(self) -> str:
        return "vit" if isinstance(self.vision_layers, int) else "resnet"

    def catalogue_arch(self):
        """This shape as the catalogue describes shapes (deployments.catalogue.Architecture)."""
        from ..catalogue import resnet, vit

        act = "quick_gelu" if self.quick_gelu else "gelu"
        text = (self.text_width, self.text_layers, self.text_heads)
        common = {"context_length": self.context_length, "vocab_size": self.vocab_size}
        if self.architecture == "resnet":
            return resnet(self.embed_dim, self.image_size, self.vision_width, tuple(self.vision_layers), text, act,
                          **common)
        return vit(self.embed_dim, self.image_size, self.patch_size,
                   (self.vision_width, self.vision_layers, self.vision_heads), text, act, **common)

    @classmethod
    def of(cls, arch: Any) -> ClipArch:
        """A catalogue entry's Architecture (deployments.catalogue) as a ClipArch."""
        (width, layers, heads), (text_width, text_layers, text_heads) = arch.vision, arch.text
        return cls(embed_dim=arch.embed_dim, image_size=arch.image_size, vision_layers=layers, vision_width=width,
                   vision_heads=heads, patch_size=arch.patch_size, context_length=arch.context_length,
                   vocab_size=arch.vocab_size, text_width=text_width, text_heads=text_heads,
                   text_layers=text_layers, quick_gelu=arch.hidden_act == "quick_gelu")

    def resnet_spec(self):
        from .openai_resnet import ResNetSpec

        return ResNetSpec(tuple(self.vision_layers), self.vision_width, self.image_size, self.embed_dim,
                          self.vision_heads)

    def hf_config(self) -> dict[str, Any]:
        """A transformers CLIPConfig dict (what `Checkpoint.config` holds for these layouts);
        a ResNet's vision_config is this project's own description of it."""
        act = "quick_gelu" if self.quick_gelu else "gelu"
        text = {
            "vocab_size": self.vocab_size, "hidden_size": self.text_width,
            "intermediate_size": int(self.text_width * self.text_mlp_ratio),
            "num_hidden_layers": self.text_layers, "num_attention_heads": self.text_heads,
            "max_position_embeddings": self.context_length, "projection_dim": self.embed_dim,
            # OpenAI pools at argmax(ids), the EOS id being the vocabulary's largest:
            # transformers pools at the first EOS, which is the same position.
            "bos_token_id": self.vocab_size - 2, "eos_token_id": self.vocab_size - 1, "pad_token_id": 0,
            "hidden_act": act, "layer_norm_eps": 1e-5,
        }
        if self.architecture == "vit":
            vision = {
                "hidden_size": self.vision_width, "intermediate_size": int(self.vision_width * self.vision_mlp_ratio),
                "num_hidden_layers": self.vision_layers, "num_attention_heads": self.vision_heads,
                "image_size": self.image_size, "patch_size": self.patch_size, "projection_dim": self.embed_dim,
                "hidden_act": act, "layer_norm_eps": 1e-5,
            }
        else:
            vision = {"architecture": "resnet", "layers": list(self.vision_layers), "width": self.vision_width,
                      "heads": self.vision_heads, "image_size": self.image_size, "projection_dim": self.embed_dim}
        return {"model_type": "clip", "architecture": self.architecture, "projection_dim": self.embed_dim,
                "text_config": text, "vision_config": vision}


# --- open_clip's open_clip_config.json ------------------------------------------------

class _Cfg(BaseModel):
    # open_clip configs carry many more keys (training-only ones among them); the ones that
    # change the model and that this reader does not implement are refused by name below.
    model_config = ConfigDict(extra="allow")


class _VisionCfg(_Cfg):
    layers: int | list[int] = Field(12)
    width: int = Field(768, gt=0)
    head_width: int = Field(64, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    patch_size: int | None = Field(16, gt=0)
    image_size: int | list[int] = Field(224)


class _TextCfg(_Cfg):
    context_length: int = Field(77, gt=1)
    vocab_size: int = Field(49408, gt=2)
    width: int = Field(512, gt=0)
    heads: int = Field(8, gt=0)
    layers: int = Field(12, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)


class _ModelCfg(_Cfg):
    embed_dim: int = Field(gt=0)
    quick_gelu: bool = False
    vision_cfg: _VisionCfg
    text_cfg: _TextCfg


class _PreprocessCfg(_Cfg):
    mean: list[float] = Field(default_factory=lambda: list(OPENAI_MEAN), min_length=3, max_length=3)
    std: list[float] = Field(default_factory=lambda: list(OPENAI_STD), min_length=3, max_length=3)
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"


class _OpenClipFile(_Cfg):
    model_cfg: _ModelCfg
    preprocess_cfg: _PreprocessCfg = Field(default_factory=_PreprocessCfg)


# (section, key, the value open_clip's own default gives; anything else is refused)
_UNSUPPORTED = [
    ("vision_cfg", "timm_model_name", None), ("vision_cfg", "attentional_pool", False),
    ("vision_cfg", "global_average_pool", False), ("vision_cfg", "no_ln_pre", False),
    ("vision_cfg", "final_ln_after_pool", False), ("vision_cfg", "pool_type", "tok"),
    ("vision_cfg", "output_tokens", False), ("vision_cfg", "ls_init_value", None),
    ("vision_cfg", "pos_embed_type", "learnable"), ("vision_cfg", "act_kwargs", None),
    ("vision_cfg", "norm_kwargs", None),
    ("text_cfg", "hf_model_name", None), ("text_cfg", "hf_tokenizer_name", None),
    ("text_cfg", "pool_type", "argmax"), ("text_cfg", "proj_bias", False), ("text_cfg", "no_causal_mask", False),
    ("text_cfg", "ls_init_value", None), ("text_cfg", "embed_cls", False),
    ("text_cfg", "act_kwargs", None), ("text_cfg", "norm_kwargs", None),
    ("model_cfg", "init_logit_bias", None),
]
_INTERPOLATION = {"bicubic": 3, "bilinear": 2}


@dataclass(frozen=True)
class OpenClipModel:
    arch: ClipArch
    preprocessor: dict[str, Any]  # transformers preprocessor_config.json spelling


def read_open_clip_config(path: Path) -> OpenClipModel:
    """Parse open_clip_config.json; errors name the file and the field."""
    return parse_open_clip_config(_read_json(path), path.name)


def parse_open_clip_config(data: Any, name: str = OPEN_CLIP_CONFIG) -> OpenClipModel:
    """open_clip_config.json's content -> the model it describes; LayoutError names the field."""
    if not isinstance(data, dict):
        raise LayoutError(f"{name}: expected a JSON object")
    try:
        cfg = _OpenClipFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise LayoutError(f"{name}: {field}: {first['msg']}") from None
    model, vision, text, pre = cfg.model_cfg, cfg.model_cfg.vision_cfg, cfg.model_cfg.text_cfg, cfg.preprocess_cfg
    sections = {"vision_cfg": vision, "text_cfg": text, "model_cfg": model}
    for section, key, default in _UNSUPPORTED:
        value = (sections[section].model_extra or {}).get(key, default)
        if value != default:
            where = key if section == "model_cfg" else f"{section}.{key}"
            raise LayoutError(f"{name}: model_cfg.{where} = {value!r} is not supported by this server "
                              f"(only open_clip's default, {default!r})")
    if isinstance(vision.image_size, list):
        if len(vision.image_size) != 2 or vision.image_size[0] != vision.image_size[1]:
            raise LayoutError(f"{name}: model_cfg.vision_cfg.image_size: only square sizes are supported")
    image_size = vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0]
    if isinstance(vision.layers, list):
        if len(vision.layers) != 4 or any(n < 1 for n in vision.layers):
            raise LayoutError(f"{name}: model_cfg.vision_cfg.layers: a ResNet has four stages, got "
                              f"{vision.layers!r}")
        layers: int | tuple = tuple(vision.layers)
        heads, patch = vision.width * 32 // vision.head_width, None
        if image_size % 32:
            raise LayoutError(f"{name}: model_cfg.vision_cfg.image_size must be a multiple of 32 for a ResNet")
    else:
        if not vision.patch_size:
            raise LayoutError(f"{name}: model_cfg.vision_cfg.patch_size is required for a ViT (layers is an int)")
        layers, heads, patch = vision.layers, vision.width // vision.head_width, vision.patch_size
    if pre.interpolation not in _INTERPOLATION:
        raise LayoutError(f"{name}: preprocess_cfg.interpolation {pre.interpolation!r}: expected one of "
                          f"{sorted(_INTERPOLATION)}")
    if pre.resize_mode not in ("shortest", "squash"):
        raise LayoutError(f"{name}: preprocess_cfg.resize_mode {pre.resize_mode!r}: expected 'shortest' "
                          "(resize the short side, centre crop) or 'squash' (resize to the square)")
    arch = ClipArch(
        embed_dim=model.embed_dim, image_size=image_size, vision_layers=layers, vision_width=vision.width,
        vision_heads=heads, patch_size=patch, context_length=text.context_length, vocab_size=text.vocab_size,
        text_width=text.width, text_heads=text.heads, text_layers=text.layers, quick_gelu=model.quick_gelu,
        vision_mlp_ratio=vision.mlp_ratio, text_mlp_ratio=text.mlp_ratio)
    return OpenClipModel(arch, preprocessor(image_size, pre.mean, pre.std, _INTERPOLATION[pre.interpolation],
                                            squash=pre.resize_mode == "squash"))


def preprocessor(image_size: int, mean=OPENAI_MEAN, std=OPENAI_STD, resample: int = 3,
                 squash: bool = False) -> dict[str, Any]:
    """open_clip's/OpenAI's image transform in preprocessor_config.json's spelling:
    'shortest' resizes the short side and centre-crops; 'squash' resizes to the square."""
    size = {"height": image_size, "width": image_size} if squash else {"shortest_edge": image_size}
    return {"size": size, "do_center_crop": not squash, "crop_size": {"height": image_size, "width": image_size},
            "image_mean": list(mean), "image_std": list(std), "resample": resample}


# --- OpenAI's state dict ---------------------------------------------------------------

def arch_from_state_dict(sd: dict[str, Any], quick_gelu: bool = True) -> ClipArch:
    """The architecture as OpenAI's `build_model` infers it from the weights' shapes."""
    try:
        if "visual.proj" in sd:
            width = sd["visual.conv1.weight"].shape[0]
            layers: int | tuple = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
            patch = sd["visual.conv1.weight"].shape[-1]
            grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            image_size, heads = patch * grid, width // 64
        else:
            layers = tuple(len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4))
            width = sd["visual.layer1.0.conv1.weight"].shape[0]
            grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
            patch, image_size, heads = None, grid * 32, width * 32 // 64
        text_width = sd["ln_final.weight"].shape[0]
        return ClipArch(
            embed_dim=sd["text_projection"].shape[1], image_size=image_size, vision_layers=layers,
            vision_width=width, vision_heads=heads, patch_size=patch,
            context_length=sd["positional_embedding"].shape[0], vocab_size=sd["token_embedding.weight"].shape[0],
            text_width=text_width, text_heads=text_width // 64,
            text_layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
            quick_gelu=quick_gelu)
    except KeyError as exc:
        raise LayoutError(f"the weights are not a CLIP model in OpenAI's naming (no {exc.args[0]!r})") from None


# OpenAI's names -> transformers' names: per residual block (besides the fused q/k/v
# projection), and the tower's other weights (`True`: stored transposed, a matrix that
# OpenAI multiplies from the right and transformers keeps as a Linear).
_BLOCK_PAIRS = [("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]
_TOWER_KEYS = {
    "text": ("transformer.resblocks", "text_model.encoder.layers", [
        ("token_embedding.weight", "text_model.embeddings.token_embedding.weight", False),
        ("positional_embedding", "text_model.embeddings.position_embedding.weight", False),
        ("ln_final.weight", "text_model.final_layer_norm.weight", False),
        ("ln_final.bias", "text_model.final_layer_norm.bias", False),
        ("text_projection", "text_projection.weight", True)]),
    "image": ("visual.transformer.resblocks", "vision_model.encoder.layers", [
        ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight", False),
        ("visual.class_embedding", "vision_model.embeddings.class_embedding", False),
        ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight", False),
        ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight", False),
        ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias", False),
        ("visual.ln_post.weight", "vision_model.post_layernorm.weight", False),
        ("visual.ln_post.bias", "vision_model.post_layernorm.bias", False),
        ("visual.proj", "visual_projection.weight", True)]),
}


def _layers(arch: ClipArch, tower: str) -> int:
    return arch.text_layers if tower == "text" else arch.vision_layers


def tower_weights(sd: dict[str, Any], arch: ClipArch, tower: str) -> dict[str, Any]:
    """OpenAI-named weights -> the state dict of the module that runs `tower`:
    CLIPTextModelWithProjection, CLIPVisionModelWithProjection, or ModifiedResNet."""
    if tower == "image" and arch.architecture == "resnet":
        return {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    src, dst, keys = _TOWER_KEYS[tower]
    try:
        out = {}
        for i in range(_layers(arch, tower)):
            s, d = f"{src}.{i}", f"{dst}.{i}"
            for kind in ("weight", "bias"):
                for part, t in zip("qkv", sd[f"{s}.attn.in_proj_{kind}"].chunk(3)):
                    out[f"{d}.self_attn.{part}_proj.{kind}"] = t
                for a, b in _BLOCK_PAIRS:
                    out[f"{d}.{b}.{kind}"] = sd[f"{s}.{a}.{kind}"]
        for ours, theirs, transposed in keys:
            out[theirs] = sd[ours].t() if transposed else sd[ours]
        return out
    except KeyError as exc:
        raise LayoutError(f"the weights lack {exc.args[0]!r}, which a {arch.architecture} CLIP's {tower} tower "
                          "needs") from None


def openai_weights(state: dict[str, Any], arch: ClipArch, tower: str) -> dict[str, Any]:
    """The inverse of `tower_weights`: a tower module's state dict in OpenAI's names (what
    open_clip's layout stores), for checkpoints this project writes."""
    import torch

    if tower == "image" and arch.architecture == "resnet":
        return {f"visual.{k}": v for k, v in state.items()}
    src, dst, keys = _TOWER_KEYS[tower]
    out = {}
    for i in range(_layers(arch, tower)):
        s, d = f"{src}.{i}", f"{dst}.{i}"
        for kind in ("weight", "bias"):
            out[f"{s}.attn.in_proj_{kind}"] = torch.cat([state[f"{d}.self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for a, b in _BLOCK_PAIRS:
                out[f"{s}.{a}.{kind}"] = state[f"{d}.{b}.{kind}"]
    for ours, theirs, transposed in keys:
        out[ours] = state[theirs].t() if transposed else state[theirs]
    return out


def open_clip_config(arch: ClipArch, preprocess: dict[str, Any] | None = None) -> dict[str, Any]:
    """open_clip_config.json describing `arch` (what read_open_clip_config reads back)."""
    if arch.architecture == "resnet":
        vision = {"image_size": arch.image_size, "layers": list(arch.vision_layers), "width": arch.vision_width,
                  "head_width": arch.vision_width * 32 // arch.vision_heads, "patch_size": None}
    else:
        vision = {"image_size": arch.image_size, "layers": arch.vision_layers, "width": arch.vision_width,
                  "head_width": arch.vision_width // arch.vision_heads, "patch_size": arch.patch_size,
                  "mlp_ratio": arch.vision_mlp_ratio}
    text = {"context_length": arch.context_length, "vocab_size": arch.vocab_size, "width": arch.text_width,
            "heads": arch.text_heads, "layers": arch.text_layers, "mlp_ratio": arch.text_mlp_ratio}
    return {"model_cfg": {"embed_dim": arch.embed_dim, "quick_gelu": arch.quick_gelu, "vision_cfg": vision,
                          "text_cfg": text},
            "preprocess_cfg": preprocess or {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                                             "interpolation": "bicubic", "resize_mode": "shortest"}}
