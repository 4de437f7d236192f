"""Eager against `torch_compile: true`, model-only, side by side in one process.

    python -m deployments bench compile [--dtype auto|float32|bfloat16] [--rounds 8] [--record docs/benchmarks.md]

Each tower is loaded twice through the torch backend (eager, compiled), both with one
thread, and the two are measured in alternating 3-second slices: items per CPU-second of
this process, whose median over the rounds other load on the machine barely moves.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ..tools import command_parser
from .common import DTYPE_CHOICES, bench_checkpoint, captions, cpu_dtype, record, table
from .model import _rate, load_tower, tokenize


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("bench compile", __doc__)
    ap.add_argument("--dtype", default="auto", type=cpu_dtype, choices=DTYPE_CHOICES,
                    metavar="{auto,float32,bfloat16}",
                    help="auto: bfloat16 where the CPU has native bf16 (AMX/AVX512-BF16), else float32")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--record", help="append the result to this markdown file")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    folder = bench_checkpoint()
    # Every model class loads before anything compiles: compiled graphs are guarded on
    # transformers' registry of loaded classes (deployments/backends/torch_compile.py).
    eager = {t: load_tower(folder, t, args.dtype, 1) for t in ("image", "text")}
    compiled, compile_s = {}, {}
    for tower in ("image", "text"):
        start = time.perf_counter()
        compiled[tower] = load_tower(folder, tower, args.dtype, 1, torch_compile=True)
        compile_s[tower] = time.perf_counter() - start
    h, w = eager["image"].image_spec.input_hw
    pixels = np.random.default_rng(0).integers(0, 256, size=(16, h, w, 3), dtype=np.uint8)
    texts = tokenize(eager["text"], captions(64))
    work = {"image": (lambda b: b.embed_images(pixels), 16), "text": (lambda b: b.embed_texts(texts.ids, texts.lengths), 64)}

    rows = [["tower (batch, 1 thread)", "eager items/CPU-s", "compiled items/CPU-s", "compiled / eager",
             "per round", "load + compile s"]]
    for tower, (call, items) in work.items():
        pairs = [tuple(_rate(lambda b=b: call(b), items, 3.0).per_cpu_s for b in (eager[tower], compiled[tower]))
                 for _ in range(args.rounds)]
        e, c = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        rows.append([f"{tower} ({items}, text length {texts.ids.shape[1]})" if tower == "text" else f"{tower} ({items})",
                     f"{e:.1f}", f"{c:.1f}", f"{c / e:.2f}x", " ".join(f"{b / a:.2f}" for a, b in pairs),
                     f"{compile_s[tower]:.1f}"])
    report = table(rows)
    print(report)
    if args.record:
        record(args.record, "", f"dtype {args.dtype}, medians over {args.rounds} alternating "
               "rounds of 3 s", report)
    return 0

