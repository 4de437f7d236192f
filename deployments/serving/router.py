"""The ingress deployment: validates, decodes, coalesces and routes to the encoders."""

from __future__ import annotations

from typing import Any

from ray import serve

from ..config import AppConfig
from .http_app import build_http_app
from .overload import register_router_capacity
from .state import RouterState

ROUTER_DEFAULTS: dict[str, Any] = {
    "ray_actor_options": {"num_cpus": 1},
    # Above router.max_concurrent_requests (192): the router answers overload itself, in
    # the envelope; the proxy's queue below is the backstop (a plain-text 503).
    "max_ongoing_requests": 256,
    "max_queued_requests": 256,
    "backpressure_config": {"status_code": 503, "retry_after_s": 1},
}


@serve.deployment(**ROUTER_DEFAULTS)
@serve.ingress()
class Router:
    async def __init__(self, config: dict[str, Any], encoders: dict[str, dict[str, Any]]) -> None:
        self.state = RouterState(AppConfig.model_validate(config), encoders)
        register_router_capacity(self.state.capacity)  # this process's HTTP callback sheds against it
        self.state.variants.start()

    def __serve_build_asgi_app__(self):
        return build_http_app(self.state)

    async def stats(self) -> dict[str, Any]:
        """Work in progress in this replica, and its pid (tests, debugging)."""
        import os

        return {"pid": os.getpid(), **self.state.stats()}

    async def label_cache_stats(self) -> dict[str, Any]:
        """This replica's label cache counters and the weights each variant runs (tests, debugging)."""
        return {**self.state.label_cache.stats(), "fingerprints": {v.id: v.fingerprint for v in self.state.variants}}
