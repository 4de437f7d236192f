"""One command, one run, one table: model-only throughput against the served API.

    python -m deployments bench served [--dtype auto|float32|bfloat16] [--seconds 20] [--usd-per-hour 0.10] [--ingress haproxy|proxy]
                            [--record docs/benchmarks.md]

Builds (once, cached) a ViT-B/32-sized CLIP with random weights — speed does not depend
on the weights — measures each tower alone in this process, serves it on a local Ray
cluster, drives the HTTP API with closed-loop load and prints every served figure as a
ratio of the best model-only figure measured in the same run (before and after the
served runs: this machine's speed drifts, so the best is kept).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..client import wait_ready
from ..ingress import DEFAULT_INGRESS, INGRESS_MODES, ingress_env
from ..engine.threads import DECODE_THREAD, FORWARD_THREAD, TOKENIZE_THREAD
from ..tools import command_parser
from .common import (ARCHITECTURES, DTYPE_CHOICES, MODEL_ID, bench_checkpoint, body, captions, cpu_dtype, photo_jpeg, record,
    replicas_import_this_checkout, table)
from .load import LoadResult, run_alternating, run_load
from .model import Rate, image_throughput, text_throughput


THREAD_KINDS = {FORWARD_THREAD: "forward", DECODE_THREAD: "decode", TOKENIZE_THREAD: "tokenize"}
LABELS = ["cat", "dog", "car", "tree", "house", "person", "bicycle", "boat", "airplane", "flower"]


def serve_processes() -> dict[int, str]:
    """pid -> role for the bench app's replicas (by deployment), Serve's HTTP proxy and HAProxy."""
    out: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if "ServeReplica:clip:" in title:
            out[int(proc.name)] = title.split("ServeReplica:clip:", 1)[1].split()[0].split(".")[0].split(":")[0]
        elif title.startswith(("ray::ProxyActor", "ray::HAProxyManager")):
            out[int(proc.name)] = "HTTP proxy"  # Serve's Python proxy, or the actor managing HAProxy
        elif title.endswith("/haproxy"):
            out[int(proc.name)] = "HAProxy"
    return out


def replica_peak_rss() -> dict[str, float]:
    """Peak RSS (VmHWM, GB) of each Serve replica process of the bench app, by deployment."""
    out: dict[str, float] = {}
    for pid, role in serve_processes().items():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:") and role not in ("HTTP proxy", "HAProxy"):
                    out[role] = max(out.get(role, 0.0), int(line.split()[1]) / 2**20)
        except OSError:
            continue
    return out


def cpu_seconds_by_role() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each Serve process role and this client."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in cpu[:8])
    out: dict[str, float] = {"client": time.process_time(), "machine": (user + nice + system + irq + softirq) / tick,
                             "steal": steal / tick}  # steal: taken by the hypervisor (a noisy VM)
    for pid, role in serve_processes().items():
        try:
            total = _cpu_ticks(Path(f"/proc/{pid}/stat")) / tick
        except OSError:
            continue
        # Named worker threads (deployments/engine/threads.py) get their own column; the
        # process's column keeps the rest (request handling, Ray's threads, exited threads).
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                kind = THREAD_KINDS.get((task / "comm").read_text().strip())
                used = _cpu_ticks(task / "stat") / tick if kind else 0.0
            except OSError:
                continue
            if kind:
                out[f"{role} {kind}"] = out.get(f"{role} {kind}", 0.0) + used
                total -= used
        out[role] = out.get(role, 0.0) + total
    return out


def _cpu_ticks(stat: Path) -> int:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def app_args(folder: Path, dtype: str, threads: int, overrides: list[str] = ()) -> dict:
    """The served app; `overrides` are `router.FIELD=VALUE` / `variant.FIELD=VALUE` (JSON values)."""
    encoder = {"ray_actor_options": {"num_cpus": 1}}
    args = {
        "variants": [{"id": MODEL_ID, "source": str(folder), "dtype": dtype, "device": "cpu", "cpu_threads": threads,
                      "image_deployment": encoder, "text_deployment": encoder}],
        "router": {"deployment": {"ray_actor_options": {"num_cpus": 1}}},
    }
    for item in overrides:
        key, value = item.split("=", 1)
        section, field = key.split(".", 1)
        target = args["router"] if section == "router" else args["variants"][0]
        target[field] = json.loads(value)
    return args


def classify_vs_embed(base: str, jpeg_b64: str, rounds: int) -> tuple[LoadResult, LoadResult]:
    """One image embedded vs the same image classified against 10 labels already in the
    router's label cache (the first classify fills it), one client, interleaved."""
    image = [{"image": jpeg_b64}]
    classify = body({"input": image, "labels": LABELS, "hypothesis_template": "a photo of a {}."})
    with urllib.request.urlopen(urllib.request.Request(
            f"{base}/v1/classify", data=classify, headers={"Content-Type": "application/json"}), timeout=120) as r:
        assert r.status == 200
    out = run_alternating({"images, 1/request, c=1": (f"{base}/v1/embeddings", body({"input": image})),
                           "classify, 1 image x 10 cached labels, c=1": (f"{base}/v1/classify", classify)},
                          items_per_request=1, rounds=rounds)
    return tuple(out.values())  # type: ignore[return-value]


