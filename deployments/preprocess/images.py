"""Image bytes -> RGB -> resized, center-cropped uint8 HxWx3, with limits checked first.

The output matches transformers' CLIPImageProcessor before its rescale/normalise step,
pixel for pixel; shipping uint8 keeps router->encoder payloads 4x smaller than float.
"""

from __future__ import annotations

import binascii
import io
import math
import re
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

try:
    import pybase64 as b64
except ImportError:  # a copied, uninstalled tree (the GPU machine's benchmark run): same API, slower
    import base64 as b64

from .image_spec import ImageSpec
from .png_chunks import TooManyChunks, check_png_chunks

# We check decoded size ourselves (max_pixels) before decoding; PIL's global bomb guard
# would otherwise raise a different exception type on very large images.
Image.MAX_IMAGE_PIXELS = None

_URLSAFE_B64 = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
# Pillow names a JPEG by what else it carries: a multi-picture (MPF) segment, as phone
# cameras write, makes it "MPO". Its first picture is the JPEG, which is what we decode.
_FORMAT_FAMILY = {"MPO": "JPEG"}


class ImageError(ValueError):
    """An image the client sent that cannot be used; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageLimits:
    max_image_bytes: int = 20 * 2**20
    max_image_pixels: int = 40_000_000
    # A 1x40000 strip passes the pixel limit but resizes to 224x8960000: refuse it unread.
    max_aspect_ratio: float = 50.0
    formats: frozenset[str] = ALLOWED_FORMATS
    # JPEG DCT-domain downscale (1/2, 1/4, 1/8) keeps at least this multiple of the target's
    # short side; the exact antialiased resize does the rest. At 1.0 a photo decodes
    # markedly faster than in full, with embeddings equal to the full decode's within
    # the preprocessing tests' tolerance.
    draft_headroom: float = 1.0


class PixelBudget:
    """The pixels one request's images may still decode to, shared by its decode threads."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._left = total
        self._lock = threading.Lock()

    def charge(self, pixels: int) -> None:
        with self._lock:
            if pixels > self._left:
                raise ImageError(
                    f"the images of this request decode to more than {self.total} pixels in all, the limit per "
                    "request (limits.max_request_pixels)", status=413,
                )
            self._left -= pixels


def decode_image_source(source: str, limits: ImageLimits) -> bytes:
    """A data URI or raw base64 string -> bytes. URLs are refused here (fetching is separate)."""
    head = source[:16].lower()
    if head.startswith(("http://", "https://")):
        raise ImageError("image URLs are not enabled on this server; send a data URI or base64")
    if head.startswith("data:"):
        meta, sep, payload = source.partition(",")
        if not sep or not meta.lower().endswith(";base64"):
            raise ImageError("data URIs must be base64-encoded (data:image/...;base64,...)")
    else:
        payload = source
    # Check before decoding: base64 is 4/3 the size of what it encodes.
    if len(payload) * 3 // 4 > limits.max_image_bytes + 3:
        raise ImageError(f"image is larger than the {limits.max_image_bytes}-byte limit", status=413)
    payload = payload.strip()
    # pybase64 (SIMD) decodes a 640x480 JPEG's base64 in 5 us against the stdlib's 210 us,
    # about a tenth of the router's per-image decode work; the checks are the same.
    try:
        data = b64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        if not _URLSAFE_B64.match(payload):
            raise ImageError("image is neither a data URI nor valid base64") from None
        try:
            data = b64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise ImageError("image is neither a data URI nor valid base64") from None
    if not data:
        raise ImageError("image is empty")
    return data


