"""Encoder calls that survive a replica dying under them.

Embedding is idempotent, so a call whose replica died (killed, OOM, node lost) is sent
again; Serve has by then marked the replica dead and routes the retry to another one.
Only replica loss is retried: an input problem, backpressure (the service is full: retrying
would add load) or a timeout goes straight back to the caller. Retries are bounded and
back off briefly; the router's request deadline bounds the total.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

from .metrics import metrics

logger = logging.getLogger("ray.serve")
T = TypeVar("T")
BACKOFF_S = (0.05, 0.25, 0.5, 1.0, 1.0)


def replica_lost(exc: BaseException) -> bool:
    """The replica serving a call went away (as opposed to the call failing on its own)."""
    from ray import exceptions as ray_exceptions
    from ray.serve import exceptions as serve_exceptions

    if isinstance(exc, (ray_exceptions.RayActorError, serve_exceptions.ReplicaUnavailableError)):
        return True  # ActorDiedError and ActorUnavailableError included
    cause = getattr(exc, "cause", None)  # a RayTaskError wrapping the death of the replica
    return isinstance(exc, ray_exceptions.RayTaskError) and isinstance(cause, ray_exceptions.RayActorError)


def input_specific(exc: BaseException) -> bool:
    """A failure that may be caused by the items of one request, so that the other requests
    sharing the call deserve a run of their own: not capacity, timeouts or replica loss."""
    from ray.serve import exceptions as serve_exceptions

    from ..protocol.errors import APIError

    systemic = (serve_exceptions.BackPressureError, serve_exceptions.DeploymentUnavailableError, APIError,
                TimeoutError, asyncio.TimeoutError)
    return not isinstance(exc, systemic) and not replica_lost(exc)


async def with_retries(call: Callable[[], Awaitable[T]], retries: int, tags: dict[str, str],
                       on_retry: Callable[[], None] | None = None) -> T:
    for attempt in range(retries + 1):
        try:
            return await call()
        except Exception as exc:
            if attempt == retries or not replica_lost(exc):
                raise
            metrics().errors.inc(tags={**tags, "stage": "encode", "status": "replica_lost_retried"})
            if on_retry is not None:
                on_retry()
            logger.warning("%s encoder replica of %s lost (%s); retrying on another (%d/%d)", tags.get("tower"),
                           tags.get("variant"), type(exc).__name__, attempt + 1, retries)
            await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
    raise AssertionError("unreachable")
