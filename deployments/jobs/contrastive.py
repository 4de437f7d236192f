"""CLIP's contrastive objective and the pieces of one optimisation step.

Symmetric InfoNCE over a batch of image-text pairs with CLIP's learnable temperature
(`logit_scale`, clamped to at most 100 as in the paper). Pairs whose captions are the
same text are all positives for each other (a multi-positive target): catalogues and
the synthetic shapes data repeat captions, and treating a repeat as a negative would
push apart two correct matches.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)
# Parameter names of transformers' CLIPModel, then of the two-tower module (clip_pair.ClipPair).
TOWER_PREFIXES = {"image": ("vision_model.", "visual_projection.", "image."),
                  "text": ("text_model.", "text_projection.", "text.")}
# The layers that map each tower's features into the shared embedding space. OpenAI's
# ResNet has no separate projection: its attention pool's output projection is that layer.
PROJECTION_PREFIXES = ("visual_projection.", "text_projection.", "image.visual_projection.",
                       "text.text_projection.", "image.attnpool.c_proj.")
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


def pair_logits(model: Any, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """logit_scale * cos(image_i, text_j), through the model's own forward (DDP-safe):
    a CLIPModel or a clip_pair.ClipPair."""
    return model(input_ids=input_ids, pixel_values=pixel_values).logits_per_image


def clamp_temperature(model: Any) -> None:
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)


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
    the temperature only; `text` also the text tower. Returns the parameter values frozen."""
    if mode not in TRAIN_MODES:
        raise ValueError(f"train mode {mode!r}: expected one of {TRAIN_MODES}")
    frozen = 0
    for name, param in model.named_parameters():
        kept = (mode == "all" or name == "logit_scale" or name.startswith(PROJECTION_PREFIXES)
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
