"""The ingress replica: validates, decodes, coalesces and routes to the encoders. A plain
class; deployments/app.py makes it Serve's ingress deployment (its own HTTP app, built by
`__serve_build_asgi_app__`) with the options `get_deployment_options` gives."""

from __future__ import annotations

from typing import Any

from ..config import AppConfig, RouterConfig
from .admission import register_router_capacity
from .deployment_options import router_deployment_options
from .http_app import build_http_app
from .state import RouterState


class RouterReplica:
    async def __init__(self, config: dict[str, Any], encoders: dict[str, dict[str, Any]]) -> None:
        self.state = RouterState(AppConfig.model_validate(config), encoders)
        register_router_capacity(self.state.capacity)  # this process's HTTP callback sheds against it
        self.state.variants.start()

    @classmethod
    def get_deployment_options(cls, router: RouterConfig | None = None) -> dict[str, Any]:
        return router_deployment_options(router)

    def __serve_build_asgi_app__(self):
        return build_http_app(self.state)

    async def stats(self) -> dict[str, Any]:
        """Work in progress in this replica, and its pid (tests, debugging)."""
        import os

        return {"pid": os.getpid(), **self.state.stats()}

    async def label_cache_stats(self) -> dict[str, Any]:
        """This replica's label cache counters and the weights each variant runs (tests, debugging)."""
        return {**self.state.label_cache.stats(), "fingerprints": {v.id: v.fingerprint for v in self.state.variants}}
