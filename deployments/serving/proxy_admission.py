"""Shedding in Serve's HTTP proxy itself, before a request costs a hop to a router.

A router refusing a request still pays Serve's proxy->replica hop (about 10-15 ms of CPU
on a small machine): far past capacity the refusals alone saturate the CPUs and even the
503s come late. This middleware runs inside each HTTP proxy and caps the requests that
proxy has in flight to routers; beyond the cap it answers the 503 envelope at once,
without any hop. Routers' own admission control stays the precise per-replica limit;
this one is the cheap outer bound (size it near routers x max_concurrent_requests per
proxy).

Serve loads proxy middleware from an import path in the proxy's environment, so enable it
on every Ray node (the pods' environment on Kubernetes; `python -m deployments serve`
sets it for the local cluster it starts):

    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deployments.serving.proxy_admission:middlewares
    CLIP_SERVE_PROXY_MAX_INFLIGHT=512

Serve's own endpoints (/-/healthz, /-/routes) and GET /health and /ready (under any route
prefix) are never shed.
"""

from __future__ import annotations

import os

from starlette.middleware import Middleware
from starlette.types import Scope

from .overload import AdmissionControl, Capacity

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "deployments.serving.proxy_admission:middlewares"
LIMIT_ENV = "CLIP_SERVE_PROXY_MAX_INFLIGHT"
DEFAULT_LIMIT = 512
PROBES = ("/health", "/ready")


def never_shed(scope: Scope) -> bool:
    """Serve's own endpoints and our probes, under any route prefix (the proxy sees full paths)."""
    path = scope.get("path", "")
    return path.startswith("/-/") or (scope.get("method") in ("GET", "HEAD") and path.endswith(PROBES))


def middlewares() -> list[Middleware]:
    """The proxy callback Serve calls (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH): the
    router's admission control, counting this proxy's requests in flight to any router."""
    capacity = Capacity(int(os.environ.get(LIMIT_ENV, DEFAULT_LIMIT)))
    return [Middleware(AdmissionControl, capacity=capacity, exempt=never_shed)]
