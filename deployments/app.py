"""`build_app(args) -> Application`: the import_path of serve_config.yaml.

Validates args into an AppConfig, creates one ImageEncoder/TextEncoder deployment per
variant (deterministic names `ImageEncoder:<slug>`), and binds the router to them.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application
from ray.serve.deployment import Deployment

from .config import ROUTER_DEPLOYMENT, AppConfig, DeploymentOptions, VariantConfig, parse_app_config
from .serving.encoder import ENCODER_DEFAULTS, ENCODER_DEPLOYMENTS
from .serving.router import ROUTER_DEFAULTS, Router


def _merge_options(defaults: dict[str, Any], options: DeploymentOptions) -> dict[str, Any]:
    merged = options.to_options()
    actor = dict(defaults.get("ray_actor_options", {}))
    actor.update(merged.get("ray_actor_options") or {})
    if actor:
        merged["ray_actor_options"] = actor
    return merged


def encoder_deployment(variant: VariantConfig, tower: str) -> Deployment:
    defaults = dict(ENCODER_DEFAULTS)
    if variant.device == "cuda":
        defaults["ray_actor_options"] = {"num_cpus": 1, "num_gpus": 1}
    options = _merge_options(defaults, variant.deployment_options(tower))
    return ENCODER_DEPLOYMENTS[tower].options(name=variant.deployment_name(tower), **options)


def build_app(args: dict[str, Any] | AppConfig) -> Application:
    config = parse_app_config(args)
    encoders = {
        variant.id: {
            tower: encoder_deployment(variant, tower).bind(variant.model_dump(mode="json")) for tower in variant.towers
        }
        for variant in config.variants
    }
    router = Router.options(name=ROUTER_DEPLOYMENT, **_merge_options(ROUTER_DEFAULTS, config.router.deployment))
    return router.bind(config.model_dump(mode="json"), encoders)