@dataclass
class ModelOnly:
    tower: str
    batch: int
    in_flight: int
    threads: int
    rate: Rate

    @property
    def layout(self) -> str:
        return f"batch {self.batch}, {self.in_flight} forward{'s' if self.in_flight > 1 else ''} x {self.threads} thread" \
            + ("s" if self.threads > 1 else "")


def model_only(folder: Path, dtype: str, threads: int, texts: list[str], **options) -> dict[str, list[ModelOnly]]:
    """Each tower alone in this process, one forward at a time with every thread, and (with
    2+ threads) two concurrent forwards splitting them, as the encoder replicas run.
    `options`: the torch backend's load options the served variant also gets."""
    out: dict[str, list[ModelOnly]] = {"image": [], "text": []}
    for in_flight in ([1, 2] if threads >= 2 else [1]):
        per = max(1, threads // in_flight)
        rate, bs, _ = image_throughput(folder, dtype, threads, batch_sizes=(16, 32), in_flight=in_flight, **options)
        out["image"].append(ModelOnly("image", bs, in_flight, per, rate))
        out["text"].append(ModelOnly("text", 64, in_flight, per,
                                     text_throughput(folder, dtype, threads, texts, in_flight=in_flight, **options)))
    return out


class Forwards:
    """An encoder's forward-pass and item counters; subtract two to get a span's batch size."""

    def __init__(self, forwards: int, items: int) -> None:
        self.forwards, self.items = forwards, items

    def __sub__(self, other: "Forwards") -> "Forwards":
        return Forwards(self.forwards - other.forwards, self.items - other.items)

    @property
    def mean(self) -> float:
        return self.items / self.forwards if self.forwards else 0.0


def encoder_stats(tower: str) -> Forwards:
    from ray import serve

    name = f"{'ImageEncoder' if tower == 'image' else 'TextEncoder'}:{MODEL_ID.replace('/', '--')}"
    stats = serve.get_deployment_handle(name, app_name="clip").stats.remote().result()
    return Forwards(stats["forwards"], stats["items"])


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("bench served", __doc__)
    ap.add_argument("--dtype", default="auto", type=cpu_dtype, choices=DTYPE_CHOICES,
                    metavar="{auto,float32,bfloat16}",
                    help="auto: bfloat16 where the CPU has native bf16 (AMX/AVX512-BF16), else float32")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per encoder replica")
    ap.add_argument("--arch", choices=ARCHITECTURES, default="vit-b-32",
                    help="the full-size random-weight model served (rn50: OpenAI's ResNet-50, open_clip layout)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per served scenario")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--usd-per-hour", type=float, default=0.10, help="machine price for the cost line")
    ap.add_argument("--record", help="append the result to this markdown file")
    ap.add_argument("--set", action="append", default=[], metavar="router.FIELD=JSON",
                    help="override a router or variant setting (repeatable), e.g. router.max_inflight_calls=2")
    ap.add_argument("--ingress", choices=INGRESS_MODES, default=DEFAULT_INGRESS,
                    help="how HTTP reaches the router (deployments/ingress.py)")
    ap.add_argument("--torch-compile", action="store_true",
                    help="serve and measure model-only with torch_compile: true (inductor)")
    ap.add_argument("--model-only-once", action="store_true",
                    help="measure model-only before the served runs only (quicker A/B of settings; noisier ratios)")
    return ap


def cpu_breakdown(cpu_rows: list, ref: dict[str, ModelOnly]) -> list[list[str]]:
    """The CPU table: per scenario (name, LoadResult, CPU seconds by role, Forwards), the
    CPU milliseconds each process role spent per item served; a scenario where no request
    succeeded has no per-item figures (its errors show in the throughput table)."""
    # Where the CPU goes: core-milliseconds per item by process, over each whole load run
    # (warm-up included, so items are counted from the measured rate over the same span).
    # "other" is the rest of the machine's busy time: Ray's own processes (GCS, raylet,
    # Serve controller, agents) and anything else running; "idle" is unused CPU.
    roles = sorted({k for _, _, used, _ in cpu_rows for k in used} - {"machine", "steal"})
    split = {k.rsplit(" ", 1)[0] for k in roles if k.endswith(tuple(THREAD_KINDS.values()))}
    headers = [f"{k} rest" if k in split else k for k in roles]  # a split process: named threads vs the rest
    cpu_table = [["scenario (CPU ms per item)", *headers, "other", "steal", "idle", "items per forward"]]
    for name, r, used, forwards in cpu_rows:
        items = r.items_per_s * (r.seconds + 3.0)  # run_load's warm-up is 3 s
        if not items:  # no request succeeded: nothing to divide by; the table above shows its errors
            cpu_table.append([name, *("n/a" for _ in roles), "n/a", "n/a", "n/a", ""])
            continue
        ours = sum(v for k, v in used.items() if k not in ("machine", "steal"))
        idle = (os.cpu_count() or 1) * (r.seconds + 3.0) - used["machine"] - used["steal"]
        cpu_table.append([name, *(f"{1000 * used.get(k, 0.0) / items:.1f}" for k in roles),
                          *(f"{1000 * v / items:.1f}" for v in (used["machine"] - ours, used["steal"], idle)),
                          f"{forwards.mean:.1f}"])
    cpu_table.append(["model-only, best: CPU ms per image / text", *("" for _ in roles),
                      f"{1000 / ref['image'].rate.per_cpu_s:.1f} / {1000 / ref['text'].rate.per_cpu_s:.2f}", "", "",
                      f"{ref['image'].batch} / {ref['text'].batch}"])
    return cpu_table


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    folder = bench_checkpoint(args.arch)
    texts = captions(256)
    options = {"torch_compile": True} if args.torch_compile else {}
    overrides = [*args.set, *(['variant.options={"torch_compile": true}'] if args.torch_compile else [])]
    print(f"model-only (before), {args.dtype}, {args.threads} threads ...", flush=True)
    model_before = model_only(folder, args.dtype, args.threads, texts, **options)

    import ray

    replicas_import_this_checkout()  # the replicas run the code this run measures

    from ..launch import app_config, deploy

    os.environ.update(ingress_env(args.ingress, local=True))  # read by every Ray process at start
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    base = f"http://127.0.0.1:{args.port}"
    t0 = time.perf_counter()
    deploy([app_config(app_args(folder, args.dtype, args.threads, overrides))], "127.0.0.1", args.port, blocking=False)
    wait_ready(base, timeout_s=300)
    cold_start = time.perf_counter() - t0

    jpegs = [base64.b64encode(photo_jpeg(s)).decode() for s in range(32)]
    url = f"{base}/v1/embeddings"
    one_image = [body({"input": [{"image": j}], "encoding_format": "base64"}) for j in jpegs]
    sixteen = [body({"input": [{"image": jpegs[(k + i) % 32]} for i in range(16)], "encoding_format": "base64"})
               for k in range(8)]
    one_text = [body({"input": [t], "encoding_format": "base64"}) for t in texts]
    sixty_four = [body({"input": texts[k:k + 64], "encoding_format": "base64"}) for k in range(0, 192, 64)]
    scenarios = [  # (name, bodies, concurrency, items per request, tower, issue-6 target)
        ("images, 1/request, c=16", one_image, 16, 1, "image", ">= 55%"),
        ("images, 16/request, c=4", sixteen, 4, 16, "image", ">= 80%"),
        ("texts, 1/request, c=16", one_text, 16, 1, "text", ">= 80/s (2x peer)"),
        ("texts, 64/request, c=4", sixty_four, 4, 64, "text", ">= 85%"),
    ]
    results: list[tuple[LoadResult, str, str]] = []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    cpu_rows = []
    for name, bodies, conc, per_req, tower, target in scenarios:
        print(f"served: {name} ...", flush=True)
        before, forwards = cpu_seconds_by_role(), encoder_stats(tower)
        result = run_load(name, url, bodies, concurrency=conc, items_per_request=per_req, seconds=args.seconds)
        after, forwards = cpu_seconds_by_role(), encoder_stats(tower) - forwards
        print(f"served: {name}: {result.items_per_s:.1f} items/s, {result.ok} ok, errors {result.errors or 'none'}",
              flush=True)
        results.append((result, tower, target))
        cpu_rows.append((name, result, {k: after[k] - before.get(k, 0.0) for k in after}, forwards))
    print("served: classify vs image embedding, sequential ABBA ...", flush=True)
    embed_1, classify_1 = classify_vs_embed(base, jpegs[0], rounds=int(args.seconds * 5))
    results += [(embed_1, "image", ""), (classify_1, "image", "p50 <= 1.2x the line above")]
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cores = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / (time.perf_counter() - wall0)
    rss = replica_peak_rss()
    from ray import serve

    serve.shutdown()
    ray.shutdown()

    print("model-only (after) ...", flush=True)
    model_after = model_before if args.model_only_once else model_only(folder, args.dtype, args.threads, texts, **options)
    # The reference is the best model-only figure of the run, whatever layout gave it.
    ref = {tower: max([*model_before[tower], *model_after[tower]], key=lambda m: m.rate) for tower in ("image", "text")}
    best = {tower: ref[tower].rate for tower in ref}

    rows = [["scenario", "items/s", "% of model-only", "p50 ms", "p99 ms", "errors", "target"]]
    rows.append([f"model-only image tower ({ref['image'].layout})", f"{best['image']:.1f}", "100%", "", "", "", ""])
    rows.append([f"model-only text tower ({ref['text'].layout})", f"{best['text']:.1f}", "100%", "", "", "", ""])
    for r, tower, target in results:
        rows.append([r.name, f"{r.items_per_s:.1f}", f"{100 * r.items_per_s / best[tower]:.0f}%",
                     f"{1000 * r.pct(50):.1f}", f"{1000 * r.pct(99):.1f}", str(sum(r.errors.values()) or ""), target])
    best_images = max(r.items_per_s for r, t, _ in results if t == "image")
    cpu_table = cpu_breakdown(cpu_rows, ref)
    nan = float("nan")
    usd = args.usd_per_hour / (best_images * 3600) * 1000 if best_images else nan
    lines = [
        table(rows),
        "",
        table(cpu_table),
        "",
        "model-only before: " + "; ".join(f"{m.tower} {m.layout} {m.rate:.1f}/s" for t in model_before.values() for m in t),
        "model-only after: " + "; ".join(f"{m.tower} {m.layout} {m.rate:.1f}/s" for t in model_after.values() for m in t),
        "peak RSS per replica: " + ", ".join(f"{k} {v:.2f} GB" for k, v in sorted(rss.items())),
        f"classify with 10 cached labels vs one image embedding, p50: {classify_1.pct(50) / embed_1.pct(50):.2f}x "
        f"(min {1000 * min(classify_1.latencies, default=nan):.1f} vs {1000 * min(embed_1.latencies, default=nan):.1f} ms)",
        f"cold start (deploy -> /ready, all replicas in parallel): {cold_start:.1f} s",
        f"load-generator CPU (same machine): {client_cores:.2f} cores on average",
        f"cost per 1,000 images at ${args.usd_per_hour:.3f}/h and {best_images:.1f} img/s: ${usd:.4f} "
        "(hosted CLIP APIs list about $0.047)",
    ]
    report = "\n".join(lines)
    print("\n" + report)
    if args.record:
        record(args.record, "", f"{args.arch}, dtype {args.dtype}, {args.threads} threads per encoder, "
               f"{args.ingress} ingress, {args.seconds:.0f} s per scenario"
               + (", torch_compile" if args.torch_compile else ""), report)
    return 0

