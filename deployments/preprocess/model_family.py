"""Model families: how a contrastive image-text model was trained to be used, read from its
config.json `model_type` (and, where two families share one, its tokenizer's class). The
loader (which tower modules, which tokenizer files), the router (tokenizer padding, image
resize) and the scorer (softmax or sigmoid) all read the family from here, so a family's
rules live in one place. No torch: the router imports it.

- `clip` (OpenAI CLIP and everything in its layouts, ResNet and open_clip ones included):
  BPE with BOS and EOS, texts padded per batch (the causal text tower pools at the first
  EOS, so padding never reaches it), shortest-side resize and centre crop by default,
  zero-shot scores softmax(logit_scale * cos) over the labels.
- `siglip` (google/siglip-*): SentencePiece without BOS, EOS appended, texts padded to the
  fixed context length with the pad id (the bidirectional text tower pools the last
  position, so it must see exactly the padding it was trained with), square resize without
  crop, an attention-pooling image head, and independent per-label scores
  sigmoid(logit_scale * cos + logit_bias), as it was trained with the sigmoid loss.
- `siglip2` (google/siglip2-*-patch*-<size>, the fixed-resolution checkpoints): SigLIP's
  architecture, files and scoring (config.json says `model_type: siglip`), with Gemma's BPE
  tokenizer (tokenizer.json; tokenizer_config.json `tokenizer_class: GemmaTokenizer`, which
  is how it is told apart from SigLIP): texts lowercased (as the model was trained; the
  hub's GemmaTokenizer does not do it), no BOS, `<eos>` appended, padded to 64 with
  `<pad>`.
- `metaclip_2` (facebook/metaclip-2-*): CLIP's architecture, preprocessing and softmax
  scoring with the multilingual XLM-V tokenizer (SentencePiece Unigram as tokenizer.json,
  `<s>` ... `</s>`); the causal text tower pools at the first `</s>`, so texts are padded
  per batch like CLIP's.

Refused by name: `siglip2` as a config.json model_type is SigLIP 2's NaFlex variant
(variable resolution and aspect ratio: patch sequences with a mask and their spatial
shapes), which the fixed-size image pipeline cannot feed.
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
    eos_token: str  # the token a text ends with
    context_length: int  # the text tower's positions when the config does not say
    text_pooling: Literal["first_eos", "last"]
    image_pooling: Literal["class_token", "attention_head"]
    center_crop: bool  # the default when preprocessor_config.json does not say do_center_crop
    towers: Literal["clip", "siglip", "metaclip_2"]  # which transformers modules run the towers
    pad_token: str | None = None  # where the family pads to max_length: the pad token (None: the EOS)
    lowercase: bool = False  # texts are lowercased before tokenizing (what the model was trained on)


CLIP = ModelFamily("clip", "softmax", "longest", "<|startoftext|>", "<|endoftext|>", 77, "first_eos", "class_token",
                   True, "clip")
SIGLIP = ModelFamily("siglip", "sigmoid", "max_length", None, "</s>", 64, "last", "attention_head", False, "siglip")
SIGLIP2 = ModelFamily("siglip2", "sigmoid", "max_length", None, "<eos>", 64, "last", "attention_head", False, "siglip",
                      pad_token="<pad>", lowercase=True)
METACLIP_2 = ModelFamily("metaclip_2", "softmax", "longest", "<s>", "</s>", 77, "first_eos", "class_token", True,
                         "metaclip_2")
FAMILIES = {family.name: family for family in (CLIP, SIGLIP, SIGLIP2, METACLIP_2)}
# model_type -> family; any other model type is read as CLIP, as before families existed.
MODEL_TYPES = {"clip": CLIP, "siglip": SIGLIP, "metaclip_2": METACLIP_2}
# SigLIP 2's fixed-resolution checkpoints are `model_type: siglip`; their tokenizer tells them apart.
SIGLIP2_TOKENIZERS = {"GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer"}
REFUSED = {
    "siglip2": "SigLIP 2 NaFlex (variable resolution and aspect ratio) is not supported; SigLIP 2's "
               "fixed-resolution checkpoints are (config.json `model_type: siglip`, e.g. "
               "google/siglip2-base-patch16-224)",
}


class UnsupportedFamily(ValueError):
    pass


def family_for_model_type(model_type: str | None, tokenizer_class: str | None = None) -> ModelFamily:
    """The family of a transformers checkpoint: config.json's `model_type`, and for
    `siglip` the tokenizer_config.json `tokenizer_class` (Gemma's: SigLIP 2)."""
    if model_type in REFUSED:
        raise UnsupportedFamily(f"model_type {model_type!r}: {REFUSED[model_type]}; "
                                f"served model types: {', '.join(sorted(MODEL_TYPES))}")
    family = MODEL_TYPES.get(model_type or "clip", CLIP)
    if family is SIGLIP and tokenizer_class in SIGLIP2_TOKENIZERS:
        return SIGLIP2
    return family


def family_named(name: str) -> ModelFamily:
    """A family by its name (what TowerInfo carries from encoder to router)."""
    return FAMILIES.get(name, CLIP)
