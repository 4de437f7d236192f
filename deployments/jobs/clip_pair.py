"""The model fine-tuning trains: a checkpoint's two tower modules and its temperature.

The towers are the modules serving runs (`clip_towers.build_tower`), for every layout and
architecture the server loads: transformers' CLIP towers, or OpenAI's ResNet image tower.
Training them directly means a fine-tuned checkpoint is saved from, and served by, the
same code; there is no second model definition to keep in step.

The model family (preprocess/model_family.py) travels with the model: it chooses the
training objective (contrastive.objective_for: CLIP's softmax loss, SigLIP's sigmoid loss
with its learned `logit_bias`) and how texts are padded for the text tower (`pad_texts`:
the tokenizer's own policy, through the same `fit_padding` serving applies).

Saving follows the source: a transformers checkpoint (or a model from a config) is saved
as a Hugging Face folder of its family's model class (`WHOLE_MODELS`: CLIPModel,
SiglipModel with `logit_bias` for SigLIP and SigLIP 2, MetaClip2Model);
open_clip and OpenAI checkpoints in open_clip's layout, the one layout of theirs that
holds safetensors and that transformers does not need to understand (a ResNet tower has
no transformers class).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backends import clip_layouts as layouts
from ..backends.checkpoint import PICKLE_PATTERNS, SERVING_FILES, Checkpoint, CheckpointError
from ..backends.clip_towers import build_tower, save_open_clip, tower_embeddings
from ..engine.payloads import fit_padding
from ..preprocess.model_family import CLIP, ModelFamily

# CLIP's initial temperature, for a checkpoint that stores none.
DEFAULT_LOGIT_SCALE = 1 / 0.07
# What an open_clip-layout output keeps of its source, so that it tokenizes as the source did.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


class PairOutput(NamedTuple):
    """What CLIPModel's forward gives that training uses (a tuple: DDP passes it through)."""

    logits_per_image: torch.Tensor
    image_embeds: torch.Tensor  # L2-normalised
    text_embeds: torch.Tensor


