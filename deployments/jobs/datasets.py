"""Reading image-text data: a folder of images with a captions table (CSV/JSONL), or
parquet, turned into preprocessed training batches with serving's own preprocessing.

The table and image helpers here are shared with the batch embedding job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import TokenizerInfo
from ..engine.payloads import PAD_ID, fit_padding, pack_tokens
from ..preprocess.image_spec import ImageSpec
from ..preprocess.images import ImageError, ImageLimits, prepare_image
from .contrastive import caption_groups

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
# Hugging Face `imagefolder` names first, then common alternatives.
CAPTION_FILES = ("metadata.jsonl", "metadata.csv", "captions.jsonl", "captions.csv")
IMAGE_COLUMNS = ("file_name", "image", "image_path", "path", "file", "filename")
TEXT_COLUMNS = ("text", "caption")
TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
FOOTER_ACTORS_ENV = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"  # Ray Data's knob: see PairSource.dataset
logger = logging.getLogger(__name__)


class DataError(ValueError):
    """Input data that cannot be read as asked; the message says what to change."""


def list_images(folder: Path) -> list[str]:
    """Image files under `folder`, as sorted relative POSIX paths (hidden files skipped)."""
    folder = Path(folder)
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def read_table(path: Path) -> Any:
    """A CSV, JSON Lines or parquet file (or a folder of parquet files) as a pyarrow Table."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet as pq

    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        return pq.read_table(path)
    if suffix == ".csv":
        return pyarrow.csv.read_csv(path)
    if suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return pa.Table.from_pylist(rows)
    raise DataError(f"{path}: unsupported table format; use one of {list(TABLE_SUFFIXES)}")


def pick_column(columns: list[str], explicit: str | None, candidates: tuple[str, ...], what: str, where: Any) -> str | None:
    if explicit:
        if explicit not in columns:
            raise DataError(f"{where} has no column {explicit!r} (columns: {columns})")
        return explicit
    return next((c for c in candidates if c in columns), None)


def image_bytes(value: Any, base_dir: Path | None) -> bytes:
    """An image cell -> encoded bytes: raw bytes, a Hugging Face Image struct
    ({"bytes", "path"}), or a path (relative to `base_dir`)."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value:
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return path.read_bytes()
    raise ImageError("no image: the cell is empty")


@dataclass(frozen=True)
class PairSource:
    """Where image-text pairs live; `table()` has columns `image` and `text`."""

    path: Path
    image_column: str | None = None
    text_column: str | None = None
    captions: Path | None = None  # the captions table of an image folder, if not found by name

    @cached_property
    def table_path(self) -> Path:
        if self.path.is_dir() and not list(self.path.glob("*.parquet")):
            if self.captions:
                return self.captions
            found = [self.path / name for name in CAPTION_FILES if (self.path / name).is_file()]
            if not found:
                raise DataError(
                    f"{self.path} has no captions table: add one of {list(CAPTION_FILES)} (columns "
                    f"file_name + text), or pass the captions file"
                )
            return found[0]
        return self.path

    @property
    def base_dir(self) -> Path:
        """What relative image paths in the table are relative to."""
        return self.table_path if self.table_path.is_dir() else self.table_path.parent

    @property
    def is_parquet(self) -> bool:
        return self.table_path.is_dir() or self.table_path.suffix.lower() == ".parquet"

    def _columns(self, names: list[str]) -> tuple[str, str]:
        image = pick_column(names, self.image_column, IMAGE_COLUMNS, "image", self.table_path)
        text = pick_column(names, self.text_column, TEXT_COLUMNS, "text", self.table_path)
        if image is None or text is None:
            raise DataError(
                f"{self.table_path}: need an image column (one of {list(IMAGE_COLUMNS)}) and a text column "
                f"(one of {list(TEXT_COLUMNS)}); found {names}; name them explicitly if different"
            )
        return image, text

    def table(self) -> Any:
        table = read_table(self.table_path)
        return table.select(list(self._columns(table.column_names))).rename_columns(["image", "text"])

    def dataset(self) -> Any:
        """A Ray Dataset with columns `image` and `text`. Parquet is read by Ray Data's
        workers (image bytes never pass through the driver); captions tables are small."""
        import ray.data

        if not self.is_parquet:
            return ray.data.from_arrow(self.table())
        import pyarrow.parquet as pq

        names = pq.ParquetDataset(str(self.table_path)).schema.names
        image, text = self._columns(names)
        # Ray Data reads parquet footers on a pool of actors, 32 whatever the number of files,
        # and starts it anew for every pass (each epoch, and the held-out set's each time):
        # on a small machine starting those processes took far longer than reading a few
        # files. One reader per file, up to Ray's default; FOOTER_ACTORS_ENV, if set, wins.
        # (Ray reads it when the read is planned, here in the driver.)
        chosen = os.environ.get(FOOTER_ACTORS_ENV)
        if not chosen:
            os.environ[FOOTER_ACTORS_ENV] = str(max(1, min(32, len(_parquet_files(self.table_path)))))
        try:
            ds = ray.data.read_parquet(str(self.table_path), columns=[image, text])
        finally:
            if chosen is None:
                os.environ.pop(FOOTER_ACTORS_ENV, None)
            elif not chosen:
                os.environ[FOOTER_ACTORS_ENV] = chosen  # as it was: empty
        return ds.rename_columns({image: "image", text: "text"}) if (image, text) != ("image", "text") else ds

    def count(self) -> int:
        if self.is_parquet:
            import pyarrow.parquet as pq

            return sum(pq.ParquetFile(f).metadata.num_rows for f in _parquet_files(self.table_path))
        return read_table(self.table_path).num_rows


def _parquet_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.parquet")) if path.is_dir() else [path]


def _unit_interval(value: Any, seed: int) -> float:
    """A pseudo-random number in [0, 1) fixed by the image (its path, or its bytes)."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("bytes")
    data = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else str(value).encode("utf-8")
    digest = hashlib.blake2b(data, digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "little") / 2.0**64


