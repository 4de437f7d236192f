"""`build_app(args) -> Application`: the import_path of serve_config.yaml, and the one
place replica classes become Serve deployments.

Validates args into an AppConfig, creates one ImageEncoder/TextEncoder deployment per
variant (deterministic names `ImageEncoder:<slug>`) and binds the router to them. Each
deployment's options come from its replica class's `get_deployment_options`
(serving/deployment_options.py); serve_config.yaml's `deployments:` overrides them at
deploy time. What each encoder was given, and why, goes to the log.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.deployment import Deployment

from .config import DEPLOYMENT_PREFIX, ROUTER_DEPLOYMENT, AppConfig, VariantConfig, parse_app_config
from .serving.deployment_options import recommended_resources
from .serving.encoder import ENCODER_REPLICAS
from .serving.router import RouterReplica

logger = logging.getLogger("ray.serve")


def encoder_deployment(variant: VariantConfig, tower: str) -> Deployment:
    replica = ENCODER_REPLICAS[tower]
    options = replica.get_deployment_options(variant)
    name = variant.deployment_name(tower)
    logger.info("%s: ray_actor_options %s (resources: %s)", name, options["ray_actor_options"],
                recommended_resources(variant, tower)[1])
    return serve.deployment(replica, name=name, **options)


def router_deployment(config: AppConfig | None = None) -> Deployment:
    options = RouterReplica.get_deployment_options(config.router if config else None)
    return serve.deployment(serve.ingress()(RouterReplica), name=ROUTER_DEPLOYMENT, **options)


def build_app(args: dict[str, Any] | AppConfig) -> Application:
    config = parse_app_config(args)
    encoders = {
        variant.id: {
            tower: encoder_deployment(variant, tower).bind(variant.model_dump(mode="json")) for tower in variant.towers
        }
        for variant in config.variants
    }
    return router_deployment(config).bind(config.model_dump(mode="json"), encoders)


# The deployments with their default options, for use outside build_app (tests, scripts).
ImageEncoder = serve.deployment(ENCODER_REPLICAS["image"], name=DEPLOYMENT_PREFIX["image"],
                                **ENCODER_REPLICAS["image"].get_deployment_options())
TextEncoder = serve.deployment(ENCODER_REPLICAS["text"], name=DEPLOYMENT_PREFIX["text"],
                               **ENCODER_REPLICAS["text"].get_deployment_options())
