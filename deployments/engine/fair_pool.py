"""A thread pool for request CPU work (image decodes, tokenizer batches) that no single
request can monopolise.

A plain executor runs tasks first come, first served: one request with 96 large images
queues 96 decodes, and every request after it waits for all of them, into its deadline.
Here each call keeps at most `share` of its tasks in the pool at once; the rest wait in
the caller, on the event loop, where cancelling the request (deadline, client gone)
withdraws them. A small request's task then waits behind at most `share` tasks of each
request already running, and with `share` below the pool's size a heavy request leaves
threads free for the others.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

from .threads import named_pool


class FairPool:
    def __init__(self, workers: int, os_name: str) -> None:
        self._pool = named_pool(workers, os_name)
        self.share = max(1, workers // 2)

    async def map(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        """fn(*args) for each args, in the pool; results or the exceptions raised, in order."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(self.share)

        async def one(args: tuple[Any, ...]) -> Any:
            async with gate:
                return await loop.run_in_executor(self._pool, fn, *args)

        return await asyncio.gather(*(one(args) for args in calls), return_exceptions=True)