class ClipPair(nn.Module):
    """Image tower, text tower, logit_scale (and logit_bias for a sigmoid-scored family).
    Parameter names: `image.*`, `text.*` (each tower's own names below), `logit_scale`,
    `logit_bias`."""

    def __init__(self, image: nn.Module, text: nn.Module, logit_scale: float, *, clip_config: Any = None,
                 arch: layouts.ClipArch | None = None, preprocess: dict[str, Any] | None = None,
                 family: ModelFamily = CLIP, logit_bias: float | None = None,
                 text_padding: tuple[int, int | None] | None = None) -> None:
        super().__init__()
        self.image, self.text = image, text
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale), dtype=torch.float32))
        if family.score_function == "sigmoid":
            # SigLIP's learned bias (its initial value -10 when a checkpoint has none).
            self.logit_bias = nn.Parameter(torch.tensor(-10.0 if logit_bias is None else logit_bias,
                                                        dtype=torch.float32))
        else:
            self.register_parameter("logit_bias", None)
        self.family = family
        # (context_length, pad_id) where the family pads every text to the context length.
        self.text_padding = text_padding
        if family.text_padding == "max_length" and text_padding is None:
            raise ValueError(f"a {family.name} text tower takes texts padded to its context length: "
                             "text_padding (context length, pad id) is needed")
        self.clip_config = clip_config  # transformers' config: saved as a CLIPModel/SiglipModel folder
        self.arch = arch  # otherwise: saved in open_clip's layout, with the source's preprocess_cfg
        self.preprocess = preprocess

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> PairOutput:
        image = F.normalize(tower_embeddings(self.image, "image", pixel_values), dim=-1)
        text = F.normalize(tower_embeddings(self.text, "text", input_ids), dim=-1)
        logits = self.logit_scale.exp() * image @ text.t()
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        return PairOutput(logits, image, text)

    def pad_texts(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Token rows (right-padded, any width) as the text tower takes them, exactly as the
        serving backend pads a packed batch (engine/payloads.fit_padding): cut to the
        batch's longest text (CLIP: per-batch padding), or every row padded to the context
        length with the pad id (SigLIP)."""
        width = int(np.max(lengths)) if len(lengths) else 0
        context, pad_id = self.text_padding or (width, None)
        return fit_padding(np.ascontiguousarray(ids[:, :width]), lengths, self.family.text_padding, context, pad_id)

    def train(self, mode: bool = True) -> ClipPair:
        super().train(mode)
        # A ResNet's BatchNorm always normalises with its running statistics, also while
        # training. Fine-tuning batches are small and split across workers, so their own
        # statistics are noisy and differ between workers; updating the running ones from
        # them would drift what the pretrained weights expect, and a training forward would
        # differ from the served one. The affine weights still train (in `--train all`).
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


def open_source(source: str, revision: str | None = None, allow_pickle: bool = False) -> Checkpoint:
    """The checkpoint to start from; an OpenAI archive is read here already, since its
    architecture (image size, tokenizer context) is only known from the weights."""
    ckpt = Checkpoint.open(source, revision, allow_patterns=[*SERVING_FILES, *(PICKLE_PATTERNS if allow_pickle else [])])
    files = ckpt.require_safetensors(allow_pickle=True)  # names what is missing if there are no weights
    if files[0].suffix != ".safetensors" and not allow_pickle:
        # Refused here, in the driver, before any worker starts; the serving loader's
        # message would name a variant setting.
        raise CheckpointError(f"checkpoint {source!r} has only pickle weights ({files[0].name}); reading them "
                              "can run arbitrary code, so fine-tuning needs --allow-pickle-weights to do it")
    if ckpt.layout == layouts.OPENAI:
        ckpt.load_weights(allow_pickle)
    return ckpt


def load_pair(ckpt: Checkpoint, allow_pickle: bool = False) -> ClipPair:
    """Both towers of a checkpoint, float32 on the CPU, and its temperature."""
    import transformers

    # Each tower loads from the whole checkpoint, so transformers reports the other
    # tower's weights as unexpected, for every worker; that is the point, as in serving.
    transformers.logging.set_verbosity_error()
    weights = None if ckpt.layout == layouts.TRANSFORMERS else ckpt.load_weights(allow_pickle)
    image, text = (build_tower(ckpt, tower, allow_pickle=allow_pickle, weights=weights) for tower in ("image", "text"))
    scale = ckpt.logit_scale(allow_pickle) or DEFAULT_LOGIT_SCALE
    if ckpt.layout == layouts.TRANSFORMERS:
        family = ckpt.family
        config = _config_class(family).from_pretrained(ckpt.path)
        # As CLIPModel/SiglipModel.from_pretrained(dtype=float32) records it: the saved
        # config.json stays the one fine-tuning wrote when it trained the whole model.
        for part in (config, config.vision_config, config.text_config):
            part.dtype = torch.float32
        padding = None
        if family.text_padding == "max_length":
            tokenizer = ckpt.tokenizer_info()  # the serving tokenizer's context length and pad id
            padding = (tokenizer.context_length, tokenizer.pad_id)
        bias = ckpt.logit_bias() if family.score_function == "sigmoid" else None
        return ClipPair(image, text, scale, clip_config=config, family=family, logit_bias=bias, text_padding=padding)
    preprocess = None
    if ckpt.layout == layouts.OPEN_CLIP:
        preprocess = json.loads((ckpt.path / layouts.OPEN_CLIP_CONFIG).read_text()).get("preprocess_cfg")
    return ClipPair(image, text, scale, arch=ckpt.clip_arch, preprocess=preprocess)


def pair_from_config(config: dict[str, Any], seed: int) -> ClipPair:
    """A new model from a CLIPConfig dict, with the weights CLIPModel(config) draws for `seed`."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    clip_config = CLIPConfig(**config)
    torch.manual_seed(seed)
    state = CLIPModel(clip_config).state_dict()
    with torch.random.fork_rng(devices=[]):  # the towers' own random init is overwritten
        image = CLIPVisionModelWithProjection(clip_config.vision_config)
        text = CLIPTextModelWithProjection(clip_config.text_config)
    for tower in (image, text):
        tower.load_state_dict({k: state[k] for k in tower.state_dict()})
    return ClipPair(image, text, math.exp(float(state["logit_scale"])), clip_config=clip_config)


# The transformers model (and config) class a family's two towers make up, by the family's
# tower modules (ModelFamily.towers): what a fine-tuned transformers checkpoint saves as.
WHOLE_MODELS = {"clip": ("CLIPModel", "CLIPConfig"), "siglip": ("SiglipModel", "SiglipConfig"),
                "metaclip_2": ("MetaClip2Model", "MetaClip2Config")}


def _whole_model_class(family: ModelFamily, config: bool = False):
    import transformers

    if family.towers not in WHOLE_MODELS:
        raise CheckpointError(f"fine-tuning does not know the {family.name} family's model class "
                              f"(towers {family.towers!r}; known: {sorted(WHOLE_MODELS)})")
    return getattr(transformers, WHOLE_MODELS[family.towers][1 if config else 0])


def _config_class(family: ModelFamily):
    return _whole_model_class(family, config=True)


def _whole_model_state(model: ClipPair) -> dict[str, torch.Tensor]:
    """The two towers and the score's scalars under the whole model's parameter names:
    CLIPModel's (and MetaClip2Model's) are the towers' own (`vision_model.*`,
    `visual_projection.*`, ...); SiglipModel holds each tower module whole (`vision_model.` +
    SiglipVisionModel's names, `text_model.` + SiglipTextModel's) and keeps its scalars as
    1-element tensors."""
    if model.family.towers != "siglip":
        return {**model.image.state_dict(), **model.text.state_dict(), "logit_scale": model.logit_scale.detach()}
    state = {f"vision_model.{k}": v for k, v in model.image.state_dict().items()}
    state.update({f"text_model.{k}": v for k, v in model.text.state_dict().items()})
    state["logit_scale"] = model.logit_scale.detach().reshape(1)
    state["logit_bias"] = model.logit_bias.detach().reshape(1)
    return state


def save_pair(model: ClipPair, out_dir: Path, assets_from: Path | None = None) -> Path:
    """A servable folder in the source's family of layouts (see the module docstring)."""
    out_dir = Path(out_dir)
    if model.arch is None:
        from ..checkpoint_builder import save_clip_checkpoint

        if model.family.name != "clip" and assets_from is None:
            raise ValueError(f"a {model.family.name} model saves with its source's tokenizer and preprocessor files "
                             "(assets_from)")
        # The two towers' parameters are exactly the whole model's (_whole_model_state): an
        # empty CLIPModel (SiglipModel, MetaClip2Model) takes the trained tensors as they are
        # (no copy) and saves them as ever.
        with torch.device("meta"):
            whole = _whole_model_class(model.family)(model.clip_config)
        whole.load_state_dict(_whole_model_state(model), assign=True)
        return save_clip_checkpoint(whole, out_dir, assets_from=assets_from)
    save_open_clip({"image": model.image, "text": model.text}, model.arch, out_dir,
                   logit_scale=float(model.logit_scale.detach().exp()), preprocess=model.preprocess)
    if assets_from is not None:
        for name in TOKENIZER_FILES:
            if (Path(assets_from) / name).is_file():
                shutil.copyfile(Path(assets_from) / name, out_dir / name)
    return out_dir
