"""Liveness and readiness for load balancers and Kubernetes probes."""

from __future__ import annotations

from fastapi import Depends

from ...protocol.errors import APIError
from ..responses import JSONBytes
from ..state import RouterState, get_state
from . import api_router

router = api_router()


@router.get("/health", response_class=JSONBytes, summary="Liveness: the router answers")
async def health() -> JSONBytes:
    return JSONBytes({"status": "ok"})


@router.get("/ready", response_class=JSONBytes, summary="Readiness: every configured model has loaded")
async def ready(state: RouterState = Depends(get_state)) -> JSONBytes:
    pending = {v.id: v.load_error or "loading" for v in state.variants if not v.ready}
    if pending:
        detail = "; ".join(f"{k}: {v}" for k, v in pending.items())
        raise APIError.unavailable(f"not ready: {detail}", retry_after_s=5, code="not_ready")
    return JSONBytes({"status": "ready", "models": [v.id for v in state.variants]})
