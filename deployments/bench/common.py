"""Helpers every benchmark script shares, importing nothing heavier than numpy and
Pillow at module level, so the GPU benchmark runs on a machine without Ray."""

from __future__ import annotations

import datetime
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODEL_ID = "bench/vit-b-32"
VIT_B32 = {"hidden_size": 768, "layers": 12, "heads": 12, "image_size": 224, "patch_size": 32,
           "projection_dim": 512, "text_hidden_size": 512, "text_layers": 12, "text_heads": 8}
# OpenAI's RN50 (open_clip layout, the catalogue's shape), the benches' ResNet beside ViT-B/32.
RN50_ID = "timm/resnet50_clip.openai"
ARCHITECTURES = ("vit-b-32", "rn50")
WORDS = {
    "adj": ["red", "small", "old", "shiny", "wooden", "striped", "bright", "dark", "fluffy", "broken"],
    "noun": ["cat", "bicycle", "teapot", "mountain", "guitar", "lighthouse", "sandwich", "robot", "sofa", "kite"],
    "where": ["on a beach", "in a kitchen", "at night", "in the snow", "on a table", "in a busy street"],
}


def cpu_dtype(value: str) -> str:
    """`--dtype` for the CPU benches: `auto` resolves as a served variant's does (bf16 only
    on CPUs with AMX or AVX512-BF16; elsewhere bf16 is emulated and runs several times slower
    than fp32, so a bf16 default would measure the emulation, not the server)."""
    from ..backends.devices import resolve_dtype

    return resolve_dtype(value, "cpu")


DTYPE_CHOICES = ["float32", "bfloat16"]  # what `auto` resolves to on a CPU


def bench_checkpoint(arch: str = "vit-b-32") -> Path:
    """Random weights of full size, built once into CLIP_SERVE_HOME: ViT-B/32 in transformers'
    layout, RN50 in open_clip's."""
    from ..checkpoint_builder import build_clip_checkpoint, build_open_clip_checkpoint
    from ..demo import clip_serve_home

    folder = clip_serve_home() / f"bench-{arch}"
    if arch == "rn50":
        if not (folder / "open_clip_model.safetensors").is_file():
            from ..backends.clip_layouts import ClipArch
            from ..catalogue import CATALOGUE

            build_open_clip_checkpoint(folder, ClipArch.of(CATALOGUE[RN50_ID].arch))
    elif not (folder / "model.safetensors").is_file():
        build_clip_checkpoint(folder, seed=0, **VIT_B32)
    return folder


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"a photo of a {rng.choice(WORDS['adj'])} {rng.choice(WORDS['noun'])} {rng.choice(WORDS['where'])}"
            for _ in range(n)]


def body(payload: dict, model: str = MODEL_ID) -> bytes:
    """A request body for the served API."""
    return json.dumps({"model": model, **payload}).encode()


def photo_jpeg(seed: int, width: int = 640, height: int = 480) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    chans = [127 + 100 * np.sin(x / rng.uniform(5, 40) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(5, 40)) for _ in range(3)]
    arr = np.clip(np.stack(chans, -1) + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def request_bodies(n: int = 4, per_request: int = 16, model: str = MODEL_ID) -> list[bytes]:
    """`n` request bodies of `per_request` 640x480 JPEGs each, base64 in the JSON."""
    import base64

    jpegs = [base64.b64encode(photo_jpeg(s)).decode() for s in range(per_request)]
    return [body({"input": [{"image": jpegs[(k + i) % per_request]} for i in range(per_request)]}, model)
            for k in range(n)]


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} vCPU {model} ({vector_extensions()}), {mem:.0f} GiB, {gpus()}"


def vector_extensions() -> str:
    """The CPU's widest matmul extensions: the same model name comes with or without AVX-512,
    VNNI or bf16, and they change CPU figures several-fold (bf16 and int8 most)."""
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return "extensions unknown"
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "VNNI", "avx_vnni": "AVX-VNNI",
             "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX"}
    return " ".join(label for flag, label in names.items() if flag in flags) or "no AVX2"


def gpus() -> str:
    import torch

    if not torch.cuda.is_available():
        return "no GPU"
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def replicas_import_this_checkout() -> None:
    """Ray workers started from this process (replicas) import this checkout too."""
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)


def commit() -> str:
    try:
        found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()
    except OSError:
        found = ""
    # A copied tree without git (a lent GPU machine) is told its commit by the caller.
    return found or os.environ.get("CLIP_SERVE_COMMIT", "unknown")


def record(path: str, title: str, details: str, report: str) -> None:
    """Append a result to a markdown file (docs/benchmarks.md: its run log) under a heading with date,
    commit and machine."""
    header = (f"\n### {title}{datetime.date.today().isoformat()} · commit {commit()} · {machine()}\n\n"
              f"Command: `{command()}` ({details}, load "
              f"{os.getloadavg()[0]:.2f} at the end)\n\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(header + report + "\n")


def command() -> str:
    """How this run was started, as the docs write it (`python -m deployments bench ...`)."""
    return f"python -m deployments {' '.join(sys.argv[1:])}"


def fmt_row(cells: list[str], widths: list[int]) -> str:
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [fmt_row(rows[0], widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join([*lines, *(fmt_row(r, widths) for r in rows[1:])])
