"""The session's Ray cluster and the app served on it, as fixtures for the serve and ops tiers
(tests/conftest.py loads this module as a plugin; unit tests never request these fixtures, so
no cluster starts for them), plus helpers that deploy further applications beside it."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from .helpers import HUB_ID, free_port
# Our own deadline for an application to run, not Serve's fixed 60 s: a slow or busy machine
# only waits longer, and a replica that cannot start fails with its cause well before
# pytest-timeout (600 s per test, fixture set-up included) would cut it off without one.
READY_TIMEOUT_S = 480


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
    """The ingress settings the session cluster starts with (deployments/ingress.py); a
    header timeout shorter than the product's default, so that the tests that wait it out
    (slow-header clients, kept-alive connections idle past it) wait seconds, not tens."""
    from deployments.ingress import DEFAULT_INGRESS, ingress_env

    return ingress_env(DEFAULT_INGRESS, local=True, head_timeout_s=4)


@pytest.fixture(scope="session")
def ray_session(hf_home, metrics_port, cluster_env):
    import ray
    from ray import serve

    # address="local": our own cluster, even while another test run's is up on this machine.
    # The product's default ingress (HAProxy in front of routers serving HTTP); its settings
    # reach Ray's processes through the environment they start with, and only them.
    # Metrics reach Prometheus every report interval (Ray's default: 10 s); test_metrics
    # waits for its requests to show up, so report every 2 s rather than wait out 10.
    with environment(cluster_env):
        ray.init(address="local", num_cpus=16, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _metrics_export_port=metrics_port,
                 _system_config={"metrics_report_interval_ms": 2000})
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
        "limits": {"max_request_bytes": 4 * 2**20, "max_items_per_request": 64, "max_image_bytes": 2**20,
                   "max_request_text_chars": 10**6},  # under 64 texts at max_text_chars, so tests can cross it
    }


def apply(applications: list[dict], port: int, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Apply app configs as `serve deploy` would (what production does) and wait, with our own
    deadline, until they run; readiness.NotReady says why not."""
    from deployments.launch import deploy as launch_deploy

    launch_deploy(applications, "127.0.0.1", port, timeout_s=timeout_s)


def deploy(port: int, args: dict, deployments: list[dict] | None = None) -> None:
    """The session app (name `clip`, route `/`) with `args` and deployment overrides."""
    from deployments.launch import app_config

    apply([app_config(args, deployments)], port)


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


@contextmanager
def extra_app(port: int, wide_model_dir: Path, name: str, route_prefix: str, args: dict):
    """Serve `args` as a second application (own route prefix) beside the session app;
    removed again afterwards by re-applying the session app alone."""
    from deployments.launch import app_config

    session_app = app_config(app_args(wide_model_dir))
    apply([session_app, {**app_config(args), "name": name, "route_prefix": route_prefix}], port)
    try:
        yield f"http://127.0.0.1:{port}{route_prefix}"
    finally:
        apply([session_app], port)
