"""Router-side coalescing: concurrent items bound for the same (variant, tower) share one
encoder call.

A Ray call costs ~10-15 ms of CPU on a small box, so one call per item would spend the
machine on RPC. Items wait at most `wait_s` for company, or go at once when a call's worth
(`max_items`) has gathered. With `max_inflight` calls outstanding, new items keep
accumulating until a call returns: under load, batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Generic, TypeVar

import numpy as np

from .metrics import metrics

PayloadT = TypeVar("PayloadT")


class Coalescer(Generic[PayloadT]):
    def __init__(
        self,
        call: Callable[[PayloadT], Awaitable[np.ndarray]],
        pack: Callable[[list[np.ndarray]], PayloadT],
        *,
        max_items: int,
        wait_s: float,
        max_inflight: int,
        metric_tags: dict[str, str] | None = None,
    ) -> None:
        self._call = call
        self._pack = pack
        self.max_items = max_items
        self.wait_s = wait_s
        self.max_inflight = max_inflight
        self._pending: list[tuple[np.ndarray, asyncio.Future, float]] = []  # (item, waiter, queued at)
        self._tags = metric_tags  # {variant, tower}; None records no metrics
        self._timer: asyncio.TimerHandle | None = None
        self._due = False  # the oldest pending item has waited its `wait_s`
        self._inflight = 0
        self._tasks: set[asyncio.Task] = set()
        self.calls = 0  # encoder calls made (observability and tests)

    @property
    def inflight(self) -> int:
        return self._inflight

    async def submit(self, items: list[np.ndarray]) -> list[np.ndarray]:
        """Embed `items`; returns one row per item, in order. Cancelling the caller
        withdraws its items that have not been sent yet."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        now = time.perf_counter()
        self._pending.extend((item, future, now) for item, future in zip(items, futures))
        self._schedule()
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def _schedule(self) -> None:
        self._drop_cancelled()
        while self._pending and self._inflight < self.max_inflight and (
            self._due or len(self._pending) >= self.max_items or self.wait_s == 0
        ):
            self._dispatch()
        if not self._pending:
            self._due = False
            self._cancel_timer()
        elif not self._due and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.wait_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._due = True
        self._schedule()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drop_cancelled(self) -> None:
        if any(f.done() for _, f, _ in self._pending):
            self._pending = [entry for entry in self._pending if not entry[1].done()]

    def _dispatch(self) -> None:
        batch, self._pending = self._pending[: self.max_items], self._pending[self.max_items :]
        if not self._pending:
            self._due = False
            self._cancel_timer()
        self._inflight += 1
        self.calls += 1
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record_dispatch(self, batch: list[tuple[np.ndarray, asyncio.Future, float]], started: float) -> None:
        m = metrics()
        m.call_items.observe(len(batch), tags=self._tags)
        waits = {**self._tags, "stage": "coalesce"}
        for queued_at in {queued_at for _, _, queued_at in batch}:  # items of one submit share it
            m.queue_wait_seconds.observe(started - queued_at, tags=waits)

    async def _run(self, batch: list[tuple[np.ndarray, asyncio.Future, float]]) -> None:
        started = time.perf_counter()
        if self._tags is not None:
            self._record_dispatch(batch, started)
        try:
            rows = await self._call(self._pack([array for array, _, _ in batch]))
            if len(rows) != len(batch):
                raise RuntimeError(f"encoder returned {len(rows)} rows for {len(batch)} items")
            for (_, future, _), row in zip(batch, rows):
                if not future.done():
                    future.set_result(row)
        except asyncio.CancelledError:
            for _, future, _ in batch:
                future.cancel()
            raise
        except Exception as exc:  # every waiter of this call must hear about it
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            if self._tags is not None:  # the router->encoder round trip, failed or not
                metrics().stage_seconds.observe(time.perf_counter() - started, tags={**self._tags, "stage": "encode"})
            self._inflight -= 1
            self._schedule()
