"""Shedding in Serve's HTTP servers, before a request costs Serve's request handling.

A router refusing a request behind Serve's Python proxy still pays the proxy->replica hop
(about 10-15 ms of CPU on a small machine): far past capacity the refusals alone saturate
the CPUs and even the 503s come late. Serve runs this middleware in every HTTP server it
starts. In each Python proxy it caps the requests that proxy has in flight to routers
(size it near routers x max_concurrent_requests per proxy); in a router's own HTTP server
(direct ingress behind HAProxy, deployments/ingress.py) it applies that router's
`max_concurrent_requests` before Serve's request handling and the app. Beyond the cap it
answers the 503 envelope at once.

Serve loads the middleware from an import path in each Ray node's environment (the pods'
environment on Kubernetes; `python -m deployments serve` sets it for the local cluster it
starts; deployments/ingress.py builds it):

    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deployments.serving.proxy_admission:middlewares
    CLIP_SERVE_PROXY_MAX_INFLIGHT=512   # Python proxies only

Either callback also installs the header-read timeout and header-size limit in that HTTP
server (serving/http_guard.py); `guard_only` does only that, for Python proxies that
should not shed.

Serve's own endpoints (/-/healthz, /-/routes), GET /health and /ready (under any route
prefix) and the router's other public paths (docs) are never shed.
"""

from __future__ import annotations

import os

from starlette.middleware import Middleware
from starlette.types import Scope

from .auth import is_public
from .http_guard import install as install_http_guard
from .overload import AdmissionControl, Capacity, router_capacity

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "deployments.serving.proxy_admission:middlewares"
GUARD_ONLY = "deployments.serving.proxy_admission:guard_only"
LIMIT_ENV = "CLIP_SERVE_PROXY_MAX_INFLIGHT"
DEFAULT_LIMIT = 512
PROBES = ("/health", "/ready")


def never_shed(scope: Scope) -> bool:
    """Serve's own endpoints and our probes, under any route prefix (the proxy sees full paths)."""
    path = scope.get("path", "")
    return path.startswith("/-/") or (scope.get("method") in ("GET", "HEAD") and path.endswith(PROBES))


def exempt(scope: Scope) -> bool:
    return never_shed(scope) or is_public(scope)


class ServeAdmission(AdmissionControl):
    """In Serve's proxy: a cap on this proxy's requests in flight to any router. In a
    router's own HTTP server (Serve's direct ingress, behind HAProxy): that router's cap,
    checked before Serve's request handling and the app, which then do not count it again."""

    def current(self) -> Capacity:
        return router_capacity() or self.capacity


def middlewares() -> list[Middleware]:
    """The HTTP callback Serve calls (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH) in every
    HTTP server it starts: its proxies, and with direct ingress its ingress replicas."""
    install_http_guard()
    capacity = Capacity(int(os.environ.get(LIMIT_ENV, DEFAULT_LIMIT)))
    return [Middleware(ServeAdmission, capacity=capacity, exempt=exempt)]


def guard_only() -> list[Middleware]:
    """The callback for Serve's Python proxies without a cap: the header limits, no shedding."""
    install_http_guard()
    return []
