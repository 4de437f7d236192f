"""serve_config.yaml -> the Serve config KubeRay deploys (RayService.spec.serveConfigV2).

The overlay's `deployment_overrides` are deep-merged over each deployment's entry, so the
same file that runs on a laptop places encoders on GPU pods and routers on CPU pods.
"""

from __future__ import annotations

import copy
from fnmatch import fnmatch
from typing import Any

import yaml

from ..config import ROUTER_DEPLOYMENT, parse_app_config

BUILD_APP = "deployments.app:build_app"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def deployment_names(args: dict[str, Any]) -> list[str]:
    """Every deployment build_app creates for these args, router first."""
    config = parse_app_config(args)
    return [ROUTER_DEPLOYMENT] + [v.deployment_name(t) for v in config.variants for t in v.towers]


def kubernetes_serve_config(serve_config: dict[str, Any], overrides: dict[str, dict[str, Any]],
                            args_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from ray.serve.schema import ServeDeploySchema

    config = copy.deepcopy(serve_config)
    used: set[str] = set()
    for app in config["applications"]:
        if app.get("import_path") != BUILD_APP:
            continue
        if args_overrides:
            app["args"] = deep_merge(app["args"], copy.deepcopy(args_overrides))
            parse_app_config(app["args"])  # a bad override fails here, naming the field
        entries = {entry["name"]: entry for entry in app.get("deployments", [])}
        for name in deployment_names(app["args"]):
            for pattern, options in overrides.items():
                if fnmatch(name, pattern):
                    entries[name] = deep_merge(entries.get(name, {"name": name}), copy.deepcopy(options))
                    used.add(pattern)
        app["deployments"] = list(entries.values())
    unused = sorted(set(overrides) - used)
    if unused:
        raise ValueError(f"deployment_overrides patterns match no deployment: {unused}")
    ServeDeploySchema.model_validate(config)  # what `serve deploy` would reject fails here
    return config


def serve_config_text(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=120)
