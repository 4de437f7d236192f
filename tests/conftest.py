"""Shared fixtures: tiny real CLIP checkpoints (real BPE vocabulary), a Hugging Face cache
that resolves hub ids offline, and one real Ray Serve deployment of the app."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

# Ray workers (replicas, the Serve controller) must import the checkout under test, not
# whatever `pip install -e` points at: they inherit PYTHONPATH from this process.
_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH")) if p)

# huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, at import: set them before
# anything imports it. Nothing in the test session may reach a model hub.
_HF_HOME = Path(tempfile.mkdtemp(prefix="clip-serve-hf-"))
os.environ["HF_HOME"] = str(_HF_HOME)
os.environ["HF_HUB_OFFLINE"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import Reference, bpe_path, free_port  # noqa: E402
from deployments.ingress import DEFAULT_INGRESS, ingress_env  # noqa: E402
from onnx_fixtures import combined_only_dir, l14_336_dir, onnx_dir, onnx_server  # noqa: E402,F401

HUB_ID = "openai/clip-vit-base-patch32"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """ViT-B/32-shaped in miniature: 32 px, patch 8, 16-d embeddings."""
    from deployments.checkpoint_builder import build_clip_checkpoint

    return build_clip_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-b32", seed=0, bpe_path=bpe_path())


@pytest.fixture(scope="session")
def wide_model_dir(tmp_path_factory) -> Path:
    """A second shape (48 px, patch 16, 24-d) served beside the first from a local folder."""
    from deployments.checkpoint_builder import build_clip_checkpoint

    return build_clip_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny-wide",
        seed=1,
        bpe_path=bpe_path(),
        hidden_size=48,
        heads=3,
        image_size=48,
        patch_size=16,
        projection_dim=24,
    )


@pytest.fixture(scope="session")
def hf_home(model_dir):
    """An HF cache holding `openai/clip-vit-base-patch32` (the tiny weights), hub offline.
    Set before Ray starts so every replica inherits it."""
    from deployments.checkpoint_builder import install_in_hf_cache

    install_in_hf_cache(model_dir, HUB_ID, _HF_HOME / "hub")
    yield _HF_HOME
    shutil.rmtree(_HF_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def reference(model_dir) -> Reference:
    return Reference(model_dir)


@pytest.fixture(scope="session")
def wide_reference(wide_model_dir) -> Reference:
    return Reference(wide_model_dir)


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """Where the session cluster's Prometheus endpoint listens: http://127.0.0.1:<port>/metrics."""
    return free_port()


@contextmanager
def environment(values: dict[str, str]):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def cluster_env() -> dict[str, str]:
    """The ingress settings the session cluster starts with (deployments/ingress.py)."""
    return ingress_env(DEFAULT_INGRESS, local=True)


@pytest.fixture(scope="session")
def ray_session(hf_home, metrics_port, cluster_env):
    import ray
    from ray import serve

    # address="local": our own cluster, even while another test run's is up on this machine.
    # The product's default ingress (HAProxy in front of routers serving HTTP); its settings
    # reach Ray's processes through the environment they start with, and only them.
    with environment(cluster_env):
        ray.init(address="local", num_cpus=16, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _metrics_export_port=metrics_port)
    yield ray
    serve.shutdown()
    ray.shutdown()


def app_args(wide_model_dir: Path) -> dict:
    return {
        "variants": [
            {"id": HUB_ID, "dtype": "float32", "aliases": ["clip-b32"], "cpu_threads": 1,
             "image_deployment": {"ray_actor_options": {"num_cpus": 0.5}},
             "text_deployment": {"ray_actor_options": {"num_cpus": 0.5}}},
            {"id": "local/tiny-wide", "source": str(wide_model_dir), "dtype": "float32", "cpu_threads": 1,
             "image_deployment": {"ray_actor_options": {"num_cpus": 0.5}},
             "text_deployment": {"ray_actor_options": {"num_cpus": 0.5}}},
        ],
        "router": {"deployment": {"ray_actor_options": {"num_cpus": 0.5}}},
        "limits": {"max_request_bytes": 4 * 2**20, "max_items_per_request": 64, "max_image_bytes": 2**20},
    }


def deploy(port: int, args: dict, deployments: list[dict] | None = None) -> None:
    """Apply the app config as `serve deploy` would (what production does)."""
    from deployments.launch import app_config
    from deployments.launch import deploy as apply

    apply([app_config(args, deployments)], "127.0.0.1", port)


@pytest.fixture(scope="session")
def server_port(ray_session, wide_model_dir) -> int:
    port = free_port()
    deploy(port, app_args(wide_model_dir))
    return port


@pytest.fixture(scope="session")
def server(server_port) -> str:
    """The app on real Ray Serve (HTTP on 127.0.0.1); returns its base URL."""
    return f"http://127.0.0.1:{server_port}"


@pytest.fixture(scope="session")
def client(server):
    import httpx

    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory) -> Path:
    """CLIP_SERVE_HOME for this session: the demo model is trained into it once and
    reused by every test that needs it (test_quickstart's server included)."""
    return tmp_path_factory.mktemp("clip-serve-home")


@pytest.fixture(scope="session")
def demo_model_dir(demo_home) -> Path:
    from deployments.demo import DEMO_VERSION, ensure_demo_model

    return ensure_demo_model(demo_home / f"demo-{DEMO_VERSION}")


@contextmanager
def extra_app(port: int, wide_model_dir: Path, name: str, route_prefix: str, args: dict):
    """Serve `args` as a second application (own route prefix) beside the session app;
    removed again afterwards by re-applying the session app alone."""
    from deployments.launch import app_config
    from deployments.launch import deploy as apply

    session_app = app_config(app_args(wide_model_dir))
    apply([session_app, {**app_config(args), "name": name, "route_prefix": route_prefix}], "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}{route_prefix}"
    finally:
        apply([session_app], "127.0.0.1", port)
