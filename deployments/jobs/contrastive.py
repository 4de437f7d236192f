"""The contrastive objectives and the pieces of one optimisation step.

The objective follows the model family's score function (preprocess/model_family.py), so a
checkpoint is fine-tuned with the loss it was trained with and served with:

- softmax (CLIP): symmetric InfoNCE over a batch of image-text pairs with CLIP's learnable
  temperature (`logit_scale`, clamped to at most 100 as in the paper);
- sigmoid (SigLIP): the pairwise sigmoid loss of the SigLIP paper, every image-text pair
  of the batch an independent binary decision on `logit_scale * cos + logit_bias`, both
  learned; as big_vision and transformers' `SiglipModel(return_loss=True)` compute it, and
  with no cap on the temperature (trained SigLIP checkpoints sit above 100).

Pairs whose captions are the same text are all positives for each other (a multi-positive
target) in both: catalogues and the synthetic shapes data repeat captions, and treating a
repeat as a negative would push apart two correct matches.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)
# Parameter names of transformers' CLIPModel, then of the two-tower module (clip_pair.ClipPair).
TOWER_PREFIXES = {"image": ("vision_model.", "visual_projection.", "image."),
                  "text": ("text_model.", "text_projection.", "text.")}
# The layers that map each tower's features into the shared embedding space. OpenAI's
# ResNet has no separate projection: its attention pool's output projection is that layer.
# SigLIP's towers end in heads (two-tower module names): the image tower's attention-pooling
# head (probe, attention, MLP) and the text tower's linear head.
PROJECTION_PREFIXES = ("visual_projection.", "text_projection.", "image.visual_projection.",
                       "text.text_projection.", "image.attnpool.c_proj.", "image.head.", "text.head.")
# The learned scalars of the score: the temperature, and a sigmoid score's bias.
SCORE_PARAMETERS = ("logit_scale", "logit_bias")
# `--train`: which parameters are updated (the temperature and the projections always are).
TRAIN_MODES = ("all", "projections", "text")


def caption_groups(captions: Iterable[str]) -> np.ndarray:
    """A stable 63-bit id per caption text (case and spacing ignored): equal ids = positives."""
    out = []
    for text in captions:
        key = " ".join(str(text).lower().split()).encode("utf-8")
        out.append(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1)
    return np.asarray(out, dtype=np.int64)


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def contrastive_loss(logits_per_image: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the image->text and text->image cross-entropies; with `groups`, every pair of
    items in the same group is a positive (uniform target over them)."""
    n = logits_per_image.shape[0]
    if groups is None:
        targets = torch.eye(n, device=logits_per_image.device)
    else:
        same = (groups.view(-1, 1) == groups.view(1, -1)).float()
        targets = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (_soft_cross_entropy(logits_per_image, targets) + _soft_cross_entropy(logits_per_image.t(), targets.t()))


def _positives(n: int, groups: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    if groups is None:
        return torch.eye(n, device=device)
    return (groups.view(-1, 1) == groups.view(1, -1)).float()


def sigmoid_loss(logits_per_image: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss on `logit_scale * cos + logit_bias`: for every image-text
    pair, -log sigmoid(+logit) if it is a positive and -log sigmoid(-logit) otherwise, summed
    over each row and averaged over the rows (transformers' SiglipModel loss, big_vision's
    siglip trainer). With `groups`, pairs in the same group are positives too."""
    positives = _positives(logits_per_image.shape[0], groups, logits_per_image.device)
    return -F.logsigmoid((2 * positives - 1) * logits_per_image).sum(dim=-1).mean()


@dataclass(frozen=True)
class Objective:
    """A family's training objective: its loss on the pair logits, and whether the
    temperature is capped (CLIP: at 100, as in the paper)."""

    score_function: str
    loss: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    max_logit_scale: float | None

    def clamp(self, model: Any) -> None:
        if self.max_logit_scale is not None:
            clamp_temperature(model, self.max_logit_scale)


OBJECTIVES = {"softmax": Objective("softmax", contrastive_loss, MAX_LOGIT_SCALE),
              "sigmoid": Objective("sigmoid", sigmoid_loss, None)}


def objective_for(score_function: str) -> Objective:
    """The objective of a model family's score function (ModelFamily.score_function)."""
    try:
        return OBJECTIVES[score_function]
    except KeyError:
        raise ValueError(f"no training objective for score function {score_function!r}; "
                         f"known: {sorted(OBJECTIVES)}") from None


def pair_logits(model: Any, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """logit_scale * cos(image_i, text_j) (+ logit_bias for a sigmoid score), through the
    model's own forward (DDP-safe): a CLIPModel or a clip_pair.ClipPair."""
    return model(input_ids=input_ids, pixel_values=pixel_values).logits_per_image


def clamp_temperature(model: Any, maximum: float = MAX_LOGIT_SCALE) -> None:
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, maximum)


def freeze_towers(model: Any, towers: Iterable[str]) -> int:
    """Stop gradients into the named towers (with their projections); returns the number
    of parameter values this froze."""
    prefixes = tuple(p for tower in towers for p in TOWER_PREFIXES[tower])
    frozen = 0
    for name, param in model.named_parameters():
        if prefixes and name.startswith(prefixes) and param.requires_grad:
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def select_trained(model: Any, mode: str = "all") -> int:
    """Freeze what `--train mode` leaves fixed: `projections` trains the two projections and
    the score's scalars (temperature, and a sigmoid score's bias) only; `text` also the text
    tower. Returns the parameter values frozen."""
    if mode not in TRAIN_MODES:
        raise ValueError(f"train mode {mode!r}: expected one of {TRAIN_MODES}")
    frozen = 0
    for name, param in model.named_parameters():
        kept = (mode == "all" or name in SCORE_PARAMETERS or name.startswith(PROJECTION_PREFIXES)
                or (mode == "text" and name.startswith(TOWER_PREFIXES["text"])))
        if not kept and param.requires_grad:
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def parameter_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: not on biases, norms, embeddings or the temperature."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and "embedding" not in name else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR multiplier: linear warm-up, then cosine decay to zero at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def retrieval_accuracy(image_emb: torch.Tensor, text_emb: torch.Tensor, groups: torch.Tensor) -> dict[str, float]:
    """Held-out retrieval top-1 over unique captions: image->text (is the best caption one of
    the image's?) and text->image (is the best image one the caption belongs to?)."""
    unique, inverse = torch.unique(groups, return_inverse=True)
    first = torch.full((len(unique),), len(groups), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(groups)), reduce="amin")
    captions = text_emb[first]  # one embedding per distinct caption
    i2t = (image_emb @ captions.t()).argmax(dim=1)
    t2i = (captions @ image_emb.t()).argmax(dim=1)
    return {
        "i2t_top1": float((i2t == inverse).float().mean()),
        "t2i_top1": float((inverse[t2i] == torch.arange(len(unique))).float().mean()),
    }
