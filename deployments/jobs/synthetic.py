"""Synthetic image-text pairs: coloured shapes of varied size, position, rotation and
background, each with a caption that names what is drawn.

Sample `i` of seed `s` is a pure function of (s, i), so a dataset can be generated in any
order, in parallel, or on the fly during training, and a held-out set is just another
seed. Small enough to learn in minutes on a CPU, rich enough that zero-shot
classification ("a red circle" vs "a blue square") needs both towers to work.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 160, 60),
    "blue": (40, 75, 215),
    "yellow": (240, 210, 40),
    "purple": (135, 50, 175),
    "orange": (245, 135, 25),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
# Greys only: a coloured background would compete with the shape's colour word.
BACKGROUNDS: dict[str, tuple[int, int]] = {"white": (225, 255), "grey": (110, 160), "black": (0, 40)}
SIZES: dict[str, tuple[float, float]] = {"small": (0.16, 0.24), "large": (0.30, 0.40)}
TEMPLATES = (
    "a {colour} {shape}",
    "a photo of a {colour} {shape}",
    "a {size} {colour} {shape}",
    "a {colour} {shape} on a {background} background",
    "a picture of a {size} {colour} {shape}",
    "{colour} {shape}",
    "a drawing of a {colour} {shape}",
)
LABEL_TEMPLATE = "a {colour} {shape}"
_SUPERSAMPLE = 2  # draw at 2x and downscale: antialiased edges, like a real photo of a shape
# Shapes stand upright in the middle: the demo model (4x4 patches, a few hundred steps)
# classifies centred, upright shapes well and tilted or moved ones far worse. A ViT this
# small needs far more steps to learn shapes wherever they sit, so placement and tilt are
# knobs, off by default.
POSITION_JITTER = 0.0  # how far the centre may move from the middle, as a share of the side
MAX_TILT = 0.0  # degrees either way


@dataclass(frozen=True)
class ShapeSample:
    image: Image.Image
    caption: str
    colour: str
    shape: str

    @property
    def label(self) -> str:
        return label_for(self.colour, self.shape)


def label_for(colour: str, shape: str) -> str:
    return _with_article(LABEL_TEMPLATE.format(colour=colour, shape=shape))


def class_labels() -> list[str]:
    """Every (colour, shape) class as a zero-shot label, in a fixed order."""
    return [label_for(c, s) for c in COLOURS for s in SHAPES]


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        points = [(math.cos(a), math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
    elif shape == "triangle":
        points = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif shape == "star":
        points = [
            ((1.0 if k % 2 == 0 else 0.42) * math.cos(a), (1.0 if k % 2 == 0 else 0.42) * math.sin(a))
            for k, a in enumerate(-math.pi / 2 + k * math.pi / 5 for k in range(10))
        ]
    elif shape == "cross":
        w = 0.34
        points = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * cos - y * sin), cy + r * (x * sin + y * cos)) for x, y in points]


def _background(rng: np.random.Generator, size: int, lo: int, hi: int) -> np.ndarray:
    """A grey level with a gentle gradient and sensor-like noise, float (size, size, 3)."""
    base = rng.uniform(lo, hi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    gx, gy = rng.uniform(-12, 12, size=2)
    grey = base + gx * ramp[None, :] + gy * ramp[:, None]
    return grey[..., None] + rng.normal(0, 4, size=(size, size, 3)).astype(np.float32)


def _with_article(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def render_shape(rng: np.random.Generator, colour: str, shape: str, background: str, size_word: str,
                 image_size: int = 64) -> Image.Image:
    """Draw one shape; everything not named (exact size, place, angle, tints, noise) comes from `rng`."""
    # The shape is drawn as a supersampled coverage mask and composited: antialiased
    # edges, like a photographed shape, at the cost of one small extra image.
    big = image_size * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    radius = rng.uniform(*SIZES[size_word]) * big
    reach = min(POSITION_JITTER * big, big / 2 - radius)
    cx, cy = (big / 2 + rng.uniform(-reach, reach) for _ in range(2))
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        draw.polygon(_polygon(shape, cx, cy, radius, math.radians(rng.uniform(-MAX_TILT, MAX_TILT))), fill=255)
    alpha = np.asarray(mask.resize((image_size, image_size), Image.Resampling.BOX), dtype=np.float32)[..., None] / 255
    fill = np.asarray(COLOURS[colour], dtype=np.float32) + rng.integers(-20, 21, size=3)
    canvas = _background(rng, image_size, *BACKGROUNDS[background]) * (1 - alpha) + fill * alpha
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def make_sample(seed: int, index: int, image_size: int = 64) -> ShapeSample:
    rng = np.random.default_rng([seed, index])
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    size_word = list(SIZES)[rng.integers(len(SIZES))]
    image = render_shape(rng, colour, shape, background, size_word, image_size)
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    caption = template.format(colour=colour, shape=shape, size=size_word, background=background)
    return ShapeSample(image, _with_article(caption), colour, shape)


def samples(seed: int, start: int, stop: int, image_size: int = 64) -> Iterator[ShapeSample]:
    for index in range(start, stop):
        yield make_sample(seed, index, image_size)


def zero_shot_top1(
    embed_images: Callable[[list[Image.Image]], np.ndarray],
    embed_texts: Callable[[list[str]], np.ndarray],
    seed: int,
    n: int,
    image_size: int = 64,
    chunk: int = 64,
) -> dict[str, Any]:
    """Zero-shot classification of `n` generated images over every class label: the label
    whose text embedding has the highest cosine with the image's (what /v1/classify ranks by)."""
    labels = class_labels()
    text = np.asarray(embed_texts(labels), dtype=np.float64)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    correct = 0
    misses: dict[str, int] = {}
    for start in range(0, n, chunk):
        batch = list(samples(seed, start, min(n, start + chunk), image_size))
        vectors = np.asarray(embed_images([s.image for s in batch]), dtype=np.float64)
        predicted = (vectors @ text.T).argmax(axis=1)
        for sample, p in zip(batch, predicted):
            if labels[p] == sample.label:
                correct += 1
            else:
                key = f"{sample.label} -> {labels[p]}"
                misses[key] = misses.get(key, 0) + 1
    worst = dict(sorted(misses.items(), key=lambda kv: -kv[1])[:5])
    return {"top1": correct / n, "images": n, "classes": len(labels), "seed": seed, "image_size": image_size,
            "most_common_errors": worst}


def write_dataset(out_dir: Path, n: int, seed: int = 0, image_size: int = 64, fmt: str = "folder") -> Path:
    """Write `n` samples as an image folder with metadata.jsonl (file_name, text, colour,
    shape: the Hugging Face imagefolder layout), or as one parquet file with PNG bytes."""
    import io
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, sample in enumerate(samples(seed, 0, n, image_size)):
        buf = io.BytesIO()
        sample.image.save(buf, "PNG")
        row = {"text": sample.caption, "colour": sample.colour, "shape": sample.shape}
        if fmt == "parquet":
            rows.append({"image": buf.getvalue(), **row})
        else:
            name = f"images/{index:07d}.png"
            (out_dir / "images").mkdir(exist_ok=True)
            (out_dir / name).write_bytes(buf.getvalue())
            rows.append({"file_name": name, **row})
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), out_dir / "shapes.parquet")
    else:
        (out_dir / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out_dir
