"""Session fixtures for the ONNX backend: the tiny checkpoint exported to the Xenova layout,
a folder holding only the combined graph, a tiny ResNet CLIP (open_clip layout) exported,
and shrunk catalogue-shaped checkpoints."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from .helpers import bpe_path

XENOVA_ID = "Xenova/clip-vit-base-patch32"
L14_336_ID = "openai/clip-vit-large-patch14-336"


def copy_metadata(src: Path, dst: Path) -> Path:
    """The non-weight files of a checkpoint folder (config, tokenizer, preprocessor)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copyfile(f, dst / f.name)
    return dst


@pytest.fixture(scope="session")
def onnx_dir(model_dir, tmp_path_factory) -> Path:
    """`model_dir` exported: fp32, q8 (int8) and fp16 towers plus the combined graphs."""
    from deployments.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "tiny-b32-onnx"
    export_onnx(model_dir, out, quantize=True, fp16=True, combined=True)
    return out


@pytest.fixture(scope="session")
def combined_only_dir(onnx_dir, tmp_path_factory) -> Path:
    """Only onnx/model.onnx (and its int8 twin), like repositories exported without --split."""
    out = copy_metadata(onnx_dir, tmp_path_factory.mktemp("onnx") / "combined-only")
    (out / "onnx").mkdir()
    for name in ("model.onnx", "model_quantized.onnx"):
        shutil.copyfile(onnx_dir / "onnx" / name, out / "onnx" / name)
    return out


@pytest.fixture(scope="session")
def resnet_onnx(tmp_path_factory):
    """(OpenAI's tiny ResNet CLIP, its open_clip-layout folder, the ONNX export of its image
    tower, fp32)."""
    from deployments.export.onnx_export import export_onnx

    from .openai_clip import TINY_RESNET, save_open_clip, tiny_openai_clip

    root = tmp_path_factory.mktemp("resnet")
    model = tiny_openai_clip(TINY_RESNET, seed=2)
    source = save_open_clip(model, TINY_RESNET, root / "open_clip")
    export_onnx(source, root / "onnx", towers=("image",))
    return model, source, root / "onnx"


def build_catalogue_fixture(entry_id: str, out: Path) -> Path:
    from deployments.catalogue import CATALOGUE
    from deployments.checkpoint_builder import build_clip_checkpoint, catalogue_fixture_config

    return build_clip_checkpoint(out, seed=3, bpe_path=bpe_path(), **catalogue_fixture_config(CATALOGUE[entry_id]))


@pytest.fixture(scope="session")
def l14_336_dir(tmp_path_factory) -> Path:
    """ViT-L/14@336's architecture fields, shrunk: 336 px input, patch 14, 768-d embeddings."""
    return build_catalogue_fixture(L14_336_ID, tmp_path_factory.mktemp("catalogue") / "l14-336")


ONNX_APP = "clip-onnx"
ONNX_PREFIX = "/onnx"
RESNET_ONNX_ID = "local/tiny-resnet-onnx"


def onnx_app_args(onnx_dir: Path, resnet_onnx_dir: Path) -> dict:
    small = {"ray_actor_options": {"num_cpus": 0.25}}
    encoders = {"cpu_threads": 1, "image_deployment": small, "text_deployment": small}
    return {
        "variants": [
            {"id": XENOVA_ID, **encoders},  # by id alone: the catalogue says backend onnx
            # No cpu_threads: ONNX Runtime threads follow the replica's num_cpus.
            {"id": "local/tiny-q8", "source": str(onnx_dir), "backend": "onnx", "onnx_dtype": "quantized",
             "image_deployment": small, "text_deployment": small},
            {"id": L14_336_ID, "dtype": "float32", **encoders},  # catalogue: torch
            {"id": RESNET_ONNX_ID, "source": str(resnet_onnx_dir), "backend": "onnx", "towers": ["image"],
             **encoders},
        ],
        "router": {"deployment": small},
    }


@pytest.fixture(scope="session")
def onnx_server(server, hf_home, onnx_dir, l14_336_dir, resnet_onnx) -> str:
    """A second Serve application beside the main one: the ONNX variants (a ResNet's image
    tower among them) and a 336-px catalogue fixture, the hub ids resolved from the offline
    HF cache."""
    from ray import serve

    from deployments.app import build_app
    from deployments.checkpoint_builder import install_in_hf_cache
    from deployments.readiness import wait_running

    from .cluster import READY_TIMEOUT_S
    from .helpers import wait_ready

    install_in_hf_cache(onnx_dir, XENOVA_ID, hf_home / "hub")
    install_in_hf_cache(l14_336_dir, L14_336_ID, hf_home / "hub")
    serve.run(build_app(onnx_app_args(onnx_dir, resnet_onnx[2])), name=ONNX_APP, route_prefix=ONNX_PREFIX,
              blocking=False)
    wait_running([ONNX_APP], READY_TIMEOUT_S, progress=None)
    base = f"{server}{ONNX_PREFIX}"
    wait_ready(base)
    yield base
    serve.delete(ONNX_APP)
