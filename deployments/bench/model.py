"""Model-only throughput: the backend called directly in this process, no serving at all.
This is the ceiling the served figures are compared with."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from ..tools import command_parser
from .common import ARCHITECTURES, bench_checkpoint, captions, table


class Rate(float):
    """Items per second of wall time; `per_cpu_s`: items per CPU-second this process spent,
    which other load on a shared machine barely moves."""

    per_cpu_s: float = 0.0


def _rate(fn, items: int, min_seconds: float, in_flight: int = 1) -> Rate:
    """`in_flight` threads call `fn` concurrently (as an encoder replica's forward threads do)."""
    import threading

    fn()  # warm-up (allocations, oneDNN kernel selection)
    fn()
    calls = [0] * in_flight
    start, cpu = time.perf_counter(), time.process_time()
    stop_at = start + min_seconds

    def loop(k: int) -> None:
        while time.perf_counter() < stop_at or calls[k] < 3:
            fn()
            calls[k] += 1

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = sum(calls) * items
    rate = Rate(done / (time.perf_counter() - start))
    rate.per_cpu_s = done / max(time.process_time() - cpu, 1e-9)
    return rate


def load_tower(folder: Path, tower: str, dtype: str, threads: int | None, backend: str = "torch",
               device: str = "cpu", **options):
    """A tower on any registered backend (`options`: that backend's load options)."""
    from ..backends.checkpoint import Checkpoint
    from ..backends.registry import get_backend

    return get_backend(backend).load(Checkpoint.open(str(folder)), tower, device=device, dtype=dtype,
                                     threads=threads, **options)


def image_throughput(folder: Path, dtype: str, threads: int, batch_sizes=(16, 32, 64), min_seconds=4.0,
                     backend: str = "torch", in_flight: int = 1, **options):
    """Best items/s over `batch_sizes`; `in_flight` concurrent forwards share `threads`."""
    tower = load_tower(folder, "image", dtype, max(1, threads // in_flight), backend, **options)
    h, w = tower.image_spec.input_hw
    rng = np.random.default_rng(0)
    rates = {}
    for bs in batch_sizes:
        pixels = rng.integers(0, 256, size=(bs, h, w, 3), dtype=np.uint8)
        rates[bs] = _rate(lambda: tower.embed_images(pixels), bs, min_seconds, in_flight)
    best = max(rates, key=rates.get)
    return rates[best], best, rates


def tokenize(tower, texts: list[str]):
    """Texts -> the padded token batch (`.ids`, `.lengths`) a text replica receives."""
    from ..engine.payloads import pack_tokens

    return pack_tokens([e.ids for e in tower.tokenizer_info.tokenizer().encode(texts, truncate=True)])


def text_throughput(folder: Path, dtype: str, threads: int, texts: list[str], batch_size=64, min_seconds=4.0,
                    backend: str = "torch", in_flight: int = 1, **options):
    tower = load_tower(folder, "text", dtype, max(1, threads // in_flight), backend, **options)
    batch = tokenize(tower, (texts * batch_size)[:batch_size])
    return _rate(lambda: tower.embed_texts(batch.ids, batch.lengths), batch_size, min_seconds, in_flight)


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("bench model", __doc__)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads per tower")
    ap.add_argument("--backend", default="torch", help="a registered backend (torch, onnx needs an exported folder)")
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per figure")
    ap.add_argument("--arch", action="append", choices=ARCHITECTURES,
                    help="full-size random-weight model(s) to measure, side by side (default: all)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = [["model", "tower", "items/s", "items per CPU-second", "batch"]]
    for arch in args.arch or ARCHITECTURES:
        folder = bench_checkpoint(arch)
        image, batch, _ = image_throughput(folder, args.dtype, args.threads, min_seconds=args.seconds,
                                           backend=args.backend)
        text = text_throughput(folder, args.dtype, args.threads, captions(256), min_seconds=args.seconds,
                               backend=args.backend)
        rows += [[arch, "image", f"{image:.1f}", f"{image.per_cpu_s:.1f}", str(batch)],
                 [arch, "text", f"{text:.1f}", f"{text.per_cpu_s:.1f}", "64"]]
    print(table(rows))
    return 0
