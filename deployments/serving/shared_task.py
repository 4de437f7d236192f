"""Tasks whose work several requests share (a coalesced encoder call, a single-flight
label encode, an encoder info refresh).

A task copies the context of the request that happened to start it, and with it Ray
Serve's request context: Serve would then treat the task's encoder calls as children of
that one request and cancel them when it is cancelled (client gone, deadline), failing
every other request waiting on the same call. Shared tasks therefore start in an empty
context: they belong to no request and finish for whoever still waits.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Coroutine


def start_shared(coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
