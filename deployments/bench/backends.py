"""ONNX Runtime (fp32, int8) against the torch backend (fp32, bf16): one run, one machine.

    python -m deployments bench backends [--seconds 15] [--threads 2] [--record docs/benchmarks.md]

On a ViT-B/32-sized CLIP with random weights (speed does not depend on the weights; built
and exported once, cached), measures for each runtime:
  model-only  the backend called in this process: images/s at batch 32, texts/s at batch 64
  served      the HTTP API on a local Ray cluster, all four variants deployed side by side:
              16 images per request and 64 texts per request, 4 requests in flight
and prints them with ratios to torch fp32 and served/model-only.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import os
import subprocess
import time
from pathlib import Path

from ..tools import command_parser
from .common import (bench_checkpoint, body, captions, command, commit, machine, photo_jpeg,
    replicas_import_this_checkout, table)
from .load import run_load
from .model import image_throughput, text_throughput
from .served import wait_ready


# name -> (backend, variant config fields, model-only load options)
RUNTIMES = {
    "torch fp32": ("torch", {"dtype": "float32"}, {"dtype": "float32"}),
    "torch bf16": ("torch", {"dtype": "bfloat16"}, {"dtype": "bfloat16"}),
    "onnx fp32": ("onnx", {"options": {"onnx_dtype": "fp32"}}, {"dtype": "float32", "onnx_dtype": "fp32"}),
    "onnx int8": ("onnx", {"options": {"onnx_dtype": "q8"}}, {"dtype": "float32", "onnx_dtype": "q8"}),
}


def onnx_checkpoint(folder: Path) -> Path:
    from ..export.onnx_export import export_onnx

    out = folder.with_name(folder.name + "-onnx")
    if not (out / "onnx" / "text_model_quantized.onnx").is_file():
        print(f"exporting {folder} to {out} (fp32 + int8) ...", flush=True)
        report = export_onnx(folder, out, quantize=True)
        print("  " + ", ".join(f"{k}: cos {v:.5f}" for k, v in report.cosines.items()), flush=True)
    return out


def model_id(name: str) -> str:
    return "bench/" + name.replace(" ", "-")


def app_args(folders: dict[str, Path], threads: int) -> dict:
    encoder = {"ray_actor_options": {"num_cpus": 1}}
    variants = [{"id": model_id(name), "source": str(folders[backend]), "backend": backend, "device": "cpu",
                 "cpu_threads": threads, "image_deployment": encoder, "text_deployment": encoder, **fields}
                for name, (backend, fields, _) in RUNTIMES.items()]
    return {"variants": variants, "router": {"deployment": {"ray_actor_options": {"num_cpus": 1}}}}


def load_line() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def descendants_cpu_seconds() -> float:
    """CPU time of every process this one started (the Ray cluster: replicas, proxy, raylet),
    so served figures can be read per CPU-second whatever else runs on the machine."""
    parent, cpu = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.parent.name)
        parent[pid], cpu[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    me, total = os.getpid(), 0.0
    for pid, seconds in cpu.items():
        p = parent.get(pid)
        while p and p != me:
            p = parent.get(p)
        total += seconds if p == me else 0.0
    return total


def best(a: tuple, b: tuple) -> tuple:
    return tuple(max(x, y) for x, y in zip(a, b))


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("bench backends", __doc__)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads per encoder")
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds per served scenario")
    ap.add_argument("--model-seconds", type=float, default=4.0, help="measured seconds per model-only figure")
    ap.add_argument("--port", type=int, default=8124)
    ap.add_argument("--record", help="append the result to this markdown file")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started, load_before = time.perf_counter(), load_line()

    folders = {"torch": bench_checkpoint()}
    folders["onnx"] = onnx_checkpoint(folders["torch"])
    texts = captions(256)

    def measure_model_only(when: str) -> dict[str, tuple[float, ...]]:
        """runtime -> (images/s, texts/s, images per CPU-s, texts per CPU-s)"""
        rates = {}
        for name, (backend, _, options) in RUNTIMES.items():
            print(f"model-only ({when}): {name} ...", flush=True)
            img, _, _ = image_throughput(folders[backend], threads=args.threads, batch_sizes=(32,),
                                         min_seconds=args.model_seconds, backend=backend, **options)
            txt = text_throughput(folders[backend], threads=args.threads, texts=texts,
                                  min_seconds=args.model_seconds, backend=backend, **options)
            rates[name] = (img, txt, img.per_cpu_s, txt.per_cpu_s)
        return rates

    before = measure_model_only("before")

    import ray

    replicas_import_this_checkout()  # the replicas run the code this run measures

    from ..launch import app_config, deploy

    ray.init(address="local", num_cpus=2 * len(RUNTIMES) + 2, include_dashboard=False, log_to_driver=False)
    base = f"http://127.0.0.1:{args.port}"
    deploy([app_config(app_args(folders, args.threads))], "127.0.0.1", args.port, blocking=False)
    wait_ready(base)
    jpegs = [base64.b64encode(photo_jpeg(s)).decode() for s in range(32)]
    served: dict[str, tuple[float, ...]] = {}
    errors = 0
    for name in RUNTIMES:
        model = model_id(name)
        sixteen = [body({"input": [{"image": jpegs[(k + i) % 32]} for i in range(16)], "encoding_format": "base64"},
                        model) for k in range(8)]
        sixty_four = [body({"input": texts[k:k + 64], "encoding_format": "base64"}, model) for k in range(0, 192, 64)]
        print(f"served: {name} ...", flush=True)
        figures = []
        for what, bodies, per_request in (("images", sixteen, 16), ("texts", sixty_four, 64)):
            cpu0, t0 = descendants_cpu_seconds(), time.perf_counter()
            result = run_load(f"{name} {what}", f"{base}/v1/embeddings", bodies, concurrency=4,
                              items_per_request=per_request, seconds=args.seconds)
            # Items per CPU-second of the whole cluster (warm-up included on both sides).
            items = result.items_per_s * (time.perf_counter() - t0)
            figures.append((result.items_per_s, items / max(descendants_cpu_seconds() - cpu0, 1e-9)))
            errors += sum(result.errors.values())
        (si, si_cpu), (st, st_cpu) = figures
        served[name] = (si, st, si_cpu, st_cpu)
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    # This machine's speed drifts (shared cores): keep each runtime's best of two passes.
    after = measure_model_only("after")
    model_only = {k: best(before[k], after[k]) for k in RUNTIMES}

    ref = model_only["torch fp32"]
    rows = [["runtime", "model-only img/s (b32)", "model-only txt/s (b64)", "model-only per CPU-s (img / txt)",
             "vs torch fp32 per CPU-s (img / txt)", "served img/s (16/req, c=4)", "served txt/s (64/req, c=4)",
             "served per CPU-s (img / txt)"]]
    for name in RUNTIMES:
        (mi, mt, mi_cpu, mt_cpu), (si, st, si_cpu, st_cpu) = model_only[name], served[name]
        rows.append([name, f"{mi:.1f}", f"{mt:.1f}", f"{mi_cpu:.1f} / {mt_cpu:.1f}",
                     f"{mi_cpu / ref[2]:.2f}x / {mt_cpu / ref[3]:.2f}x", f"{si:.1f}", f"{st:.1f}",
                     f"{si_cpu:.1f} / {st_cpu:.1f}"])
    report = "\n".join([
        table(rows), "",
        f"{args.threads} intra-op threads per encoder replica (num_cpus 1 each), all four variants deployed "
        f"side by side; served requests with errors: {errors}. Per CPU-s: items per CPU-second of the "
        "measuring process (model-only) or of the whole Ray cluster, router and proxy included (served); "
        "other load on the machine moves these less than items/s (with 2+ threads, torch's OpenMP "
        "threads still burn CPU waiting for preempted peers).",
        "model-only before/after (img/s, txt/s): " + "; ".join(
            f"{k} {before[k][0]:.1f}/{after[k][0]:.1f}, {before[k][1]:.1f}/{after[k][1]:.1f}" for k in RUNTIMES),
        f"machine load before: `{load_before}`", f"machine load after: `{load_line()}`",
        f"total run time: {time.perf_counter() - started:.0f} s",
    ])
    print("\n" + report)
    if args.record:
        path = Path(args.record)
        text = path.read_text() if path.is_file() else "# Benchmarks\n"
        if "\n### Backends\n" not in text:
            text += "\n### Backends\n\nONNX Runtime against the torch backend, `python -m deployments bench backends`.\n"
        text += (f"\n#### {datetime.date.today().isoformat()} · commit {commit()} · {machine()}\n\n"
                 f"Command: `{command()}`\n\n{report}\n")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0

