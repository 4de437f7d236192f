"""Export any servable torch checkpoint to the Xenova/Transformers.js ONNX layout.

    OUT_DIR/config.json, preprocessor_config.json, tokenizer.json, ...   (copied; written
        from the checkpoint for open_clip and OpenAI sources, see _copy_metadata)
    OUT_DIR/onnx/vision_model.onnx, text_model.onnx                      (fp32)
    OUT_DIR/onnx/*_quantized.onnx   dynamic int8 (--quantize)
    OUT_DIR/onnx/*_fp16.onnx        fp16 weights, fp32 inputs/outputs (--fp16)
    OUT_DIR/onnx/model*.onnx        both towers in one graph (--combined)

Every written graph is run once with onnxruntime against the torch model on the same
example inputs; an export below its cosine bar fails instead of shipping.

SigLIP checkpoints (model family `siglip`) export too: the towers serving runs, the text
graph traced on rows padded to the context length with the pad id, and the learned
`logit_bias` written into every graph's metadata beside the temperature, so the onnx
backend scores sigmoid(logit_scale * cosine + logit_bias) as the torch backend does.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import clip_layouts as layouts
from ..backends.checkpoint import METADATA_FILES, Checkpoint
from ..backends.onnx_layout import (COMBINED_GRAPH, LOGIT_BIAS_METADATA, LOGIT_SCALE_METADATA, ONNX_FAMILIES,
                                    TOWER_GRAPH, graph_file)
from .onnx_graphs import GraphSpec, combined_spec, export_graph, torch_outputs, tower_spec

# Lowest cosine to the torch outputs on the example inputs, per file variant.
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "q8": 0.99}
_MAX_INLINE_BYTES = 1_900_000_000  # protobuf's 2 GB limit, with headroom


class ExportError(RuntimeError):
    pass


@dataclass
class ExportReport:
    out_dir: Path
    exporter: str = ""
    cosines: dict[str, float] = field(default_factory=dict)  # file -> min cosine vs torch

    @property
    def files(self) -> list[str]:
        return sorted(self.cosines)


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


def _save(model: Any, path: Path, metadata: dict[str, str]) -> None:
    """Save with our metadata; weights go beside the graph (`*.onnx_data`) past 2 GB."""
    import onnx

    for key, value in metadata.items():
        entry = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        entry.key, entry.value = key, value
    for stale in path.parent.glob(f"{path.name}*"):
        stale.unlink()
    if model.ByteSize() > _MAX_INLINE_BYTES:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{path.name}_data")
    else:
        onnx.save(model, str(path))


def _verify(path: Path, spec: GraphSpec, expected: list[np.ndarray], bar: float) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {name: t.numpy() for name, t in spec.inputs.items()}
    # Embeddings are what serving uses; the hidden states and logits just come along.
    wanted = [name for name in spec.outputs if name.endswith("_embeds")]
    got = session.run(wanted, feeds)
    cos = min(_cosine_min(g, expected[spec.outputs.index(n)]) for g, n in zip(got, wanted))
    if not cos >= bar:
        raise ExportError(f"{path.name}: onnxruntime output is at cosine {cos:.6f} of torch, below {bar}")
    return cos


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # uint8 weights per output channel, MatMul/Gemm only. Not int8: on x86 CPUs without
    # VNNI (AVX2-only hosts) onnxruntime runs u8s8 products with VPMADDUBSW, whose 16-bit
    # sums saturate, and an int8-weight graph lost accuracy there (cosine ~0.97 of fp32 on
    # the test checkpoint) while passing on the VNNI machine that exported it; u8u8 kernels
    # do not saturate on any x86 CPU, and the graph is served wherever it lands. int8 with
    # reduce_range (7-bit weights) avoids the saturation too but is less accurate. Quantizing
    # the patch Conv and the token-embedding Gather too was slower and less accurate.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing" advice on every call
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"],
                         use_external_data_format=src.stat().st_size > _MAX_INLINE_BYTES)
    finally:
        root.setLevel(level)


def _to_fp16(model: Any) -> Any:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True)


def _write_variants(stem: str, spec: GraphSpec, out: Path, tmp: Path, opts: dict[str, Any],
                    report: ExportReport, metadata: dict[str, str]) -> None:
    import onnx

    expected = torch_outputs(spec)
    raw = tmp / f"{stem}.onnx"
    report.exporter = export_graph(spec, raw, opset=opts["opset"], exporter=opts["exporter"])
    model = onnx.load(str(raw))  # inlines external data the exporter may have written
    fp32 = out / graph_file(stem, "fp32")
    _save(model, fp32, metadata)
    report.cosines[graph_file(stem, "fp32")] = _verify(fp32, spec, expected, MIN_COSINE["fp32"])
    if opts["fp16"]:
        path = out / graph_file(stem, "fp16")
        _save(_to_fp16(model), path, metadata)
        report.cosines[graph_file(stem, "fp16")] = _verify(path, spec, expected, MIN_COSINE["fp16"])
    del model
    if opts["quantize"]:
        path = out / graph_file(stem, "q8")
        _quantize(fp32, tmp / path.name)
        _save(onnx.load(str(tmp / path.name)), path, metadata)
        report.cosines[graph_file(stem, "q8")] = _verify(path, spec, expected, MIN_COSINE["q8"])


# What describes an open_clip or OpenAI checkpoint's model and preprocessing: the export
# writes transformers' equivalents instead (a folder's config.json there may be timm's).
_LAYOUT_DESCRIBED = {"config.json", "preprocessor_config.json", "processor_config.json", layouts.OPEN_CLIP_CONFIG}


def _copy_metadata(ckpt: Checkpoint, out: Path) -> None:
    """Make `out` self-describing in transformers' spelling, which the onnx backend reads:
    copied from a transformers checkpoint; for the other layouts config.json is their
    CLIPConfig equivalent (with "architecture") and preprocessor_config.json their transform."""
    native = ckpt.layout == layouts.TRANSFORMERS
    for name in METADATA_FILES:
        if (ckpt.path / name).is_file() and (native or name not in _LAYOUT_DESCRIBED):
            shutil.copyfile(ckpt.path / name, out / name)
    if not native:
        (out / "config.json").write_text(json.dumps(ckpt.config, indent=2), encoding="utf-8")
        (out / "preprocessor_config.json").write_text(json.dumps(ckpt.layout_preprocessor(), indent=2),
                                                      encoding="utf-8")
    if not (out / "tokenizer.json").is_file():  # slow-tokenizer repos, open_clip and OpenAI: the fast form
        (out / "tokenizer.json").write_text(ckpt.tokenizer_json(), encoding="utf-8")


def example_text_ids(ckpt: Checkpoint) -> Any:
    """Token rows the text graph is traced and checked on: CLIP's example_tokens(), or for the
    other families (their own vocabularies, BOS/EOS and padding) two texts through the
    checkpoint's own tokenizer, padded as serving pads them (engine/payloads.fit_padding)."""
    import torch

    from ..engine.payloads import fit_padding, pack_tokens
    from .onnx_graphs import example_tokens

    if ckpt.family.name == "clip":
        return example_tokens()
    info = ckpt.tokenizer_info()
    texts = ["a photo of a small red cat sleeping on the old sofa near a window", "a dog"]
    packed = pack_tokens([t.ids for t in info.tokenizer().encode(texts, truncate=True)])
    padded = fit_padding(packed.ids, packed.lengths, info.padding, info.context_length, info.pad_id)
    return torch.as_tensor(padded, dtype=torch.long)


