"""uint8 NHWC pixels -> the vision tower's normalised NCHW input, on the device.

Serving (TorchBackend) and training (deployments.jobs) both use this, so a fine-tuned
checkpoint sees exactly the inputs at serving time that it was trained on.
"""

from __future__ import annotations

import torch

from ..preprocess.image_spec import ImageSpec


def channel_affine(spec: ImageSpec, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias), shaped (1, 3, 1, 1), so that `pixel * scale + bias` is rescale + normalise."""
    scale, bias = spec.channel_affine()
    return (torch.tensor(scale, device=device).view(1, 3, 1, 1), torch.tensor(bias, device=device).view(1, 3, 1, 1))


def normalize_pixels(pixels: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Rescale and normalise in fp32 on the device, then cast: uint8 travels, floats don't.
    return pixels.permute(0, 3, 1, 2).float().mul_(scale).add_(bias).to(dtype)