def _draft_size(width: int, height: int, spec: ImageSpec, headroom: float) -> tuple[int, int] | None:
    target_short = spec.shortest_edge or min(spec.resize_hw or spec.input_hw)
    scale = headroom * target_short / min(width, height)
    if scale >= 0.5:  # draft only reduces by 1/2, 1/4, 1/8
        return None
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.uint32 if img.mode == "I" else np.uint16)
        shift = 24 if img.mode == "I" and arr.max() > 65535 else 8
        img = Image.fromarray((arr >> shift).astype(np.uint8), mode="L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_rgb(data: bytes, spec: ImageSpec, limits: ImageLimits) -> Image.Image:
    """Decode bytes into an RGB image, refusing bombs and unsupported formats before decoding."""
    return decode_rgb(open_image(data, spec, limits))


@dataclass(frozen=True)
class OpenedImage:
    image: Image.Image  # header read, pixels not decoded yet
    source_size: tuple[int, int]  # as sent, before any draft downscale (metrics)


def open_image(data: bytes, spec: ImageSpec, limits: ImageLimits, budget: PixelBudget | None = None) -> OpenedImage:
    """Read an image's header and check it (format, size, aspect ratio) without decoding its
    pixels; `budget`: the request's pixels left, charged with what `decode_rgb` will decode."""
    if len(data) > limits.max_image_bytes:
        raise ImageError(f"image is larger than the {limits.max_image_bytes}-byte limit", status=413)
    try:
        check_png_chunks(data)
    except TooManyChunks as exc:
        raise ImageError(str(exc)) from None
    try:
        img = Image.open(io.BytesIO(data))
    except Exception:
        raise ImageError("image could not be decoded (unknown or corrupt format)") from None
    fmt = _FORMAT_FAMILY.get(img.format, img.format)
    if fmt not in limits.formats:
        raise ImageError(f"image format {img.format} is not supported; use one of {sorted(limits.formats)}")
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError("image has no pixels")
    if width * height > limits.max_image_pixels:
        raise ImageError(
            f"image is {width}x{height}, over the {limits.max_image_pixels}-pixel limit", status=413
        )
    if max(width, height) / min(width, height) > limits.max_aspect_ratio:
        raise ImageError(f"image is {width}x{height}, over the aspect ratio limit of {limits.max_aspect_ratio:g}:1")
    try:
        if fmt == "JPEG":
            size = _draft_size(width, height, spec, limits.draft_headroom)
            if size is not None:
                img.draft("RGB", size)
    except Exception:
        raise ImageError("image could not be decoded (truncated or corrupt data)") from None
    if budget is not None:  # after the draft: what will actually be decoded
        budget.charge(img.width * img.height)
    return OpenedImage(img, (width, height))


def decode_rgb(opened: OpenedImage) -> Image.Image:
    """Decode an image from `open_image` into RGB."""
    img = opened.image
    try:
        img.load()
        rgb = _to_rgb(ImageOps.exif_transpose(img))
        rgb.info["source_size"] = opened.source_size
        return rgb
    except Exception:
        raise ImageError("image could not be decoded (truncated or corrupt data)") from None


def _resize_hw(height: int, width: int, spec: ImageSpec) -> tuple[int, int]:
    if spec.resize_hw:
        return spec.resize_hw
    if spec.shortest_edge is None:
        return height, width
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = spec.shortest_edge, int(spec.shortest_edge * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def _center_crop(arr: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    height, width = arr.shape[:2]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return arr[top : top + crop_h, left : left + crop_w]
    # Smaller than the crop: zero-pad around it, as transformers does.
    out = np.zeros((max(crop_h, height), max(crop_w, width), 3), dtype=arr.dtype)
    top_pad, left_pad = math.ceil((crop_h - height) / 2), math.ceil((crop_w - width) / 2)
    top_pad, left_pad = max(top_pad, 0), max(left_pad, 0)
    out[top_pad : top_pad + height, left_pad : left_pad + width] = arr
    height, width = out.shape[:2]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return out[top : top + crop_h, left : left + crop_w]


def resize_and_crop(img: Image.Image, spec: ImageSpec) -> np.ndarray:
    """RGB image -> uint8 array of spec.input_hw, exactly as CLIPImageProcessor before rescale."""
    new_h, new_w = _resize_hw(img.height, img.width, spec)
    if (new_h, new_w) != (img.height, img.width):
        img = img.resize((new_w, new_h), resample=spec.resample)
    arr = np.asarray(img, dtype=np.uint8)
    if spec.crop_hw:
        arr = _center_crop(arr, *spec.crop_hw)
    return np.ascontiguousarray(arr)


def prepare_image(data: bytes, spec: ImageSpec, limits: ImageLimits) -> np.ndarray:
    return resize_and_crop(open_rgb(data, spec, limits), spec)