def export_onnx(
    source: str | Path,
    out_dir: str | Path,
    *,
    revision: str | None = None,
    quantize: bool = False,
    fp16: bool = False,
    combined: bool = False,
    towers: tuple[str, ...] = ("image", "text"),
    opset: int = 17,
    exporter: str = "auto",
    allow_pickle_weights: bool = False,
) -> ExportReport:
    """Export `source` (hub id, folder or OpenAI archive, resolved like serving does) into
    `out_dir`. Any layout and architecture the torch backend serves exports."""
    from ..backends.torch_backend import TorchBackend

    if not towers or not set(towers) <= set(TOWER_GRAPH):
        raise ValueError(f"towers must be a non-empty subset of {list(TOWER_GRAPH)}, got {list(towers)}")
    files = TorchBackend.serving_files("image", allow_pickle_weights=allow_pickle_weights)
    ckpt = Checkpoint.open(str(source), revision, allow_patterns=files)
    family = ckpt.family
    if family.name not in ONNX_FAMILIES:
        raise ExportError(f"checkpoint {str(source)!r} is of model family {family.name!r}; ONNX export covers "
                          f"{', '.join(ONNX_FAMILIES)} (serve it with backend torch)")
    if ckpt.layout != layouts.TRANSFORMERS and not ckpt.weight_files():
        # An OpenAI archive's architecture, and a pickle file's temperature, are only known
        # once the weights are read (refused here, by name, without allow_pickle_weights).
        ckpt.load_weights(allow_pickle_weights)
    out = Path(out_dir)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    report = ExportReport(out)
    opts = {"opset": opset, "exporter": exporter, "quantize": quantize, "fp16": fp16}
    scale = ckpt.logit_scale(allow_pickle_weights)
    bias = ckpt.logit_bias() if family.score_function == "sigmoid" else None
    if family.score_function == "sigmoid" and (bias is None or scale is None):
        raise ExportError(f"checkpoint {str(source)!r} ({family.name}) has no logit_scale and logit_bias in its "
                          "weights: its graphs could not score as the model does")
    metadata = {"clip_serve.source": ckpt.fingerprint,
                **({LOGIT_SCALE_METADATA: repr(scale)} if scale is not None else {}),
                **({LOGIT_BIAS_METADATA: repr(bias)} if bias is not None else {})}
    image_hw = ckpt.image_spec().input_hw
    text_ids = example_text_ids(ckpt) if "text" in towers or combined else None

    def tower_module(tower: str) -> Any:
        # The module serving runs (TorchBackend builds it with clip_towers.build_tower).
        return TorchBackend.load(ckpt, tower, device="cpu", dtype="float32", threads=None,
                                 allow_pickle_weights=allow_pickle_weights).model

    modules: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="clip-export-") as tmp:
        for tower in towers:
            modules[tower] = tower_module(tower)
            spec = tower_spec(modules[tower], tower, image_hw, text_ids if tower == "text" else None)
            _write_variants(TOWER_GRAPH[tower], spec, out, Path(tmp), opts, report, metadata)
            del spec
            if not combined:
                del modules[tower]
        if combined:
            for tower in TOWER_GRAPH:
                if tower not in modules:
                    modules[tower] = tower_module(tower)
            # No logit_scale in the weights: CLIPModel's initial value, as from_pretrained gives.
            temperature = scale if scale is not None else math.exp(ckpt.config.get("logit_scale_init_value", 2.6592))
            spec = combined_spec(modules["image"], modules["text"], temperature, image_hw, bias, text_ids)
            _write_variants(COMBINED_GRAPH, spec, out, Path(tmp), opts, report, metadata)
    _copy_metadata(ckpt, out)
    return report
