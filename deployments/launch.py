"""Start Ray Serve and apply an application config the way `serve deploy` does.

Declarative deploys version each deployment by its config, so re-applying a config with
new `user_config` or autoscaling values retunes running replicas without restarting them.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any

import yaml

APP_NAME = "clip"
# Generous: real hub weights (0.6-1.7 GB per variant) can take many minutes to download.
DEFAULT_READY_TIMEOUT_S = 30 * 60


def load_serve_config(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict) or not doc.get("applications"):
        raise ValueError(f"{path} is not a Ray Serve config with `applications`")
    return doc


def app_config(args: dict[str, Any], deployments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One `applications:` entry for build_app."""
    return {
        "name": APP_NAME,
        "route_prefix": "/",
        "import_path": "deployments.app:build_app",
        "args": args,
        "deployments": deployments or [],
    }


def deploy(applications: list[dict[str, Any]], host: str, port: int, blocking: bool = True,
           timeout_s: float | None = DEFAULT_READY_TIMEOUT_S, progress: Callable[[str], None] | None = None,
           cluster_can_grow: bool = False) -> None:
    """Apply `applications` to the running Serve instance (started here if needed).

    With `blocking`, return once every application runs and HTTP reaches it, polling with our
    own deadline (`timeout_s`; None or 0: none) rather than Serve's fixed 60 s; `progress`
    gets a line per deployment as its state changes. readiness.NotReady names the cause when
    a replica cannot be placed or fails to load, or what was still pending at the deadline."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from .readiness import wait_proxies, wait_running

    serve.start(http_options={"host": host, "port": port})
    schema = ServeDeploySchema.model_validate(
        {"http_options": {"host": host, "port": port}, "applications": applications}
    )
    _get_global_client().deploy_apps(schema, _blocking=False)
    if blocking:
        wait_running([app["name"] for app in applications], timeout_s, progress, cluster_can_grow)
        wait_proxies()
