"""What a router spends per image before any model runs: parse a 16-image JSON request,
decode each base64 JPEG, decode and resize it (the serving code's own functions), on one
core and on every core at once. On a GPU machine this, not the GPU, bounds the served
figure; deployments/bench/gpu.py reports both."""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context

import numpy as np

from ..tools import command_parser
from .common import bench_checkpoint, request_bodies


_STATE: dict = {}


def _init(bodies: list[bytes], spec, limits) -> None:
    _STATE.update(bodies=bodies, spec=spec, limits=limits)


def _work(requests: int) -> tuple[int, float]:
    """(images prepared, CPU seconds): `requests` request bodies handled as a router does."""
    from ..preprocess.images import decode_image_source, prepare_image

    bodies, spec, limits = _STATE["bodies"], _STATE["spec"], _STATE["limits"]
    images, cpu = 0, time.process_time()
    for k in range(requests):
        payload = json.loads(bodies[k % len(bodies)])
        pixels = np.stack([prepare_image(decode_image_source(item["image"], limits), spec, limits)
                           for item in payload["input"]])
        images += len(pixels)
    return images, time.process_time() - cpu


def router_images_per_s(bodies: list[bytes], spec, limits, processes: int, seconds: float) -> tuple[float, float]:
    """(images/s over `processes` worker processes, images per CPU-second: one core's rate)."""
    processes = max(1, min(processes, os.cpu_count() or 1))
    # spawn: the parent may hold a CUDA context, which a forked child must not inherit.
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn"), initializer=_init,
                             initargs=(bodies, spec, limits)) as pool:
        list(pool.map(_work, [1] * processes))  # imports and first decodes out of the timing
        images, cpu, start = 0, 0.0, time.perf_counter()
        pending = {pool.submit(_work, 2) for _ in range(2 * processes)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                n, c = future.result()
                images, cpu = images + n, cpu + c
                if time.perf_counter() - start < seconds:
                    pending.add(pool.submit(_work, 2))
        wall = time.perf_counter() - start
    return images / wall, images / max(cpu, 1e-9)


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("bench router-cpu", __doc__)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="worker processes (routers)")
    ap.add_argument("--seconds", type=float, default=4.0)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..backends.checkpoint import Checkpoint
    from ..preprocess.images import ImageLimits, b64

    spec = Checkpoint.open(str(bench_checkpoint())).image_spec()
    all_cores, per_core = router_images_per_s(request_bodies(), spec, ImageLimits(), args.processes, args.seconds)
    print(f"router work per 640x480 JPEG, 16 per request (JSON, base64 by {b64.__name__}, decode, resize): "
          f"{per_core:.0f} images per CPU-second; {all_cores:.0f} images/s on {args.processes} processes")
    return 0
