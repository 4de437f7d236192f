"""The router's FastAPI application, assembled from the per-feature route modules."""

from __future__ import annotations

from fastapi import FastAPI

from .. import __version__
from .body_limit import BodySizeLimit
from .errors import install_error_handlers
from .request_metrics import RequestMetrics
from .responses import JSONBytes
from .routes import classify, embeddings, health, hf_inference, models, rerank, tokenize
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
    app.add_middleware(BodySizeLimit, max_bytes=state.config.limits.max_request_bytes)
    app.add_middleware(RequestMetrics)  # outermost: also sees the body limit's answers
    for module in ROUTE_MODULES:
        app.include_router(module.router)
    return app
