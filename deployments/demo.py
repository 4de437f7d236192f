"""The embedded default model: a small CLIP trained locally, on first start, on synthetic
coloured shapes (deployments/jobs/synthetic.py), so a fresh offline machine serves a
model whose zero-shot classification works: "a red circle" vs "a blue square".

Built once (a few minutes on 2 CPU cores; seeded) and cached under CLIP_SERVE_HOME.
Real models: see serve_config.yaml.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

DEMO_ID = "clip-demo"
DEMO_VERSION = "v2"
# Small enough to train in minutes on a laptop CPU; the text tower keeps CLIP's full
# 49,408-token vocabulary, so any text tokenizes as it would for a hub model.
DEMO_SHAPE: dict[str, Any] = {
    "hidden_size": 128, "layers": 4, "heads": 4, "image_size": 64, "patch_size": 16, "projection_dim": 64,
    "text_hidden_size": 64, "text_layers": 2, "text_heads": 4,
}
# 400 steps of 128 pairs (about a minute on 2 idle cores).
DEMO_TRAINING: dict[str, Any] = {
    "epochs": 4, "steps_per_epoch": 100, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.05,
    "warmup_fraction": 0.05, "seed": 0,
}
DEMO_HELD_OUT_SEED = 7_000_001  # evaluation images: never seen in training (seed 0)


def clip_serve_home() -> Path:
    return Path(os.environ.get("CLIP_SERVE_HOME", Path.home() / ".cache" / "clip-serve"))


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """One builder at a time per cache folder (tests and a server may start together)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_demo_model(folder: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Train the demo checkpoint once; later calls return the cached folder."""
    folder = Path(folder or clip_serve_home() / f"demo-{DEMO_VERSION}")
    if (folder / "model.safetensors").is_file():
        return folder
    with _build_lock(folder.with_name(f".{folder.name}.lock")):
        if (folder / "model.safetensors").is_file():  # built by another process meanwhile
            return folder
        from .jobs.demo_model import train_demo_model

        log(f"training the demo model into {folder} (first start only; a few minutes on 2 CPU cores) ...")
        staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=folder.parent))
        try:
            train_demo_model(staging, DEMO_SHAPE, DEMO_TRAINING, DEMO_HELD_OUT_SEED, log=log)
            staging.rename(folder)  # atomic: a half-built folder is never served
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def demo_args(folder: Path) -> dict[str, Any]:
    small = {"ray_actor_options": {"num_cpus": 0.5}}
    return {
        "variants": [
            {"id": DEMO_ID, "source": str(folder), "aliases": ["demo"],
             "image_deployment": small, "text_deployment": small}
        ],
        "router": {"deployment": small},
    }
