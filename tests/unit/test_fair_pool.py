"""FairPool: one call keeps at most `share` tasks in the pool, so another call's task
starts while a long call is still running; results and exceptions come back in order."""

from __future__ import annotations

import asyncio
import threading
import time

from deployments.engine.fair_pool import FairPool


def test_a_long_call_leaves_room_for_another():
    pool = FairPool(2, "clip-test")
    assert pool.share == 1
    running, peak, lock = {"heavy": 0}, {"heavy": 0}, threading.Lock()

    def heavy(k: int) -> int:
        with lock:
            running["heavy"] += 1
            peak["heavy"] = max(peak["heavy"], running["heavy"])
        time.sleep(0.05)
        with lock:
            running["heavy"] -= 1
        return k

    def small(k: int) -> int:
        if k == 1:
            raise ValueError("bad item")
        return -k

    async def scenario() -> tuple[list, list, float, float]:
        started = time.perf_counter()
        long_call = asyncio.ensure_future(pool.map(heavy, [(k,) for k in range(10)]))
        await asyncio.sleep(0.01)
        small_results = await pool.map(small, [(0,), (1,), (2,)])
        small_done = time.perf_counter() - started
        return await long_call, small_results, small_done, time.perf_counter() - started

    heavy_results, small_results, small_done, heavy_done = asyncio.run(scenario())
    assert heavy_results == list(range(10)) and peak["heavy"] == 1
    assert small_results[0] == 0 and isinstance(small_results[1], ValueError) and small_results[2] == -2
    assert small_done < heavy_done / 2  # not queued behind the ten heavy tasks
