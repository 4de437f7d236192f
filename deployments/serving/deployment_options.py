"""Ray Serve options of every deployment, in one place: the defaults, the resources an
encoder gets when its config names none, and what the config sets on top.

The replica classes (serving/encoder.py, serving/router.py) are plain classes whose
`get_deployment_options` return these; deployments/app.py applies them with
`serve.deployment(...)`. serve_config.yaml's `deployments:` entries override them again
at deploy time (docs/configuration.md).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..catalogue import CATALOGUE, architecture_from_config, size_class
from ..config import TOWER_BATCHING, RouterConfig, VariantConfig

ENCODER_DEFAULTS: dict[str, Any] = {
    "max_ongoing_requests": 64,
    # Calls a router may queue for this deployment when every replica is busy; past it the
    # router gets BackPressureError and answers 503 (routers send few, coalesced calls).
    "max_queued_requests": 64,
    "health_check_period_s": 10,
    "health_check_timeout_s": 30,
}
ROUTER_DEFAULTS: dict[str, Any] = {
    "ray_actor_options": {"num_cpus": 1},
    # Above the default router.max_concurrent_requests: the router answers overload itself,
    # in the envelope; the proxy's queue below is the backstop (a plain-text 503). A unit
    # test keeps the two in that order.
    "max_ongoing_requests": 256,
    "max_queued_requests": 256,
    "backpressure_config": {"status_code": 503, "retry_after_s": 1},
}
DEFAULT_ENCODER_ACTOR: dict[str, Any] = {"num_cpus": 1}
GPU_ENCODER_ACTOR: dict[str, Any] = {"num_cpus": 1, "num_gpus": 1}


@lru_cache(maxsize=64)
def _size_class(source: str, revision: str | None) -> tuple[str, Any] | None:
    from ..backends import clip_layouts
    from ..backends.checkpoint import local_config

    # transformers' config.json, else open_clip's own (its ResNets have no transformers layout;
    # some of those repositories carry a timm config.json, which names no CLIP shape).
    arch = architecture_from_config(local_config(source, revision) or {})
    if arch is None:
        found = local_config(source, revision, clip_layouts.OPEN_CLIP_CONFIG)
        try:
            arch = clip_layouts.parse_open_clip_config(found).arch.catalogue_arch() if found else None
        except clip_layouts.LayoutError:
            return None
    return size_class(arch.vision_params) if arch is not None else None


def recommended_resources(variant: VariantConfig, tower: str) -> tuple[dict[str, Any], str]:
    """The ray_actor_options a tower gets under what its config sets, and why: a GPU for
    `device: cuda`, else the catalogue entry's CPUs, else those of the checkpoint's size
    class (when its config.json is on this machine), else one CPU."""
    configured = variant.deployment_options(tower).ray_actor_options or {}
    if variant.device == "cuda" or configured.get("num_gpus"):
        return dict(GPU_ENCODER_ACTOR if variant.device == "cuda" else DEFAULT_ENCODER_ACTOR), "GPU replica"
    entry = CATALOGUE.get(variant.id)
    if entry is not None:
        return {"num_cpus": entry.resources.cpus(tower)}, f"catalogue entry {entry.id}"
    found = _size_class(variant.resolved_source, variant.revision)
    if found is not None:
        name, resources = found
        return {"num_cpus": resources.cpus(tower)}, f"size class {name}"
    return dict(DEFAULT_ENCODER_ACTOR), "default"


def _merged(defaults: dict[str, Any], configured: dict[str, Any], actor: dict[str, Any]) -> dict[str, Any]:
    """Defaults, then the config's options; ray_actor_options merge key by key."""
    return {**defaults, **configured, "ray_actor_options": {**actor, **(configured.get("ray_actor_options") or {})}}


def encoder_deployment_options(tower: str, variant: VariantConfig | None = None) -> dict[str, Any]:
    """An encoder deployment's options. `user_config` defaults to the tower's batching; a
    config that sets it ships only what it sets (the replica fills in its tower's defaults)."""
    defaults = {**ENCODER_DEFAULTS, "user_config": TOWER_BATCHING[tower].model_dump()}
    if variant is None:
        return {**defaults, "ray_actor_options": dict(DEFAULT_ENCODER_ACTOR)}
    actor, _ = recommended_resources(variant, tower)
    return _merged(defaults, variant.deployment_options(tower).to_options(), actor)


def router_deployment_options(router: RouterConfig | None = None) -> dict[str, Any]:
    configured = router.deployment.to_options() if router is not None else {}
    return _merged(ROUTER_DEFAULTS, configured, ROUTER_DEFAULTS["ray_actor_options"])
