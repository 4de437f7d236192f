"""The backend contract: what an encoder replica needs from a model runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class TokenizerInfo:
    json: str  # serialized `tokenizers` tokenizer
    context_length: int
    bos_id: int
    eos_id: int
    vocab_size: int


@dataclass
class TowerInfo:
    """What a loaded tower tells the router: enough to preprocess for it and describe it."""

    variant_id: str
    tower: str
    backend: str
    device: str
    dtype: str
    embed_dim: int
    fingerprint: str
    logit_scale: float | None  # exp() of the learned temperature, if the checkpoint has it
    param_count: int
    image_spec: dict[str, Any] | None = None
    tokenizer: TokenizerInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TowerInfo:
        data = dict(data)
        if data.get("tokenizer") is not None:
            data["tokenizer"] = TokenizerInfo(**data["tokenizer"])
        return cls(**data)


class TowerBackend(Protocol):
    """One tower of one checkpoint on one device. Inputs are already preprocessed:
    images as uint8 NHWC at the checkpoint's input size, texts as padded int32 token ids."""

    @classmethod
    def load(cls, checkpoint: Any, tower: str, *, device: str, dtype: str, threads: int | None) -> TowerBackend: ...

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, D), L2-normalised."""
        ...

    def embed_texts(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """int32 (N, L) padded ids and their lengths -> float32 (N, D), L2-normalised."""
        ...

    def info(self) -> TowerInfo: ...
