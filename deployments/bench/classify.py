"""Classify vs embed: with its labels cached, a /v1/classify request should cost about one
image embedding. Serves a ViT-B/32-sized CLIP (random weights, built once in a temp dir)
on a local Ray cluster and compares, at low load (one client, sequential requests), the
p50 latency of classifying an image against 10 cached labels with the p50 of embedding
the same image. Prints the machine, the figures and the ratio (target: <= 1.2).

    python -m deployments bench classify [--requests 40] [--keep-model DIR]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ..tools import command_parser
from .common import VIT_B32, machine, photo_jpeg, replicas_import_this_checkout
from .served import LABELS

replicas_import_this_checkout()

MODEL_ID = "bench/vit-b-32-random"


def router_side_us(dim: int = 512, rounds: int = 2000) -> float:
    """What classify adds in the router beyond the image embedding, measured in process:
    label validation, cache lookup (all hits), ensembling, scoring and the JSON body."""
    import asyncio

    import numpy as np

    from ..config import LimitsConfig
    from ..protocol.labels import PromptLimits, build_prompts
    from ..serving import scoring
    from ..serving.label_cache import LabelCache
    from ..serving.responses import JSONBytes
    from ..serving.routes.classify import classification
    from ..serving.zero_shot import Classified

    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, dim)).astype(np.float32)
    cache = LabelCache(10_000, 2**30)

    async def encode(prompts):
        vectors = rng.normal(size=(len(prompts), dim)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), "weights"

    async def one() -> None:
        prompts = build_prompts(LABELS, PromptLimits.from_config(LimitsConfig()), hypothesis_template="a photo of a {}.")
        found = await cache.lookup("bench", "weights", prompts.prompts, encode)
        classes = scoring.ensemble(found.vectors[np.asarray(prompts.index)])
        cosines = scoring.cosine_matrix(image, classes)
        result = Classified(cosines, scoring.probabilities(cosines, 100.0), 100.0, 0, 1, len(LABELS), len(LABELS))
        JSONBytes({"data": [classification(0, prompts.labels, result, None)]})

    async def run() -> float:
        await one()  # fills the cache
        t0 = time.perf_counter()
        for _ in range(rounds):
            await one()
        return (time.perf_counter() - t0) / rounds * 1e6

    return asyncio.run(run())


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("bench classify", __doc__)
    parser.add_argument("--requests", type=int, default=40, help="measured requests per kind")
    parser.add_argument("--keep-model", help="build the checkpoint here (reused if present) instead of a temp dir")
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import httpx
    import ray
    from ray import serve

    from ..checkpoint_builder import build_clip_checkpoint
    from ..launch import app_config, deploy

    workdir = Path(args.keep_model) if args.keep_model else Path(tempfile.mkdtemp(prefix="bench-classify-"))
    started = time.time()
    if not (workdir / "model.safetensors").is_file():
        build_clip_checkpoint(workdir, seed=0, **VIT_B32)
    print(f"checkpoint ready in {time.time() - started:.0f}s: {workdir}", flush=True)

    if not args.port:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            args.port = s.getsockname()[1]
    cpus = os.cpu_count() or 2
    app = {
        "variants": [{
            "id": MODEL_ID, "source": str(workdir), "cpu_threads": cpus,
            "image_deployment": {"ray_actor_options": {"num_cpus": 1}},
            "text_deployment": {"ray_actor_options": {"num_cpus": 0.5}},
        }],
        "router": {"deployment": {"ray_actor_options": {"num_cpus": 0.5}}},
    }
    ray.init(num_cpus=max(4, cpus), include_dashboard=False, log_to_driver=False)
    try:
        deploy([app_config(app)], "127.0.0.1", args.port)
        image = {"image": base64.b64encode(photo_jpeg(0)).decode()}
        embed_body = {"model": MODEL_ID, "input": [image]}
        classify_body = {"model": MODEL_ID, "input": [image], "labels": LABELS, "hypothesis_template": "a photo of a {}."}
        with httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=120) as client:
            def timed(path: str, body: dict) -> tuple[float, dict]:
                t0 = time.perf_counter()
                r = client.post(path, json=body)
                elapsed = time.perf_counter() - t0
                r.raise_for_status()
                return elapsed, r.json()

            _, first = timed("/v1/classify", classify_body)  # fills the label cache
            assert first["usage"]["cached_prompts"] == 0
            for _ in range(5):  # warm both paths
                timed("/v1/embeddings", embed_body)
                timed("/v1/classify", classify_body)
            load_before = os.getloadavg()[0]
            embed_s, classify_s = [], []
            for i in range(args.requests):  # interleaved ABBA, so drift and order hit both alike
                for kind in (("embed", "classify") if i % 2 == 0 else ("classify", "embed")):
                    if kind == "embed":
                        embed_s.append(timed("/v1/embeddings", embed_body)[0])
                        continue
                    elapsed, out = timed("/v1/classify", classify_body)
                    assert out["usage"]["cached_prompts"] == len(LABELS) and out["usage"]["prompt_tokens"] == 0
                    classify_s.append(elapsed)
        ratio = p50_ms(classify_s) / p50_ms(embed_s)
        dtype = json.loads(httpx.get(f"http://127.0.0.1:{args.port}/v1/models/{MODEL_ID}").text)["dtype"]
        print(json.dumps({
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "command": "python " + " ".join(sys.argv),
            "model": f"ViT-B/32-sized random CLIP, {dtype}",
            "image": "640x480 JPEG",
            "labels": len(LABELS),
            "requests_each": args.requests,
            "embed_p50_ms": round(p50_ms(embed_s), 1),
            "classify_p50_ms": round(p50_ms(classify_s), 1),
            "embed_p90_ms": round(sorted(embed_s)[int(0.9 * len(embed_s))] * 1000, 1),
            "classify_p90_ms": round(sorted(classify_s)[int(0.9 * len(classify_s))] * 1000, 1),
            "embed_min_ms": round(min(embed_s) * 1000, 1),
            "classify_min_ms": round(min(classify_s) * 1000, 1),
            # The machine may be shared: the 1-minute load average says how quiet it was.
            "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "ratio_p50": round(ratio, 3),
            "router_side_classify_us": round(router_side_us(), 1),
            "target": "<= 1.2",
            "pass": ratio <= 1.2,
        }, indent=2))
    finally:
        serve.shutdown()
        ray.shutdown()
        if not args.keep_model:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0

