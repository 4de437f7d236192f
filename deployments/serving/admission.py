"""Admission: shedding load and bounding time, answered in the error envelope, in every
HTTP server a request passes.

`AdmissionControl` caps the API requests one router replica works on; beyond the cap a
request is refused at once (503 `overloaded`, `Retry-After`) before its body is read, so
overload costs little and the requests accepted keep a bounded latency. The cap sits below
the Router's `max_ongoing_requests`, so Serve's proxy keeps sending requests here (to be
answered in the envelope) rather than queueing them itself; the proxy's own queue
(`max_queued_requests`, a plain-text 503) is only the backstop for a router too busy to
answer at all.

`Deadline` bounds a request's time in the router (`router.request_timeout_s`, below
Serve's `http_options.request_timeout_s`, whose own timeout answers a bare 408): on expiry
the endpoint's work is cancelled (items not yet sent to an encoder are withdrawn) and the
client gets a 504 `timeout` in the envelope.

`middlewares` is the HTTP callback Serve runs in every HTTP server it starts, before a
request costs Serve's request handling (a refusal behind Serve's Python proxy would still
pay the proxy->replica hop). In each Python proxy it caps the requests that proxy has in
flight to routers (size it near routers x max_concurrent_requests per proxy); in a
router's own HTTP server (direct ingress behind HAProxy, deployments/ingress.py) it applies
that router's cap, registered here by the router (`register_router_capacity`), and the
app's own AdmissionControl then lets the request through uncounted. Serve loads the
callback from an import path in each Ray node's environment (the pods' on Kubernetes;
`python -m deployments serve` sets it for the local cluster it starts):

    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deployments.serving.proxy_admission:middlewares
    CLIP_SERVE_PROXY_MAX_INFLIGHT=512   # Python proxies only

(serving/proxy_admission.py is that stable import path.) Either callback also installs
the header-read timeout and header-size limit in that HTTP server (serving/http_guard.py);
`guard_only` does only that, for Python proxies that should not shed.

Probes, docs and Serve's own endpoints (serving/paths.py) pass untouched.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Callable

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..protocol.errors import APIError
from .errors import send_error
from .http_guard import install as install_http_guard
from .paths import is_public, never_shed

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "deployments.serving.proxy_admission:middlewares"
GUARD_ONLY = "deployments.serving.proxy_admission:guard_only"
LIMIT_ENV = "CLIP_SERVE_PROXY_MAX_INFLIGHT"
DEFAULT_LIMIT = 512


@dataclass
class Capacity:
    """API requests in progress against one cap, and how many were refused."""

    limit: int
    active: int = 0
    shed: int = 0


# The cap of the router replica living in this process, if one does: Serve's HTTP callback
# in the router's own HTTP server runs outside Serve's request handling and FastAPI, and
# sheds against this same cap.
_router_capacity: Capacity | None = None


def register_router_capacity(capacity: Capacity) -> None:
    global _router_capacity
    _router_capacity = capacity


def router_capacity() -> Capacity | None:
    return _router_capacity


# Scope key of a request admitted against a cap of this process: an inner AdmissionControl
# on the same cap lets it through uncounted (process-local: Serve's proxy ships the scope
# to another process, whose router must count it).
_ADMITTED = "clip.admitted"


class AdmissionControl:
    """Caps requests in progress; `exempt` requests (probes) are neither counted nor shed."""

    def __init__(self, app: ASGIApp, capacity: Capacity, exempt: Callable[[Scope], bool] = is_public) -> None:
        self.app = app
        self.capacity = capacity
        self.exempt = exempt

    def current(self) -> Capacity:
        return self.capacity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        capacity = self.current()
        token = (os.getpid(), id(capacity))
        if scope["type"] != "http" or self.exempt(scope) or scope.get(_ADMITTED) == token:
            await self.app(scope, receive, send)
            return
        if capacity.active >= capacity.limit:
            capacity.shed += 1
            await send_error(send, APIError.unavailable("the server is at capacity; retry shortly", retry_after_s=1))
            return
        capacity.active += 1
        scope[_ADMITTED] = token
        try:
            await self.app(scope, receive, send)
        finally:
            capacity.active -= 1


class ServeAdmission(AdmissionControl):
    """In Serve's proxy: a cap on this proxy's requests in flight to any router. In a
    router's own HTTP server (Serve's direct ingress, behind HAProxy): that router's cap,
    checked before Serve's request handling and the app, which then do not count it again."""

    def current(self) -> Capacity:
        return router_capacity() or self.capacity


class Deadline:
    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope):
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                await self.app(scope, receive, watch)
        except TimeoutError:
            if not deadline.expired() or started:
                raise  # not ours, or too late to answer in the envelope
            await send_error(send, APIError(
                504, f"the request did not finish within the server's {self.timeout_s:g} s deadline",
                type="server_error", code="timeout",
            ))


def middlewares() -> list[Middleware]:
    """The HTTP callback Serve calls (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH) in every
    HTTP server it starts: its proxies, and with direct ingress its ingress replicas."""
    install_http_guard()
    capacity = Capacity(int(os.environ.get(LIMIT_ENV, DEFAULT_LIMIT)))
    return [Middleware(ServeAdmission, capacity=capacity, exempt=never_shed)]


def guard_only() -> list[Middleware]:
    """The callback for Serve's Python proxies without a cap: the header limits, no shedding."""
    install_http_guard()
    return []
