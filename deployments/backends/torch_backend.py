"""PyTorch/transformers backend: one CLIP tower, loaded alone from a full checkpoint."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from pydantic import Field

# Arrays arriving through Ray's object store are read-only views; we only read them.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

from .base import BackendOptions, DescribedBackend
from .checkpoint import PICKLE_PATTERNS, REMOTE_CODE_PATTERNS, SERVING_FILES, Checkpoint
from .devices import resolve_device, resolve_dtype

_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


class TorchOptions(BackendOptions):
    """Options of backend `torch` (a variant's `options:` when `backend: torch`)."""

    backend: Literal["torch"] = Field("torch", description="Filled in from the variant's `backend`.")
    allow_pickle_weights: bool = Field(
        False, description="Load pytorch_model.bin when a checkpoint has no safetensors (pickle can run code)."
    )
    trust_remote_code: bool = Field(
        False, description="Run the model code a checkpoint ships (config.json auto_map)."
    )
    torch_compile: bool = Field(
        False, description="Compile the forwards with torch.compile (inductor) at load: a few percent more items per "
        "core on CPU, a longer replica start (docs/benchmarks.md)."
    )


class TorchBackend(DescribedBackend):
    name = "torch"
    Options = TorchOptions

    def __init__(self, checkpoint: Checkpoint, tower: str, device: str, dtype: str, threads: int | None,
                 allow_pickle_weights: bool = False, trust_remote_code: bool = False,
                 torch_compile: bool = False) -> None:
        import torch
        import transformers

        from .torch_device import DeviceRunner
        from .torch_pixels import channel_affine

        # Loading one tower from a full CLIP checkpoint reports the other tower's keys as
        # "unexpected"; that is the point, not a problem worth a log page.
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        checkpoint.require_no_remote_code(trust_remote_code)

        self.checkpoint = checkpoint
        self.tower = tower
        self.allow_pickle_weights = allow_pickle_weights
        self.device = torch.device(resolve_device(device))
        self.dtype_name = resolve_dtype(dtype, self.device.type)
        self.dtype = getattr(torch, _TORCH_DTYPES[self.dtype_name])
        self.runner = DeviceRunner(self.device)
        self._whole_model = bool(checkpoint.remote_code())
        if self._whole_model:
            # The repository's own classes: the whole model loads (its towers may not load alone).
            weights = checkpoint.require_safetensors(allow_pickle_weights)
            self.model = transformers.AutoModel.from_pretrained(
                checkpoint.path, dtype=self.dtype, use_safetensors=weights[0].suffix == ".safetensors",
                trust_remote_code=True)
        else:
            from .clip_towers import build_tower

            self.model = build_tower(checkpoint, tower, dtype=self.dtype, allow_pickle=allow_pickle_weights)
        self.model.eval().to(self.device)
        self.family = checkpoint.family
        if self._whole_model:
            self.embed_dim = int(self.model.config.projection_dim)
        else:
            from .clip_towers import tower_dim

            self.embed_dim = tower_dim(checkpoint, tower, self.model)
        self.image_spec, self.tokenizer_info = checkpoint.tower_preprocessing(tower)
        if self.image_spec is not None:
            self._scale, self._bias = channel_affine(self.image_spec, self.device)
        self.compiled = None  # the torch.compile'd forward (torch_compile: true); None: eager
        self._forward = self._tower_forward
        if torch_compile:
            self._compile()

    @classmethod
    def serving_files(cls, tower: str, allow_pickle_weights: bool = False, trust_remote_code: bool = False,
                      torch_compile: bool = False) -> list[str]:
        """Repository files a hub download fetches for this backend."""
        return [*SERVING_FILES, *(PICKLE_PATTERNS if allow_pickle_weights else []),
                *(REMOTE_CODE_PATTERNS if trust_remote_code else [])]

    @classmethod
    def load(cls, checkpoint: Checkpoint, tower: str, *, device: str = "auto", dtype: str = "auto",
             threads: int | None = None, allow_pickle_weights: bool = False,
             trust_remote_code: bool = False, torch_compile: bool = False) -> TorchBackend:
        return cls(checkpoint, tower, device, dtype, threads, allow_pickle_weights, trust_remote_code, torch_compile)

    def _compile(self) -> None:
        from .torch_compile import compile_forward, image_warmup, text_warmup

        if self.tower == "image":
            warmup = image_warmup(self.image_spec.input_hw)
        else:
            tok = self.tokenizer_info
            warmup = text_warmup(tok.eos_id if tok.bos_id is None else tok.bos_id, tok.eos_id)
        self.compiled, self._forward = compile_forward(self._tower_forward, warmup, self.runner.to_device,
                                                       f"{self.tower} tower")

    def _features(self, **inputs):
        if self._whole_model:  # the repository's own code: CLIPModel's feature API
            out = (self.model.get_image_features if self.tower == "image" else self.model.get_text_features)(**inputs)
            return out if hasattr(out, "dim") else out.pooler_output
        from .clip_towers import tower_embeddings

        return tower_embeddings(self.model, self.tower, next(iter(inputs.values())))

    def _tower_forward(self, batch):
        """The device-side work of one batch (what torch_compile compiles, whole):
        uint8 NHWC pixels or int32 token ids -> L2-normalised float32 embeddings."""
        import torch.nn.functional as F

        from .torch_pixels import normalize_pixels

        if self.tower == "image":
            feats = self._features(pixel_values=normalize_pixels(batch, self._scale, self._bias, self.dtype))
        else:
            # CLIP's and MetaCLIP 2's text towers are causal and pool at the first EOS, so right
            # padding never reaches the pooled position; SigLIP's and SigLIP 2's get the
            # fixed-length padding they were trained with (embed_texts). None takes an attention mask.
            feats = self._features(input_ids=batch.long())
        return F.normalize(feats.float(), dim=-1)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), self.runner.stream():
            return self._forward(self.runner.to_device(batch)).cpu().numpy()

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        return self._embed(pixels)

    def embed_texts(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        from ..engine.payloads import fit_padding

        tok = self.tokenizer_info
        return self._embed(fit_padding(ids, lengths, tok.padding, tok.context_length, tok.pad_id))

    @property
    def device_name(self) -> str:
        return str(self.device)

    @property
    def param_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def own_logit_scale(self) -> float | None:
        return self.checkpoint.logit_scale(self.allow_pickle_weights)

    def extra_info(self) -> dict[str, Any]:
        return {"compiled": self.compiled is not None, "layout": self.checkpoint.layout,
                "architecture": self.checkpoint.architecture, "family": self.family.name}
