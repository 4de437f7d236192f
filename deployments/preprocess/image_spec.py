"""A checkpoint's image preprocessing, read from its preprocessor_config.json.

Resizing and cropping run where images are decoded (router, batch jobs) and produce
uint8; rescale and normalisation run on the encoder's device. Together they reproduce
transformers' CLIPImageProcessor exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3


@dataclass(frozen=True)
class ImageSpec:
    shortest_edge: int | None  # resize the short side to this, keeping aspect ratio
    resize_hw: tuple[int, int] | None  # or resize to exactly (h, w)
    crop_hw: tuple[int, int] | None  # then center-crop to (h, w)
    resample: int = BICUBIC  # PIL resampling filter id
    rescale_factor: float = 1 / 255
    do_rescale: bool = True
    do_normalize: bool = True
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD

    @property
    def input_hw(self) -> tuple[int, int]:
        """The (height, width) of the tensor the vision tower receives."""
        if self.crop_hw:
            return self.crop_hw
        if self.resize_hw:
            return self.resize_hw
        raise ValueError("an image spec with shortest-edge resize and no crop has no fixed size")

    def channel_affine(self) -> tuple[list[float], list[float]]:
        """(scale, bias) per channel so that `pixel * scale + bias` equals rescale+normalize."""
        rescale = self.rescale_factor if self.do_rescale else 1.0
        if not self.do_normalize:
            return [rescale] * 3, [0.0] * 3
        scale = [rescale / s for s in self.std]
        bias = [-m / s for m, s in zip(self.mean, self.std)]
        return scale, bias

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageSpec:
        data = dict(data)
        for key in ("resize_hw", "crop_hw", "mean", "std"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)

    @classmethod
    def from_preprocessor_config(cls, cfg: dict[str, Any], image_size: int | None = None,
                                 center_crop: bool = True) -> ImageSpec:
        """Parse both the old (`size: 224`) and new (`size: {shortest_edge: 224}`) spellings.
        `center_crop`: the model family's default where the file does not say `do_center_crop`
        (CLIP's image processor crops; SigLIP's resizes to the square and never crops)."""
        if "image_processor" in cfg and isinstance(cfg["image_processor"], dict):
            cfg = cfg["image_processor"]  # transformers 5 processor_config.json nests it
        size = cfg.get("size", image_size)
        shortest_edge = resize_hw = None
        if cfg.get("do_resize", True):
            if isinstance(size, int):
                shortest_edge = size
            elif isinstance(size, dict) and "shortest_edge" in size:
                shortest_edge = int(size["shortest_edge"])
            elif isinstance(size, dict) and "height" in size and "width" in size:
                resize_hw = (int(size["height"]), int(size["width"]))
            elif size is not None:
                raise ValueError(f"unsupported preprocessor size {size!r}")
        crop_hw = None
        if cfg.get("do_center_crop", center_crop):
            crop = cfg.get("crop_size", size if isinstance(size, int) else image_size)
            if isinstance(crop, int):
                crop_hw = (crop, crop)
            elif isinstance(crop, dict) and "height" in crop:
                crop_hw = (int(crop["height"]), int(crop["width"]))
            elif crop is not None:
                raise ValueError(f"unsupported preprocessor crop_size {crop!r}")
        if crop_hw is None and resize_hw is None:
            if shortest_edge is None and image_size is None:
                raise ValueError("preprocessor config gives no image size")
            side = shortest_edge or image_size
            crop_hw = (side, side)
        mean = cfg.get("image_mean", OPENAI_CLIP_MEAN)
        std = cfg.get("image_std", OPENAI_CLIP_STD)
        return cls(
            shortest_edge=shortest_edge,
            resize_hw=resize_hw,
            crop_hw=crop_hw,
            resample=int(cfg.get("resample", BICUBIC)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            do_rescale=bool(cfg.get("do_rescale", True)),
            do_normalize=bool(cfg.get("do_normalize", True)),
            mean=tuple(float(x) for x in mean),
            std=tuple(float(x) for x in std),
        )
