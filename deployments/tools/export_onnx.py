"""Export a servable CLIP or SigLIP checkpoint to ONNX in the Xenova/Transformers.js layout.

    python -m deployments export-onnx SOURCE OUT_DIR [--quantize] [--fp16] [--combined] [--opset 17]

SOURCE is a hub id (through the Hugging Face cache, like serving), a local folder, or an
OpenAI `.pt` archive; transformers', open_clip's and OpenAI's layouts, ViT or ResNet, and
SigLIP (its logit_bias goes into the graphs' metadata).
Serve the result with `backend: onnx` and `source: OUT_DIR` (add `onnx_dtype: q8` for the
int8 graphs). Every graph is checked against torch on example inputs before it is kept.
"""

from __future__ import annotations

import argparse
import sys

from . import command_parser


def build_parser() -> argparse.ArgumentParser:
    from ..export.onnx_graphs import EXPORTERS  # (no torch at import)

    ap = command_parser("export-onnx", __doc__)
    ap.add_argument("source", help="hub id or local checkpoint folder")
    ap.add_argument("out_dir", help="folder to write (created if needed)")
    ap.add_argument("--revision", help="hub revision (branch, tag or commit)")
    ap.add_argument("--quantize", action="store_true", help="also write dynamic int8 graphs (*_quantized.onnx)")
    ap.add_argument("--fp16", action="store_true", help="also write fp16-weight graphs (*_fp16.onnx), for GPUs")
    ap.add_argument("--combined", action="store_true", help="also write onnx/model.onnx with both towers")
    ap.add_argument("--towers", default="image,text", help="comma-separated towers to export")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--exporter", choices=EXPORTERS, default="auto")
    ap.add_argument("--allow-pickle-weights", action="store_true",
                    help="read pickle weights when the checkpoint has no safetensors: pytorch_model.bin, "
                         "open_clip_pytorch_model.bin, OpenAI's .pt archives (pickle can run code)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..backends.checkpoint import CheckpointError
    from ..export.onnx_export import export_onnx

    try:
        report = export_onnx(
            args.source, args.out_dir, revision=args.revision, quantize=args.quantize, fp16=args.fp16,
            combined=args.combined, towers=tuple(t.strip() for t in args.towers.split(",") if t.strip()),
            opset=args.opset, exporter=args.exporter, allow_pickle_weights=args.allow_pickle_weights,
        )
    except CheckpointError as exc:  # a user's input, not a bug: one line, no traceback
        print(f"export-onnx: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.source} to {report.out_dir} ({report.exporter} exporter)")
    for name, cos in report.cosines.items():
        print(f"  {name:40s} cosine to torch {cos:.6f}")
    return 0

