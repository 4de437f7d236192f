"""Router-side coalescing: concurrent items bound for the same (variant, tower) share one
encoder call.

A Ray call costs ~10-15 ms of CPU on a small box, so one call per item would spend the
machine on RPC. Items wait at most `wait_s` for company, or go at once when a call's worth
(`max_items`) has gathered. With `max_inflight` calls outstanding, new items keep
accumulating until a call returns: under load, batches grow by themselves. The waiting
items are bounded (`max_pending`): past it a request is refused at once with a 503
instead of queueing without bound, but a request always fits into an empty queue.

If a call that carries several requests' items fails in a way that may come from one
request's items (`isolate(exc)`), each request's items are sent again on their own, so
only the request at fault fails.

Encoder replicas batch with the same class (their calls are the "items' requests"): a
batch is formed when the device frees up, from everything that queued meanwhile, which
is what keeps device batches large under load (Serve's `@serve.batch` closes each batch
after its wait and queues it behind the running one, so under load it runs many tiny ones).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Generic, TypeVar

import numpy as np

from ..protocol.errors import APIError
from .metrics import metrics
from .concurrency import start_shared

@dataclass(frozen=True)
class MetricNames:
    size: str  # histogram of metrics(): items per call
    wait_stage: str  # queue_wait_seconds stage: items waiting for their call
    call_stage: str  # stage_seconds stage: the call, failed or not


ROUTER_METRICS = MetricNames("call_items", "coalesce", "encode")
ENCODER_METRICS = MetricNames("batch_items", "batch", "forward")

PayloadT = TypeVar("PayloadT")
# (item, its waiter, when it was queued, which submit it came from)
Entry = tuple[np.ndarray, asyncio.Future, float, int]


class Coalescer(Generic[PayloadT]):
    def __init__(
        self,
        call: Callable[[PayloadT], Awaitable[np.ndarray]],
        pack: Callable[[list[np.ndarray]], PayloadT],
        *,
        max_items: int,
        wait_s: float,
        max_inflight: int,
        max_pending: int | None = None,
        isolate: Callable[[BaseException], bool] | None = None,
        metric_tags: dict[str, str] | None = None,
        metric_names: MetricNames = ROUTER_METRICS,
    ) -> None:
        self._call = call
        self._pack = pack
        self.max_items = max_items
        self.wait_s = wait_s
        self.max_inflight = max_inflight
        self.max_pending = max_pending
        self._isolate = isolate
        self._pending: list[Entry] = []
        self._submits = 0
        self._tags = metric_tags  # {variant, tower}; None records no metrics
        self._names = metric_names
        self._timer: asyncio.TimerHandle | None = None
        self._due = False  # the oldest pending item has waited its `wait_s`
        self._inflight = 0
        self._tasks: set[asyncio.Task] = set()
        self.calls = 0  # encoder calls made (observability and tests)

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def submit(self, items: list[np.ndarray]) -> list[np.ndarray]:
        """Embed `items`; returns one row per item, in order. Cancelling the caller
        withdraws its items that have not been sent yet. Raises a 503 APIError when the
        queue is too full to take them."""
        self._drop_cancelled()
        if self.max_pending is not None and self._pending and len(self._pending) + len(items) > self.max_pending:
            raise APIError.unavailable(
                f"the encoders are at capacity ({len(self._pending)} items waiting); retry shortly", retry_after_s=1
            )
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        now = time.perf_counter()
        self._submits += 1
        self._pending.extend((item, future, now, self._submits) for item, future in zip(items, futures))
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
        if any(f.done() for _, f, _, _ in self._pending):
            self._pending = [entry for entry in self._pending if not entry[1].done()]

    def _dispatch(self) -> None:
        batch, self._pending = self._pending[: self.max_items], self._pending[self.max_items :]
        if not self._pending:
            self._due = False
            self._cancel_timer()
        self._inflight += 1
        self.calls += 1
        task = start_shared(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record_dispatch(self, batch: list[Entry], started: float) -> None:
        m = metrics()
        getattr(m, self._names.size).observe(len(batch), tags=self._tags)
        waits = {**self._tags, "stage": self._names.wait_stage}
        for queued_at in {queued_at for _, _, queued_at, _ in batch}:  # items of one submit share it
            m.queue_wait_seconds.observe(started - queued_at, tags=waits)

    async def _run(self, batch: list[Entry]) -> None:
        started = time.perf_counter()
        if self._tags is not None:
            self._record_dispatch(batch, started)
        try:
            try:
                await self._call_and_deliver(batch)
            except Exception as exc:
                groups = self._groups(batch)
                if len(groups) > 1 and self._isolate is not None and self._isolate(exc):
                    # Maybe one request's items broke the call: give each request its own.
                    await asyncio.gather(*(self._call_and_deliver(g, quiet=True) for g in groups))
                else:
                    _fail(batch, exc)
        except asyncio.CancelledError:
            for _, future, _, _ in batch:
                future.cancel()
            raise
        finally:
            if self._tags is not None:  # the call (router->encoder round trip, or forward), failed or not
                metrics().stage_seconds.observe(
                    time.perf_counter() - started, tags={**self._tags, "stage": self._names.call_stage})
            self._inflight -= 1
            self._schedule()

    async def _call_and_deliver(self, batch: list[Entry], quiet: bool = False) -> None:
        """One encoder call for `batch`; with `quiet`, a failure goes to its waiters only."""
        try:
            rows = await self._call(self._pack([array for array, _, _, _ in batch]))
            if len(rows) != len(batch):
                raise RuntimeError(f"encoder returned {len(rows)} rows for {len(batch)} items")
        except Exception as exc:
            if not quiet:
                raise
            _fail(batch, exc)
            return
        for (_, future, _, _), row in zip(batch, rows):
            if not future.done():
                future.set_result(row)

    @staticmethod
    def _groups(batch: list[Entry]) -> list[list[Entry]]:
        groups: dict[int, list[Entry]] = {}
        for entry in batch:
            groups.setdefault(entry[3], []).append(entry)
        return list(groups.values())


def _fail(batch: list[Entry], exc: BaseException) -> None:
    """Every waiter of a failed call must hear about it."""
    for _, future, _, _ in batch:
        if not future.done():
            future.set_exception(exc)
