"""Zero-shot scoring math on embeddings the encoders already L2-normalised (numpy only).

Computed in float64 so the served probabilities sit within float32 rounding of
transformers: `CLIPModel(...).logits_per_image.softmax(-1)` for CLIP's family and
`SiglipModel(...).logits_per_image.sigmoid()` for SigLIP's (preprocess/model_family.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# CLIP's trained temperature saturates at exp(4.6052) = 100; used when a checkpoint lacks one.
DEFAULT_LOGIT_SCALE = 100.0


def cosine_matrix(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(Q, D) x (C, D) unit vectors -> (Q, C) cosine similarities."""
    return np.asarray(queries, dtype=np.float64) @ np.asarray(candidates, dtype=np.float64).T


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise, without overflow for large |logits|."""
    logits = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(logits)
    pos = logits >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-logits[pos]))
    e = np.exp(logits[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def probabilities(cosines: np.ndarray, logit_scale: float) -> np.ndarray:
    """CLIP's zero-shot distribution: softmax(logit_scale * cosine) over candidates."""
    return softmax(float(logit_scale) * cosines)


@dataclass(frozen=True)
class Scorer:
    """A model's zero-shot score function with its learned parameters: the one place that
    turns cosines into the scores /v1/classify, /v1/similarity and the HF task return."""

    function: str  # "softmax" | "sigmoid" (ModelFamily.score_function)
    logit_scale: float  # exp() of the learned temperature
    logit_bias: float | None = None  # sigmoid only

    def __call__(self, cosines: np.ndarray) -> np.ndarray:
        logits = float(self.logit_scale) * np.asarray(cosines, dtype=np.float64)
        if self.function == "sigmoid":
            # SigLIP: each label on its own, sigmoid(logit_scale * cos + logit_bias).
            return sigmoid(logits + float(self.logit_bias or 0.0))
        return softmax(logits)

    def describe(self) -> dict:
        """The fields a response carries: the function and its parameters."""
        out = {"score_function": self.function, "logit_scale": self.logit_scale}
        if self.function == "sigmoid":
            out["logit_bias"] = self.logit_bias
        return out


def ensemble(prompt_vectors: np.ndarray) -> np.ndarray:
    """(L, T, D) prompt embeddings per label and template -> (L, D) class embeddings:
    the mean over templates, renormalised (the CLIP paper's prompt ensembling).
    One template is returned as is: it is already unit length."""
    if prompt_vectors.shape[1] == 1:
        return prompt_vectors[:, 0, :]
    mean = prompt_vectors.astype(np.float64).mean(axis=1)
    return mean / np.linalg.norm(mean, axis=-1, keepdims=True)


def ranking(scores: np.ndarray, top: int | None = None) -> np.ndarray:
    """Indices of `scores` from best to worst (ties keep input order), at most `top`."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return order if top is None else order[:top]
