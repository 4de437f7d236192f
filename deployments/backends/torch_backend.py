"""PyTorch/transformers backend: one CLIP tower, loaded alone from a full checkpoint."""

from __future__ import annotations

import warnings

import numpy as np

# Arrays arriving through Ray's object store are read-only views; we only read them.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

from .base import TowerInfo
from .checkpoint import Checkpoint
from .devices import resolve_device, resolve_dtype

_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


class TorchBackend:
    name = "torch"

    def __init__(self, checkpoint: Checkpoint, tower: str, device: str, dtype: str, threads: int | None) -> None:
        import torch
        import transformers
        from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

        from .torch_pixels import channel_affine

        # Loading one tower from a full CLIP checkpoint reports the other tower's keys as
        # "unexpected"; that is the point, not a problem worth a log page.
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        checkpoint.require_safetensors()

        self.checkpoint = checkpoint
        self.tower = tower
        self.device = torch.device(resolve_device(device))
        self.dtype_name = resolve_dtype(dtype, self.device.type)
        self.dtype = getattr(torch, _TORCH_DTYPES[self.dtype_name])
        model_cls = CLIPVisionModelWithProjection if tower == "image" else CLIPTextModelWithProjection
        self.model = model_cls.from_pretrained(checkpoint.path, dtype=self.dtype, use_safetensors=True)
        self.model.eval().to(self.device)
        self.embed_dim = int(self.model.config.projection_dim)
        self.image_spec = checkpoint.image_spec() if tower == "image" else None
        self.tokenizer_info = checkpoint.tokenizer_info() if tower == "text" else None
        if self.image_spec is not None:
            self._scale, self._bias = channel_affine(self.image_spec, self.device)

    @classmethod
    def load(cls, checkpoint: Checkpoint, tower: str, *, device: str = "auto", dtype: str = "auto",
             threads: int | None = None) -> TorchBackend:
        return cls(checkpoint, tower, device, dtype, threads)

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from .torch_pixels import normalize_pixels

        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(self.device, non_blocking=True)
            x = normalize_pixels(x, self._scale, self._bias, self.dtype)
            feats = self.model(pixel_values=x).image_embeds
            return F.normalize(feats.float(), dim=-1).cpu().numpy()

    def embed_texts(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            # The text tower is causal and pools at the first EOS, so right padding never
            # reaches the pooled position: no attention mask needed.
            input_ids = torch.from_numpy(ids).to(self.device, non_blocking=True).long()
            feats = self.model(input_ids=input_ids).text_embeds
            return F.normalize(feats.float(), dim=-1).cpu().numpy()

    def info(self) -> TowerInfo:
        return TowerInfo(
            variant_id="",
            tower=self.tower,
            backend=self.name,
            device=str(self.device),
            dtype=self.dtype_name,
            embed_dim=self.embed_dim,
            fingerprint=self.checkpoint.fingerprint,
            logit_scale=self.checkpoint.logit_scale(),
            param_count=sum(p.numel() for p in self.model.parameters()),
            image_spec=self.image_spec.to_dict() if self.image_spec else None,
            tokenizer=self.tokenizer_info,
        )
