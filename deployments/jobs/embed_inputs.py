"""What the batch embedding job reads, cut into numbered shards.

The plan is a pure function of the input, so a rerun computes the same shards and can
skip those whose output already exists. Folders and tables carry their items inside each
shard (ids, paths, texts: small); an OpenAI batch file is cut into byte ranges of whole
lines, so request bodies (often base64 images) never pass through the driver.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .datasets import IMAGE_COLUMNS, TEXT_COLUMNS, DataError, list_images, pick_column, read_table

InputFormat = Literal["auto", "images", "table", "openai"]


@dataclass
class ShardPlan:
    format: str  # images | table | openai
    shards: list[dict[str, Any]]
    n_items: int
    digest: str  # changes when the input's items change


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "table" if any(path.glob("*.parquet")) else "images"
    if path.suffix.lower() == ".jsonl":
        with path.open("rb") as f:
            first = next((line for line in f if line.strip()), b"")
        try:
            row = json.loads(first) if first else {}
        except json.JSONDecodeError:
            row = {}
        if isinstance(row, dict) and "custom_id" in row and "body" in row:
            return "openai"
    return "table"


def _chunks(items: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    return [{"index": k, "items": items[i : i + size]} for k, i in enumerate(range(0, len(items), size))]


def _digest(parts: list[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:20]


def plan_images(folder: Path, shard_size: int) -> ShardPlan:
    names = list_images(folder)
    items = [{"id": name, "image": str(folder / name)} for name in names]
    return ShardPlan("images", _chunks(items, shard_size), len(items), _digest(names))


def plan_table(path: Path, shard_size: int, id_column: str | None, text_column: str | None,
               image_column: str | None) -> ShardPlan:
    table = read_table(path)
    names = table.column_names
    text = pick_column(names, text_column, TEXT_COLUMNS, "text", path) if not image_column else None
    image = pick_column(names, image_column, IMAGE_COLUMNS, "image", path) if not text_column else None
    if bool(text) == bool(image):
        raise DataError(f"{path}: say which column to embed with --text-column or --image-column (columns: {names})")
    ids = pick_column(names, id_column, ("id",), "id", path)
    values = table.column(text or image).to_pylist()
    keys = [str(v) for v in table.column(ids).to_pylist()] if ids else [str(i) for i in range(len(values))]
    base = path if path.is_dir() else path.parent
    if text:
        items = [{"id": k, "text": v} for k, v in zip(keys, values)]
    else:  # paths relative to the table's folder
        items = [{"id": k, "image": v if isinstance(v, (bytes, type(None))) else str(base / v)}
                 for k, v in zip(keys, values)]
    return ShardPlan("table", _chunks(items, shard_size), len(items), _digest([f"{k}\t{v}" for k, v in zip(keys, values)]))


def plan_openai(path: Path, shard_size: int) -> ShardPlan:
    """Byte ranges of `shard_size` non-empty lines each; `first_line` numbers the range's
    first line (1-based) so problems can name the line."""
    shards: list[dict[str, Any]] = []
    h = hashlib.sha256()
    start = offset = lines = n_items = 0
    first_line = 1
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            offset += len(line)
            h.update(line)
            if not line.strip():
                continue
            lines += 1
            n_items += 1
            if lines == shard_size:
                shards.append({"index": len(shards), "offset": start, "length": offset - start, "first_line": first_line})
                start, lines, first_line = offset, 0, number + 1
    if lines:
        shards.append({"index": len(shards), "offset": start, "length": offset - start, "first_line": first_line})
    return ShardPlan("openai", shards, n_items, h.hexdigest()[:20])


def plan_shards(path: Path, fmt: InputFormat, shard_size: int, *, id_column: str | None = None,
                text_column: str | None = None, image_column: str | None = None) -> ShardPlan:
    path = Path(path)
    if not path.exists():
        raise DataError(f"input {path} does not exist")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "images":
        if not path.is_dir():
            raise DataError(f"--format images needs a folder, not {path}")
        return plan_images(path, shard_size)
    if fmt == "openai":
        return plan_openai(path, shard_size)
    return plan_table(path, shard_size, id_column, text_column, image_column)


def read_lines(path: Path, shard: dict[str, Any]) -> list[tuple[int, str]]:
    """An OpenAI shard's (line number, line) pairs, empty lines skipped."""
    with Path(path).open("rb") as f:
        f.seek(shard["offset"])
        data = f.read(shard["length"])
    lines = data.decode("utf-8", errors="replace").split("\n")
    return [(shard["first_line"] + i, line) for i, line in enumerate(lines) if line.strip()]
