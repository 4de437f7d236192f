"""Shedding load and bounding time inside the router, answered in the error envelope.

`AdmissionControl` caps the API requests one router replica works on; beyond the cap a
request is refused at once (503 `overloaded`, `Retry-After`) before its body is read,
so overload costs little and the requests accepted keep a bounded latency. The cap sits
below the Router's `max_ongoing_requests`, so Serve's proxy keeps sending requests here
(to be answered in the envelope) rather than queueing them itself; the proxy's own queue
(`max_queued_requests`, a plain-text 503) is only the backstop for a router too busy to
answer at all.

`Deadline` bounds a request's time in the router (`router.request_timeout_s`, below
Serve's `http_options.request_timeout_s`, whose own timeout answers a bare 408): on
expiry the endpoint's work is cancelled (items not yet sent to an encoder are withdrawn)
and the client gets a 504 `timeout` in the envelope.

Probes and docs (the public paths) pass both untouched: a loaded router stays ready.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..protocol.errors import APIError
from .auth import is_public
from .body_limit import send_error


@dataclass
class Capacity:
    """One router replica's API requests in progress, and how many were refused."""

    limit: int
    active: int = 0
    shed: int = 0


# The cap of the router replica living in this process, if one does. With Serve's direct
# ingress the HTTP callback (proxy_admission) runs in the router's own HTTP server, outside
# Serve's request handling and FastAPI, and sheds there against this same cap: a refusal
# then costs a fraction of one that reaches the app (docs/reliability.md).
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
