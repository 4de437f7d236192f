"""Batch embedding job throughput next to the served path and the model alone, same machine.

    python -m deployments bench jobs [--images 512] [--dtype auto|float32|bfloat16] [--seconds 20] [--record docs/benchmarks.md]

Uses the ViT-B/32-sized random checkpoint of deployments/bench/served.py (speed does not depend on
the weights) and 640x480 JPEG photos. Three figures for the image tower:
  1. model-only: the backend called directly (uint8 in, vectors out; no decoding);
  2. batch job: deployments/tools/embed.py's pipeline on a local Ray cluster, files on disk
     -> decode + resize -> embed -> parquet; steady state (the actors' busy time) and end
     to end (including actor start);
  3. served: POST /v1/embeddings with 16 base64 JPEGs per request, 4 in flight.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from ..tools import command_parser
from .common import (DTYPE_CHOICES, MODEL_ID, REPO, bench_checkpoint, body, cpu_dtype, photo_jpeg, record,
    replicas_import_this_checkout, table)
from .load import run_load
from .model import image_throughput
from .served import app_args, wait_ready




def batch_job(folder: Path, images: Path, out: Path, dtype: str, threads: int, workers: int) -> dict:
    from ..config import VariantConfig
    from ..jobs.embedding import EmbedJob, run_embedding_job

    variant = VariantConfig(id=MODEL_ID, source=str(folder), dtype=dtype, device="cpu", cpu_threads=threads)
    job = EmbedJob(input=str(images), output=str(out), variant=variant, shard_size=128, batch_size=32,
                   workers=workers, cpus_per_worker=threads, decode_threads=2, overwrite=True)
    started = time.perf_counter()
    report = run_embedding_job(job, log=lambda line: print("  " + line, flush=True))
    wall = time.perf_counter() - started
    shards = [json.loads(p.read_text()) for p in sorted((out / "_shards").glob("part-*.json"))]
    busy = sum(s["seconds"] for s in shards) / workers
    return {"items": report["items_ok"], "end_to_end": report["items_ok"] / wall,
            "steady": report["items_ok"] / busy if busy else 0.0, "wall": wall}


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("bench jobs", __doc__)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--dtype", default="auto", type=cpu_dtype, choices=DTYPE_CHOICES,
                    metavar="{auto,float32,bfloat16}",
                    help="auto: bfloat16 where the CPU has native bf16 (AMX/AVX512-BF16), else float32")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (job actor, encoder)")
    ap.add_argument("--workers", type=int, default=1, help="batch job actors")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds of served load")
    ap.add_argument("--port", type=int, default=8124)
    ap.add_argument("--record", help="append the result to this markdown file")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    folder = bench_checkpoint()
    print(f"model-only image tower, {args.dtype}, {args.threads} threads ...", flush=True)
    model_only, model_bs, _ = image_throughput(folder, args.dtype, args.threads, batch_sizes=(32,))

    import ray

    replicas_import_this_checkout()  # the replicas run the code this run measures

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        jpegs = [photo_jpeg(seed) for seed in range(64)]
        for i in range(args.images):
            (images / f"{i:06d}.jpg").write_bytes(jpegs[i % len(jpegs)])
        print(f"batch job: {args.images} JPEGs, {args.workers} actor(s) ...", flush=True)
        job = batch_job(folder, images, Path(tmp) / "out", args.dtype, args.threads, args.workers)

    import base64

    from ..launch import app_config, deploy

    print("served: 16 images/request, 4 in flight ...", flush=True)
    deploy([app_config(app_args(folder, args.dtype, args.threads))], "127.0.0.1", args.port)
    wait_ready(f"http://127.0.0.1:{args.port}")
    b64 = [base64.b64encode(j).decode() for j in jpegs[:32]]
    bodies = [body({"input": [{"image": b64[(k + i) % 32]} for i in range(16)], "encoding_format": "base64"})
              for k in range(8)]
    served = run_load("served", f"http://127.0.0.1:{args.port}/v1/embeddings", bodies, concurrency=4,
                      items_per_request=16, seconds=args.seconds)
    from ray import serve

    serve.shutdown()
    ray.shutdown()

    rows = [["image tower, ViT-B/32 size, 640x480 JPEG", "images/s", "% of model-only"],
            [f"model-only (batch {model_bs}, uint8 in, no decoding)", f"{model_only:.1f}", "100%"],
            ["batch job, steady state (decode + embed + parquet)", f"{job['steady']:.1f}",
             f"{100 * job['steady'] / model_only:.0f}%"],
            [f"batch job, end to end ({job['items']} images incl. actor start, {job['wall']:.0f} s)",
             f"{job['end_to_end']:.1f}", f"{100 * job['end_to_end'] / model_only:.0f}%"],
            ["served: /v1/embeddings, 16 images/request, 4 in flight", f"{served.items_per_s:.1f}",
             f"{100 * served.items_per_s / model_only:.0f}%"]]
    report = table(rows) + (f"\n\nserved errors: {served.errors}" if served.errors else "")
    print("\n" + report)
    if args.record:
        record(args.record, "Batch embedding job · ",
               f"dtype {args.dtype}, {args.threads} threads, {args.workers} job actor(s)", report)
    return 0

