"""Running request work concurrently without leaks or cross-talk.

`gather_or_cancel`: sibling jobs of one request; when one fails the others are cancelled
(their items withdrawn) instead of running on for nobody.

`start_shared`: tasks whose work several requests share (a coalesced encoder call, a
single-flight label encode, an encoder info refresh).

A task copies the context of the request that happened to start it, and with it Ray
Serve's request context: Serve would then treat the task's encoder calls as children of
that one request and cancel them when it is cancelled (client gone, deadline), failing
every other request waiting on the same call. Shared tasks therefore start in an empty
context: they belong to no request and finish for whoever still waits.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Awaitable, Coroutine


def start_shared(coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


async def gather_or_cancel(*jobs: Awaitable[Any]) -> list[Any]:
    """All results in order; if one job fails, cancel the others, wait for them, and raise."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
