"""GPU figures for issue 6 in one command, on a machine with a CUDA device. Ray is not
needed: the lent GPU machines have torch and transformers, not Ray.

    python -m deployments bench gpu [--seconds 2] [--json OUT.json] [--record docs/benchmarks.md]
    python -m deployments bench gpu --device cpu --quick    # the script checking itself, on any machine

1. Checks (the run exits 1 if one fails): the torch backend on the device in float32,
   float16 and bfloat16, one forward at a time and two at once (one CUDA stream each),
   `torch_compile: true`, and CUDA graphs, each against transformers' CLIPModel in float32
   on the CPU, same weights (deployments/bench/gpu_checks.py); for `--arch rn50`, which
   transformers cannot load, against the torch backend in float32 on the CPU.
2. Model-only: the ViT-B/32-sized tower (or `--arch rn50`: OpenAI's RN50; random weights)
   per dtype, mode and batch.
   `compute`: the batch already on the device, the GPU alone. `from host`: as a replica
   runs it (uint8 pixels pinned and copied, forward, embeddings back to the host), with one
   and two batches in flight. Modes: eager, `torch_compile: true` (dynamic shapes) and CUDA
   graphs of one batch size (torch.compile's reduce-overhead mode), measured here to see
   whether graphs pay before any serving mode uses them.
3. What bounds the end-to-end figure: a router's own work per 640x480 JPEG (JSON, base64,
   decode, resize) per core and on every core (deployments/bench/router_cpu.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..tools import command_parser
from .common import ARCHITECTURES, bench_checkpoint, captions, machine, photo_jpeg, record, request_bodies, table
from .gpu_checks import BARS, Check, compiled_checks, dtype_checks, reference_for, row_cosines
from .model import _rate, load_tower, tokenize
from .router_cpu import router_images_per_s


QUICK_SHAPE = {"hidden_size": 64, "layers": 2, "heads": 2, "image_size": 64, "patch_size": 16,
               "projection_dim": 32, "text_hidden_size": 32, "text_layers": 2, "text_heads": 2}
# A ResNet CLIP as small: OpenAI's ResNet with one block per stage (open_clip layout).
QUICK_RESNET = {"embed_dim": 32, "image_size": 64, "vision_layers": (1, 1, 1, 1), "vision_width": 16,
                "vision_heads": 8, "patch_size": None, "context_length": 77, "vocab_size": 49408, "text_width": 64,
                "text_heads": 1, "text_layers": 2, "quick_gelu": True}
TARGETS = {"model-only image tower": 20_000, "served, 16 JPEGs per request": 3_000}


def can_compile(device: str) -> bool:
    """Inductor emits Triton on CUDA (shipped with torch) and C++ on CPU (needs a compiler)."""
    from ..backends.torch_compile import cpu_compiler_available

    return device == "cuda" or cpu_compiler_available()


def attempt(what: str, step, failures: list[str]):
    """Run one optional step (compiling can fail on a new machine); a failure is reported,
    and the run goes on to the figures that do not need it. Returns `step()` or None."""
    try:
        return step()
    except Exception as exc:
        failures.append(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        print(f"  FAILED {failures[-1]}", flush=True)
        return None


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def device_rate(tower, step, items: int, seconds: float, warmup: int = 3) -> float:
    """Items/s of `step()` run back to back on this thread's stream, the device drained
    before the clock starts and before it stops (kernels run asynchronously on CUDA)."""
    import torch

    with torch.inference_mode(), tower.runner.stream():
        for _ in range(warmup):
            step()
        synchronize(tower.device.type)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or calls < 3:
            step()
            calls += 1
        synchronize(tower.device.type)
    return calls * items / (time.perf_counter() - start)


def compute_rate(tower, batch: np.ndarray, seconds: float, forward=None) -> float:
    """Items/s of the device-side step alone: the input already on the device, no result copied back."""
    import torch

    forward = forward or tower._forward
    with torch.inference_mode(), tower.runner.stream():
        x = tower.runner.to_device(batch)
    return device_rate(tower, lambda: forward(x), len(batch), seconds)


def transfer_rate(tower, batch: np.ndarray, seconds: float) -> float:
    """Items/s of the host-to-device step alone (pinned staging copy, then the device copy)."""
    return device_rate(tower, lambda: tower.runner.to_device(batch), len(batch), seconds, warmup=0)


def cuda_graph_forward(tower):
    """The tower's device-side step as CUDA graphs, one per batch size seen (torch.compile,
    reduce-overhead). Graph outputs are overwritten by the next replay: callers copy first."""
    import torch

    from ..backends.torch_compile import _own_code

    step = torch.compile(_own_code(tower._tower_forward), mode="reduce-overhead", dynamic=False)

    def run(x):
        torch.compiler.cudagraph_mark_step_begin()
        return step(x)

    return run


def run_step(tower, batch: np.ndarray, forward) -> np.ndarray:
    """One batch through `forward` as a replica runs it: host array in, float32 embeddings out."""
    import torch

    with torch.inference_mode(), tower.runner.stream():
        return forward(tower.runner.to_device(batch)).cpu().numpy()


def host_rate(tower, batch: np.ndarray, seconds: float, in_flight: int, forward=None) -> float:
    """Items/s with host arrays in and embeddings out, `in_flight` forward threads at once."""
    return float(_rate(lambda: run_step(tower, batch, forward or tower._forward), len(batch), seconds, in_flight))


def graph_check(load, reference_images: np.ndarray, pixels: np.ndarray, dtype: str) -> Check:
    """CUDA graphs against the reference (graphs differ per batch size, not per code path)."""
    tower = load("image", dtype)
    return Check(f"image tower, {dtype}, CUDA graphs", row_cosines(run_step(tower, pixels, cuda_graph_forward(tower)),
                                                                   reference_images).min(), BARS[dtype])


class Figures:
    def __init__(self, seconds: float) -> None:
        self.seconds, self.rows = seconds, []

    def add(self, tower: str, dtype: str, mode: str, batch: int, how: str, rate: float) -> None:
        self.rows.append({"tower": tower, "dtype": dtype, "mode": mode, "batch": batch, "how": how,
                          "items_per_s": round(rate, 1)})
        print(f"  {tower} {dtype:8s} {mode:13s} batch {batch:5d}  {how:22s} {rate:10.1f}/s", flush=True)

    def tower(self, tower, dtype: str, mode: str, inputs: dict[int, np.ndarray], forward=None,
              in_flight=(1, 2)) -> None:
        """Compute-only at every batch size, from host at the two largest."""
        for b, batch in inputs.items():
            self.add(tower.tower, dtype, mode, b, "compute", compute_rate(tower, batch, self.seconds, forward))
        for b in list(inputs)[-2:]:
            for n in in_flight:
                self.add(tower.tower, dtype, mode, b, f"from host, {n} in flight",
                         host_rate(tower, inputs[b], self.seconds, n, forward))

    def best(self, tower: str, how: str = "") -> dict:
        return max((r for r in self.rows if r["tower"] == tower and how in r["how"]), key=lambda r: r["items_per_s"])


def model_only(load, device: str, dtypes: list[str], batches: list[int], seconds: float, input_hw, texts,
               compile_: bool, failures: list[str]) -> Figures:
    """`compile_`: also torch_compile, and on CUDA graphs (minutes of compiling)."""
    rng = np.random.default_rng(0)
    pixels = {b: rng.integers(0, 256, size=(b, *input_hw, 3), dtype=np.uint8) for b in batches}
    figures = Figures(seconds)
    eager = {}
    for dtype in dtypes:
        eager[dtype] = load("image", dtype)
        figures.tower(eager[dtype], dtype, "eager", pixels)
    dtype, largest = dtypes[0], {b: pixels[b] for b in batches[-2:]}
    figures.add("image", "uint8", "-", batches[-1], "host-to-device copy",
                transfer_rate(eager[dtype], pixels[batches[-1]], seconds))
    if compile_:
        attempt("torch_compile figures", lambda: figures.tower(load("image", dtype, torch_compile=True), dtype,
                                                               "torch_compile", largest, in_flight=(2,)), failures)
    if compile_ and device == "cuda":  # graphs are recorded per thread: one in flight
        attempt("CUDA graph figures", lambda: figures.tower(eager[dtype], dtype, "CUDA graphs", largest,
                                                            forward=cuda_graph_forward(eager[dtype]),
                                                            in_flight=(1,)), failures)
    text = load("text", dtype)
    figures.tower(text, dtype, "eager", {b: tokenize(text, (texts * b)[:b]).ids for b in batches[-2:]})
    return figures


def parity(folder: Path, load, device: str, dtypes: list[str], compile_: bool, failures: list[str]) -> list[Check]:
    from types import SimpleNamespace

    from ..backends.checkpoint import Checkpoint
    from ..preprocess.images import ImageLimits, prepare_image

    checkpoint = Checkpoint.open(str(folder))
    spec = checkpoint.image_spec()
    pixels = np.stack([prepare_image(photo_jpeg(s), spec, ImageLimits()) for s in range(8)])
    texts = [*captions(6), "an extremely long caption " * 20]  # the last one is truncated at 77 tokens
    tokens = tokenize(SimpleNamespace(tokenizer_info=checkpoint.tower_preprocessing("text")[1]), texts)
    reference = reference_for(folder)
    ref_images, ref_texts = reference.images(pixels), reference.texts(texts)
    checks = dtype_checks(load, ref_images, ref_texts, pixels, tokens, dtypes)
    # A mode that fails to compile counts as a failed check (NaN never meets a bar).
    if compile_:
        checks += attempt("torch_compile checks", lambda: compiled_checks(
            load, ref_images, ref_texts, pixels, tokens, dtypes[0]), failures) or [
            Check(f"torch_compile, {dtypes[0]} (did not run)", float("nan"), BARS[dtypes[0]])]
    if compile_ and device == "cuda":
        checks.append(attempt("CUDA graph check", lambda: graph_check(load, ref_images, pixels, dtypes[0]), failures)
                      or Check(f"image tower, {dtypes[0]}, CUDA graphs (did not run)", float("nan"), BARS[dtypes[0]]))
    return checks


def report(env: dict, checks: list[Check], figures: Figures, router: dict, summary: dict) -> str:
    check_rows = [["check (against float32 on CPU)", "min cosine", "bar", "ok"],
                  *([c.name, f"{c.min_cosine:.6f}", f"{c.bar}", "yes" if c.ok else "NO"] for c in checks)]
    figure_rows = [["tower", "dtype", "mode", "batch", "how", "items/s"],
                   *([r["tower"], r["dtype"], r["mode"], str(r["batch"]), r["how"], f"{r['items_per_s']:.1f}"]
                     for r in figures.rows)]
    lines = [f"device: {env['device']}; torch {env['torch']}", "", table(check_rows), "", table(figure_rows), "",
             f"router work per 640x480 JPEG, 16 per request (JSON, base64, decode, resize): "
             f"{router['per_core']:.0f} images per CPU-second; {router['all_cores']:.0f} images/s on "
             f"{router['processes']} processes (base64 by {router['base64']})", ""]
    lines += [f"- {k}: {v}" for k, v in summary.items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("bench gpu", __doc__)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--quick", action="store_true", help="a tiny model and small batches: checks the script itself")
    ap.add_argument("--arch", choices=ARCHITECTURES, default="vit-b-32",
                    help="the model measured (random weights): ViT-B/32, or OpenAI's RN50 in open_clip's layout")
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per figure")
    ap.add_argument("--no-compile", action="store_true", help="skip torch_compile and CUDA graphs (minutes of compiling)")
    ap.add_argument("--json", help="write everything measured to this file")
    ap.add_argument("--record", help="append the report to this markdown file")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device is visible; `--device cpu --quick` checks the script on a CPU", file=sys.stderr)
        return 2
    env = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU ({machine()})",
           "torch": torch.__version__, "cpus": os.cpu_count()}
    dtypes = ["float16", "bfloat16", "float32"] if args.device == "cuda" else ["bfloat16", "float32"]
    batches = [4, 16] if args.quick else [64, 256, 1024]
    compile_ = not args.no_compile and can_compile(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            from ..checkpoint_builder import build_clip_checkpoint, build_open_clip_checkpoint

            folder = Path(tmp) / "quick"
            if args.arch == "rn50":
                from ..backends.clip_layouts import ClipArch

                build_open_clip_checkpoint(folder, ClipArch(**QUICK_RESNET))
            else:
                build_clip_checkpoint(folder, seed=0, **QUICK_SHAPE)
        else:
            folder = bench_checkpoint(args.arch)

        def load(tower: str, dtype: str, **options):
            return load_tower(folder, tower, dtype, None, device=args.device, **options)

        print("checks ...", flush=True)
        failures: list[str] = []
        checks = parity(folder, load, args.device, dtypes, compile_, failures)
        for c in checks:
            print(f"  {'ok ' if c.ok else 'FAIL'} {c.name}: min cosine {c.min_cosine:.6f} (bar {c.bar})", flush=True)
        print("model-only ...", flush=True)
        from ..backends.checkpoint import Checkpoint

        spec = Checkpoint.open(str(folder)).image_spec()
        figures = model_only(load, args.device, dtypes, batches, args.seconds, spec.input_hw, captions(64), compile_,
                             failures)
        print("router work per image ...", flush=True)
        from ..preprocess.images import ImageLimits, b64

        processes = 2 if args.quick else (os.cpu_count() or 1)
        all_cores, per_core = router_images_per_s(request_bodies(), spec, ImageLimits(), processes, 2 * args.seconds)
    router = {"per_core": round(per_core, 1), "all_cores": round(all_cores, 1), "processes": processes,
              "base64": b64.__name__}  # the stdlib where pybase64 is not installed: a lower bound
    compute, host = figures.best("image", "compute"), figures.best("image", "from host")
    copy = figures.best("image", "host-to-device")
    bound = min(router["all_cores"], host["items_per_s"])
    summary = {
        "model-only image tower, best": f"{compute['items_per_s']:.0f} img/s compute only ({compute['dtype']}, "
                                        f"{compute['mode']}, batch {compute['batch']}), {host['items_per_s']:.0f} img/s "
                                        f"from host ({host['mode']}, batch {host['batch']}, {host['how']}); "
                                        f"target {TARGETS['model-only image tower']}",
        "end-to-end bound": f"{bound:.0f} img/s: {'the routers (CPU)' if bound == router['all_cores'] else 'the GPU'} "
                            f"(routers on every core {router['all_cores']:.0f}/s, GPU from host "
                            f"{host['items_per_s']:.0f}/s, of which the copy alone runs at "
                            f"{copy['items_per_s']:.0f}/s); target {TARGETS['served, 16 JPEGs per request']} served",
    }
    if failures:
        summary["failed steps"] = "; ".join(failures)
    text = report(env, checks, figures, router, summary)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "checks": [{**vars(c), "min_cosine": float(c.min_cosine),
                                                                       "ok": c.ok} for c in checks],
                                               "figures": figures.rows, "router": router, "summary": summary}, indent=1))
    if args.record:
        record(args.record, "GPU: ", f"{env['device']}, {args.seconds} s per figure", text)
    return 0 if all(c.ok for c in checks) else 1

