"""Model families: how a contrastive image-text model was trained to be used, read from its
config.json `model_type`. The loader (which tower modules, which tokenizer files), the
router (tokenizer padding, image resize) and the scorer (softmax or sigmoid) all read the
family from here, so a family's rules live in one place. No torch: the router imports it.

- `clip` (OpenAI CLIP and everything in its layouts, ResNet and open_clip ones included):
  BPE with BOS and EOS, texts padded per batch (the causal text tower pools at the first
  EOS, so padding never reaches it), shortest-side resize and centre crop by default,
  zero-shot scores softmax(logit_scale * cos) over the labels.
- `siglip` (google/siglip-*): SentencePiece without BOS, EOS appended, texts padded to the
  fixed context length with the pad id (the bidirectional text tower pools the last
  position, so it must see exactly the padding it was trained with), square resize without
  crop, an attention-pooling image head, and independent per-label scores
  sigmoid(logit_scale * cos + logit_bias), as it was trained with the sigmoid loss.

Next (issue 23): `siglip2` (Gemma tokenizer, fixed-resolution and NaFlex image inputs) and
`metaclip_2` (CLIP's preprocessing and scoring, XLM-V tokenizer) are refused by name until
they are implemented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ScoreFunction = Literal["softmax", "sigmoid"]


@dataclass(frozen=True)
class ModelFamily:
    name: str
    score_function: ScoreFunction  # softmax over labels, or an independent sigmoid per label
    text_padding: Literal["longest", "max_length"]  # per batch, or to the context length with the pad id
    bos_token: str | None  # the token a text starts with (None: no BOS)
    eos_token: str  # the token a text ends with; also the pad token where the family pads
    context_length: int  # the text tower's positions when the config does not say
    text_pooling: Literal["first_eos", "last"]
    image_pooling: Literal["class_token", "attention_head"]
    center_crop: bool  # the default when preprocessor_config.json does not say do_center_crop


CLIP = ModelFamily("clip", "softmax", "longest", "<|startoftext|>", "<|endoftext|>", 77, "first_eos", "class_token",
                   True)
SIGLIP = ModelFamily("siglip", "sigmoid", "max_length", None, "</s>", 64, "last", "attention_head", False)
FAMILIES = {family.name: family for family in (CLIP, SIGLIP)}
# model_type -> family; any other model type is read as CLIP, as before families existed.
MODEL_TYPES = {"clip": CLIP, "siglip": SIGLIP}
NOT_YET = {"siglip2": "SigLIP 2", "metaclip_2": "MetaCLIP 2"}


class UnsupportedFamily(ValueError):
    pass


def family_for_model_type(model_type: str | None) -> ModelFamily:
    if model_type in NOT_YET:
        raise UnsupportedFamily(f"model_type {model_type!r} ({NOT_YET[model_type]}) is not supported yet; "
                                f"served families: {', '.join(sorted(MODEL_TYPES))}")
    return MODEL_TYPES.get(model_type or "clip", CLIP)


def family_named(name: str) -> ModelFamily:
    """A family by its name (what TowerInfo carries from encoder to router)."""
    return FAMILIES.get(name, CLIP)
