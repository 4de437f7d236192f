"""What a router spends per image before any model runs: parse a 16-image JSON request,
decode each base64 JPEG, decode and resize it (the serving code's own functions), on one
core and on every core at once. On a GPU machine this, not the GPU, bounds the served
figure; scripts/bench_gpu.py reports both."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context

import numpy as np

_STATE: dict = {}


def _init(bodies: list[bytes], spec, limits) -> None:
    _STATE.update(bodies=bodies, spec=spec, limits=limits)


def _work(requests: int) -> tuple[int, float]:
    """(images prepared, CPU seconds): `requests` request bodies handled as a router does."""
    from deployments.preprocess.images import decode_image_source, prepare_image

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
