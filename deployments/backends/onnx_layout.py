"""Where ONNX graphs live in a checkpoint folder: the layout of Xenova/Transformers.js repos.

    onnx/vision_model{suffix}.onnx   image tower: pixel_values -> image_embeds
    onnx/text_model{suffix}.onnx     text tower:  input_ids (+ attention_mask) -> text_embeds
    onnx/model{suffix}.onnx          both towers in one graph (the fallback)

`suffix` follows Transformers.js' `dtype` names. Graphs over 2 GB keep their weights
beside them (`*.onnx_data`, chunked `*.onnx_data_1`, or torch's `*.onnx.data`).
Pure names and paths: no onnxruntime here, so config validation can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Transformers.js dtype -> file suffix. "quantized" is the pre-v3 spelling of q8.
ONNX_DTYPE_SUFFIX: dict[str, str] = {
    "fp32": "",
    "fp16": "_fp16",
    "q8": "_quantized",
    "int8": "_int8",
    "uint8": "_uint8",
    "q4": "_q4",
    "q4f16": "_q4f16",
    "bnb4": "_bnb4",
}
ONNX_DTYPE_ALIASES = {"quantized": "q8"}
ONNX_DTYPES = (*ONNX_DTYPE_SUFFIX, *ONNX_DTYPE_ALIASES)

TOWER_GRAPH = {"image": "vision_model", "text": "text_model"}
COMBINED_GRAPH = "model"
TOWER_INPUTS = {"image": ("pixel_values",), "text": ("input_ids", "attention_mask")}
TOWER_OUTPUT = {"image": "image_embeds", "text": "text_embeds"}
# Graph metadata our export writes: exp(temperature), which split tower graphs otherwise lack,
# and a sigmoid-scored family's learned bias (SigLIP's logit_bias).
LOGIT_SCALE_METADATA = "clip_serve.logit_scale"
LOGIT_BIAS_METADATA = "clip_serve.logit_bias"
# The model families (preprocess/model_family.py) whose towers export to these graphs and
# that the onnx backend serves; a new family joins once both are checked on it.
ONNX_FAMILIES = ("clip", "siglip", "siglip2", "metaclip_2")


def canonical_onnx_dtype(name: str) -> str:
    name = ONNX_DTYPE_ALIASES.get(name, name)
    if name not in ONNX_DTYPE_SUFFIX:
        raise ValueError(f"unknown onnx_dtype {name!r}; known: {list(ONNX_DTYPES)}")
    return name


def graph_file(stem: str, onnx_dtype: str) -> str:
    """Repository-relative path of one graph, e.g. onnx/vision_model_quantized.onnx."""
    return f"onnx/{stem}{ONNX_DTYPE_SUFFIX[canonical_onnx_dtype(onnx_dtype)]}.onnx"


def graph_patterns(path: str) -> list[str]:
    """The graph and any external-data files beside it (hub allow_patterns, fnmatch)."""
    return [path, f"{path}_data", f"{path}_data_*", f"{path}.data"]


def tower_candidates(tower: str, onnx_dtype: str) -> list[str]:
    """The split graph first, then the combined one."""
    return [graph_file(TOWER_GRAPH[tower], onnx_dtype), graph_file(COMBINED_GRAPH, onnx_dtype)]


@dataclass(frozen=True)
class TowerGraph:
    path: Path
    relative: str
    combined: bool  # both towers in one graph: the tower is cut out at load time


class MissingGraphError(FileNotFoundError):
    pass


def find_tower_graph(folder: Path, source: str, tower: str, onnx_dtype: str) -> TowerGraph:
    split, combined = tower_candidates(tower, onnx_dtype)
    for relative, is_combined in ((split, False), (combined, True)):
        if (folder / relative).is_file():
            return TowerGraph(folder / relative, relative, is_combined)
    present = sorted(p.relative_to(folder).as_posix() for p in folder.glob("onnx/*.onnx"))
    hint = f"; it has {', '.join(present)} (pick another onnx_dtype)" if present else (
        "; it has no onnx/ graphs at all: export them with `python -m deployments export-onnx SOURCE OUT_DIR`"
    )
    raise MissingGraphError(
        f"checkpoint {source!r} ({folder}) has no ONNX graph for the {tower} tower with onnx_dtype "
        f"{canonical_onnx_dtype(onnx_dtype)!r}: looked for {split} and {combined}{hint}"
    )