@dataclass(frozen=True)
class HeldOut:
    """Which rows are held out: a hash of each image, so the split is the same in every
    epoch and every resumed run, and needs nothing materialised."""

    fraction: float
    seed: int

    def contains(self, image: Any) -> bool:
        return _unit_interval(image, self.seed) < self.fraction


class PairEncoder:
    """Image-text rows -> training batches: images decoded, resized and cropped to uint8,
    captions tokenized and padded, exactly as serving does (the tokenizer's family padding).
    Unreadable images are dropped (and logged), never fatal. With `held_out` (fraction, seed,
    keep_held_out), only the training rows or only the held-out rows are kept."""

    def __init__(self, image_spec: dict[str, Any], tokenizer: dict[str, Any], base_dir: str | None = None,
                 held_out: tuple[float, int, bool] | None = None) -> None:
        self.split = HeldOut(held_out[0], held_out[1]) if held_out else None
        self.keep_held_out = bool(held_out and held_out[2])
        self.spec = ImageSpec.from_dict(image_spec)
        self.tokenizer = TokenizerInfo(**tokenizer).tokenizer()
        self.base_dir = Path(base_dir) if base_dir else None
        self.limits = ImageLimits()
        self.skipped = 0

    def encode(self, pixels: list[np.ndarray], texts: list[str]) -> dict[str, np.ndarray]:
        tok = self.tokenizer
        tokens = [t.ids for t in tok.encode(texts, truncate=True)]
        # As serving does: packed as the router packs, then padded as the model family's text
        # tower takes them (SigLIP: to the context length with its pad id). Stored rows all
        # have the context length (Ray Data joins batches), padded with the family's pad id.
        ids = np.full((len(tokens), tok.context_length), PAD_ID if tok.pad_id is None else tok.pad_id, dtype=np.int32)
        if tokens:
            packed = pack_tokens([np.asarray(t, dtype=np.int32) for t in tokens])
            padded = fit_padding(packed.ids, packed.lengths, tok.padding, tok.context_length, tok.pad_id)
            ids[:, : padded.shape[1]] = padded
        h, w = self.spec.input_hw
        return {
            "pixels": np.stack(pixels) if pixels else np.zeros((0, h, w, 3), dtype=np.uint8),
            "ids": ids,
            "length": np.asarray([len(s) for s in tokens], dtype=np.int32),
            "group": caption_groups(texts),
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels, texts = [], []
        for image, text in zip(batch["image"], batch["text"]):
            if self.split is not None and self.split.contains(image) != self.keep_held_out:
                continue
            if not isinstance(text, str) or not text.strip():
                self.skipped += 1
                continue
            try:
                pixels.append(prepare_image(image_bytes(image, self.base_dir), self.spec, self.limits))
            except (ImageError, OSError) as exc:
                self.skipped += 1
                logger.warning("skipping an unreadable training image (%d so far): %s", self.skipped, exc)
                continue
            texts.append(text)
        return self.encode(pixels, texts)
