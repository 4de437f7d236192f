"""The router's FastAPI application, assembled from the per-feature route modules."""

from __future__ import annotations

from fastapi import FastAPI

from .. import __version__
from .auth import ApiKeyAuth
from .body_limit import BodySizeLimit
from .errors import install_error_handlers
from .admission import AdmissionControl, Deadline
from .request_metrics import RequestMetrics
from .responses import JSONBytes
from .routes import classify, embeddings, health, hf_inference, models, playground, rerank, tokenize
from .state import RouterState

ROUTE_MODULES = (embeddings, models, health, classify, rerank, tokenize, hf_inference)


def build_http_app(state: RouterState) -> FastAPI:
    app = FastAPI(
        title="clip-serve",
        version=__version__,
        description="CLIP embeddings, zero-shot classification and ranking; OpenAI-compatible.",
        default_response_class=JSONBytes,
    )
    app.state.clip = state
    install_error_handlers(app)
    # Added innermost first. Order of a request: metrics, auth (before any body is read),
    # admission (shed at once when full), deadline (bounds body reading and work), body limit.
    app.add_middleware(BodySizeLimit, max_bytes=state.config.limits.max_request_bytes)
    app.add_middleware(Deadline, timeout_s=state.config.router.request_timeout_s)
    app.add_middleware(AdmissionControl, capacity=state.capacity)
    if state.keys is not None:
        app.add_middleware(ApiKeyAuth, keys=state.keys)
    app.add_middleware(RequestMetrics)  # outermost: also sees the other middlewares' answers
    for module in ROUTE_MODULES:
        app.include_router(module.router)
    if state.config.router.playground:
        app.include_router(playground.router)
    return app
