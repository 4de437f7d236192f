"""Batching items into calls: concurrent items bound for the same place share one call.

One mechanism, two uses with their own settings:

- `CallCoalescer` (router -> encoder): items of concurrent requests for one (variant,
  tower) share one encoder call. A remote call costs real CPU, so one call per item would
  spend the machine on RPC. Items wait at most `wait_s` for company, or go at once when a
  call's worth (`max_items`) has gathered. With `max_inflight` calls outstanding, new
  items keep accumulating until a call returns: under load, calls grow by themselves. The
  waiting items are bounded (`max_pending`): past it a request is refused at once with a
  503 instead of queueing without bound, but a request always fits into an empty queue.
- `DeviceBatcher` (encoder -> device): calls queue item by item, and a device batch is
  formed when a forward slot frees up, from everything that queued meanwhile, which is
  what keeps device batches large under load (Serve's `@serve.batch` closes each batch
  after its wait and queues it behind the running one, so under load it runs many tiny
  ones).

If a call that carries several submits' items fails in a way that may come from one
submit's items (`isolate(exc)`), each submit's items are sent again on their own, so only
the submit at fault fails. The device batcher always isolates.

What a batcher reports goes to `BatchHooks`, plain callables (serving records them as
Prometheus metrics; the jobs and the unit tests pass none).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Generic, TypeVar

import numpy as np

from ..protocol.errors import APIError
from .concurrency import start_shared

PayloadT = TypeVar("PayloadT")


@dataclass(eq=False)
class Entry:
    """One queued item."""

    item: np.ndarray
    waiter: asyncio.Future
    queued_at: float  # time.perf_counter() when it was submitted
    submit: int  # which submit it came from (items of one submit fail or succeed together)


@dataclass(frozen=True)
class BatchHooks:
    """Observers of a batcher; each is optional."""

    size: Callable[[int], None] | None = None  # items in a call, when it starts
    wait: Callable[[float], None] | None = None  # seconds a submit's items waited for their call
    duration: Callable[[float], None] | None = None  # seconds a call took, failed or not


NO_HOOKS = BatchHooks()


class Coalescer(Generic[PayloadT]):
    """The batching mechanism; `CallCoalescer` and `DeviceBatcher` name its two uses."""

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
        hooks: BatchHooks = NO_HOOKS,
    ) -> None:
        self._call = call
        self._pack = pack
        self.max_items = max_items
        self.wait_s = wait_s
        self.max_inflight = max_inflight
        self.max_pending = max_pending
        self._isolate = isolate
        self._hooks = hooks
        self._pending: list[Entry] = []
        self._submits = 0
        self._timer: asyncio.TimerHandle | None = None
        self._due = False  # the oldest pending item has waited its `wait_s`
        self._inflight = 0
        self._tasks: set[asyncio.Task] = set()
        self.calls = 0  # calls made (observability and tests)

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
        self._pending.extend(Entry(item, future, now, self._submits) for item, future in zip(items, futures))
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
        if any(entry.waiter.done() for entry in self._pending):
            self._pending = [entry for entry in self._pending if not entry.waiter.done()]

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

    def _report_start(self, batch: list[Entry], started: float) -> None:
        if self._hooks.size is not None:
            self._hooks.size(len(batch))
        if self._hooks.wait is not None:
            for queued_at in {entry.queued_at for entry in batch}:  # items of one submit share it
                self._hooks.wait(started - queued_at)

    async def _run(self, batch: list[Entry]) -> None:
        started = time.perf_counter()
        self._report_start(batch, started)
        try:
            try:
                await self._call_and_deliver(batch)
            except Exception as exc:
                groups = self._groups(batch)
                if len(groups) > 1 and self._isolate is not None and self._isolate(exc):
                    # Maybe one submit's items broke the call: give each submit its own.
                    await asyncio.gather(*(self._call_and_deliver(g, quiet=True) for g in groups))
                else:
                    _fail(batch, exc)
        except asyncio.CancelledError:
            for entry in batch:
                entry.waiter.cancel()
            raise
        finally:
            if self._hooks.duration is not None:
                self._hooks.duration(time.perf_counter() - started)
            self._inflight -= 1
            self._schedule()

    async def _call_and_deliver(self, batch: list[Entry], quiet: bool = False) -> None:
        """One call for `batch`; with `quiet`, a failure goes to its waiters only."""
        try:
            rows = await self._call(self._pack([entry.item for entry in batch]))
            if len(rows) != len(batch):
                raise RuntimeError(f"encoder returned {len(rows)} rows for {len(batch)} items")
        except Exception as exc:
            if not quiet:
                raise
            _fail(batch, exc)
            return
        for entry, row in zip(batch, rows):
            if not entry.waiter.done():
                entry.waiter.set_result(row)

    @staticmethod
    def _groups(batch: list[Entry]) -> list[list[Entry]]:
        groups: dict[int, list[Entry]] = {}
        for entry in batch:
            groups.setdefault(entry.submit, []).append(entry)
        return list(groups.values())


def _fail(batch: list[Entry], exc: BaseException) -> None:
    """Every waiter of a failed call must hear about it."""
    for entry in batch:
        if not entry.waiter.done():
            entry.waiter.set_exception(exc)


@dataclass(frozen=True)
class CoalescingSettings:
    """Router -> encoder call coalescing (`router:` in the config)."""

    max_items: int  # router.max_items_per_call
    wait_s: float  # router.coalesce_wait_ms / 1000
    max_inflight: int  # router.max_inflight_calls
    max_pending: int  # router.max_pending_items


class CallCoalescer(Coalescer[PayloadT]):
    """Items of concurrent requests share one call (a router's encoder call)."""

    def __init__(self, call: Callable[[PayloadT], Awaitable[np.ndarray]], pack: Callable[[list[np.ndarray]], PayloadT],
                 settings: CoalescingSettings, *, isolate: Callable[[BaseException], bool] | None = None,
                 hooks: BatchHooks = NO_HOOKS) -> None:
        super().__init__(call, pack, max_items=settings.max_items, wait_s=settings.wait_s,
                         max_inflight=settings.max_inflight, max_pending=settings.max_pending, isolate=isolate,
                         hooks=hooks)


class DeviceBatcher(Coalescer[PayloadT]):
    """Calls' items merged into device batches (batch size counted in items, not calls);
    each batch takes what queued while the previous forward ran. A failed batch is rerun
    call by call, so only the call at fault fails. `retune` changes the knobs live."""

    def __init__(self, forward: Callable[[PayloadT], Awaitable[np.ndarray]], pack: Callable[[list[np.ndarray]], PayloadT],
                 *, max_batch_size: int, batch_wait_timeout_s: float, batches_in_flight: int,
                 hooks: BatchHooks = NO_HOOKS) -> None:
        super().__init__(forward, pack, max_items=max_batch_size, wait_s=batch_wait_timeout_s,
                         max_inflight=batches_in_flight, isolate=lambda exc: True, hooks=hooks)

    def retune(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.max_items = max_batch_size
        self.wait_s = batch_wait_timeout_s
