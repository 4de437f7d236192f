"""Model-only throughput: the backend called directly in this process, no serving at all.
This is the ceiling the served figures are compared with."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


class Rate(float):
    """Items per second of wall time; `per_cpu_s`: items per CPU-second this process spent,
    which other load on a shared machine barely moves."""

    per_cpu_s: float = 0.0


def _rate(fn, items: int, min_seconds: float) -> Rate:
    fn()  # warm-up (allocations, oneDNN kernel selection)
    fn()
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and n >= 3:
            rate = Rate(n * items / elapsed)
            rate.per_cpu_s = n * items / max(time.process_time() - cpu, 1e-9)
            return rate


def load_tower(folder: Path, tower: str, dtype: str, threads: int, backend: str = "torch", **options):
    """A tower on any registered backend (`options`: that backend's load options)."""
    from deployments.backends.checkpoint import Checkpoint
    from deployments.backends.registry import get_backend

    return get_backend(backend).load(Checkpoint.open(str(folder)), tower, device="cpu", dtype=dtype,
                                     threads=threads, **options)


def image_throughput(folder: Path, dtype: str, threads: int, batch_sizes=(16, 32, 64), min_seconds=4.0,
                     backend: str = "torch", **options):
    tower = load_tower(folder, "image", dtype, threads, backend, **options)
    h, w = tower.image_spec.input_hw
    rng = np.random.default_rng(0)
    rates = {}
    for bs in batch_sizes:
        pixels = rng.integers(0, 256, size=(bs, h, w, 3), dtype=np.uint8)
        rates[bs] = _rate(lambda: tower.embed_images(pixels), bs, min_seconds)
    best = max(rates, key=rates.get)
    return rates[best], best, rates


def text_throughput(folder: Path, dtype: str, threads: int, texts: list[str], batch_size=64, min_seconds=4.0,
                    backend: str = "torch", **options):
    from deployments.preprocess.tokenizer import ClipTokenizer
    from deployments.serving.payloads import pack_tokens

    tower = load_tower(folder, "text", dtype, threads, backend, **options)
    t = tower.tokenizer_info
    tok = ClipTokenizer(t.json, t.context_length, t.bos_id, t.eos_id, t.vocab_size)
    batch = pack_tokens([e.ids for e in tok.encode((texts * batch_size)[:batch_size], truncate=True)])
    return _rate(lambda: tower.embed_texts(batch.ids, batch.lengths), batch_size, min_seconds)
