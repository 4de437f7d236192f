"""The embedded default model: a small CLIP built locally on first start, so the service
runs on a fresh machine with no network. Its weights are random (seeded): the API works
end to end, but its embeddings carry no meaning. Real models: see serve_config.yaml."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

DEMO_ID = "clip-demo"
DEMO_VERSION = "v1"
_DEMO_SHAPE = {"hidden_size": 64, "layers": 2, "heads": 4, "image_size": 64, "patch_size": 16, "projection_dim": 64}


def clip_serve_home() -> Path:
    return Path(os.environ.get("CLIP_SERVE_HOME", Path.home() / ".cache" / "clip-serve"))


def ensure_demo_model(folder: Path | None = None) -> Path:
    """Build the demo checkpoint once; later calls return the cached folder."""
    folder = Path(folder or clip_serve_home() / f"demo-{DEMO_VERSION}")
    if (folder / "model.safetensors").is_file():
        return folder
    from .checkpoint_builder import build_clip_checkpoint

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=folder.parent))
    try:
        build_clip_checkpoint(staging, seed=0, **_DEMO_SHAPE)
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
