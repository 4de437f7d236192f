"""The backend contract: what a tower runtime needs from a model runtime, and the one
place that describes a loaded tower (`describe`) and rebuilds its tokenizer
(`TokenizerInfo.tokenizer`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from ..preprocess.image_spec import ImageSpec
    from ..preprocess.tokenizer import ClipTokenizer


@dataclass
class TokenizerInfo:
    json: str  # serialized `tokenizers` tokenizer
    context_length: int
    bos_id: int | None  # None: the family's texts start without BOS (SigLIP)
    eos_id: int
    vocab_size: int
    # The family's padding (preprocess/model_family.py): "longest" per batch, or "max_length":
    # every text padded to context_length with pad_id, as the text tower was trained.
    padding: str = "longest"
    pad_id: int | None = None

    def tokenizer(self) -> ClipTokenizer:
        """The live tokenizer (router, jobs, benchmarks all build it here)."""
        from ..preprocess.tokenizer import ClipTokenizer

        return ClipTokenizer(self.json, self.context_length, self.bos_id, self.eos_id, self.vocab_size,
                             padding=self.padding, pad_id=self.pad_id)


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
    # What the process running the tower was granted (serving: Ray's resources of the replica).
    resources: dict[str, float] | None = None
    # The model family (preprocess/model_family.py) and its zero-shot score function;
    # logit_bias: the learned bias of a sigmoid score, if the checkpoint has it.
    family: str = "clip"
    score_function: str = "softmax"
    logit_bias: float | None = None

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
    images as uint8 NHWC at the checkpoint's input size, texts as padded int32 token ids.
    Besides the methods, a backend names what it loaded: `name`, `tower`, `checkpoint`,
    `image_spec`, `tokenizer_info`, `device_name`, `dtype_name`, `embed_dim`, `param_count`."""

    name: str
    tower: str
    checkpoint: Any
    image_spec: ImageSpec | None
    tokenizer_info: TokenizerInfo | None
    embed_dim: int

    @classmethod
    def load(cls, checkpoint: Any, tower: str, *, device: str, dtype: str, threads: int | None) -> TowerBackend: ...

    @classmethod
    def serving_files(cls, tower: str, **options: Any) -> list[str]: ...

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, D), L2-normalised."""
        ...

    def embed_texts(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """int32 (N, L) padded ids and their lengths -> float32 (N, D), L2-normalised."""
        ...

    @property
    def device_name(self) -> str: ...

    @property
    def dtype_name(self) -> str: ...

    @property
    def param_count(self) -> int: ...

    def own_logit_scale(self) -> float | None:
        """The temperature the loaded files carry, if any."""
        ...

    def own_logit_bias(self) -> float | None:
        """A sigmoid score's learned bias the loaded files carry, if any (DescribedBackend:
        the checkpoint's weights)."""
        ...

    def extra_info(self) -> dict[str, Any]:
        """Backend-specific facts for TowerInfo.extra."""
        ...


def describe(backend: TowerBackend, *, variant_id: str = "", logit_scale: float | None = None,
             resources: dict[str, float] | None = None) -> TowerInfo:
    """The TowerInfo of a loaded tower; `logit_scale` (the variant's config) applies when
    the checkpoint's files carry none."""
    own_scale = backend.own_logit_scale()
    from ..preprocess.model_family import CLIP

    checkpoint = backend.checkpoint
    family = getattr(checkpoint, "family", CLIP)  # test doubles may carry a bare checkpoint
    return TowerInfo(
        variant_id=variant_id,
        tower=backend.tower,
        backend=backend.name,
        device=backend.device_name,
        dtype=backend.dtype_name,
        embed_dim=backend.embed_dim,
        fingerprint=backend.checkpoint.fingerprint,
        logit_scale=own_scale if own_scale is not None else logit_scale,
        param_count=backend.param_count,
        image_spec=backend.image_spec.to_dict() if backend.image_spec else None,
        tokenizer=backend.tokenizer_info,
        extra=backend.extra_info(),
        resources=resources,
        family=family.name,
        score_function=family.score_function,
        logit_bias=backend.own_logit_bias() if family.score_function == "sigmoid" else None,
    )


class DescribedBackend:
    """Mixin: `info()`, the backend described on its own (no variant)."""

    def info(self) -> TowerInfo:
        return describe(self)  # type: ignore[arg-type]

    def own_logit_bias(self) -> float | None:
        return self.checkpoint.logit_bias()  # type: ignore[attr-defined]


class BackendOptions(BaseModel):
    """A backend's own options (a variant's `options:`), declared next to the backend.
    `backend` is the discriminator; the variant config fills it in from its own `backend`."""

    model_config = ConfigDict(extra="forbid")

    backend: str

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the backend's `load` and `serving_files`."""
        return self.model_dump(exclude={"backend"})

    def check_variant(self, dtype: str) -> None:
        """Raise ValueError when the variant's generic settings do not fit this backend."""
