"""The router's coalescer on its own, with a recording stand-in for the encoder handle."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.engine.batching import Coalescer


class RecordingEncoder:
    """Downstream of the coalescer: records each call and returns row i = item value * 2."""

    def __init__(self, delay: float = 0.0, fail_when=None) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.fail_when = fail_when
        self.active = 0
        self.max_active = 0

    async def __call__(self, payload: np.ndarray) -> np.ndarray:
        self.calls.append(len(payload))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
            if self.fail_when is not None and self.fail_when(payload):
                raise RuntimeError("encoder failed")
            return payload * 2
        finally:
            self.active -= 1


def make(encoder, **kw) -> Coalescer:
    options = {"max_items": 8, "wait_s": 0.01, "max_inflight": 4} | kw
    return Coalescer(encoder, np.stack, **options)


def items(*values: float) -> list[np.ndarray]:
    return [np.array([v], dtype=np.float32) for v in values]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_one_call():
    async def main():
        enc = RecordingEncoder()
        c = make(enc)
        results = await asyncio.gather(*(c.submit(items(i)) for i in range(5)))
        assert [float(r[0][0]) for r in results] == [0, 2, 4, 6, 8]
        assert enc.calls == [5]

    run(main())


def test_full_calls_go_without_waiting_and_split_at_max_items():
    async def main():
        enc = RecordingEncoder()
        c = make(enc, wait_s=10.0)  # a timer this long would fail the test by timeout
        out = await asyncio.wait_for(c.submit(items(*range(16))), 1.0)
        assert [float(r[0]) for r in out] == [2 * i for i in range(16)]
        assert enc.calls == [8, 8]

    run(main())


def test_items_accumulate_while_inflight_is_full():
    async def main():
        enc = RecordingEncoder(delay=0.05)
        c = make(enc, max_inflight=1, wait_s=0.0)
        first = asyncio.create_task(c.submit(items(0)))
        await asyncio.sleep(0.01)  # first call is now in flight
        rest = [asyncio.create_task(c.submit(items(i))) for i in range(1, 6)]
        await asyncio.gather(first, *rest)
        assert enc.calls == [1, 5] and enc.max_active == 1

    run(main())


def test_a_failed_call_fails_only_its_own_items():
    async def main():
        enc = RecordingEncoder(fail_when=lambda p: (p == 13).any())
        c = make(enc, max_items=2, wait_s=0.0)
        good = c.submit(items(1, 2))
        bad = c.submit(items(13, 4))
        results = await asyncio.gather(good, bad, return_exceptions=True)
        assert [float(r[0]) for r in results[0]] == [2, 4]
        assert isinstance(results[1], RuntimeError)

    run(main())


def test_cancelled_callers_items_are_not_sent():
    async def main():
        enc = RecordingEncoder()
        c = make(enc, wait_s=0.05)
        doomed = asyncio.create_task(c.submit(items(7, 7, 7)))
        kept = asyncio.create_task(c.submit(items(1)))
        await asyncio.sleep(0.005)
        doomed.cancel()
        assert [float(r[0]) for r in await kept] == [2]
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert enc.calls == [1]

    run(main())


def test_lone_item_waits_at_most_the_window():
    async def main():
        enc = RecordingEncoder()
        c = make(enc, wait_s=0.02)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await c.submit(items(1))
        assert 0.015 <= loop.time() - start < 0.5

    run(main())


def test_a_poison_request_sharing_a_call_fails_alone():
    """Items of several requests in one call: when the call fails in a way that may come
    from one request's items, each request is sent again on its own."""

    async def main():
        enc = RecordingEncoder(fail_when=lambda p: (p == 13).any())
        c = make(enc, max_items=16, wait_s=0.02, isolate=lambda exc: isinstance(exc, RuntimeError))
        results = await asyncio.gather(c.submit(items(1, 2)), c.submit(items(13)), c.submit(items(3)),
                                       return_exceptions=True)
        assert [float(r[0]) for r in results[0]] == [2, 4] and [float(r[0]) for r in results[2]] == [6]
        assert isinstance(results[1], RuntimeError)
        assert enc.calls == [4, 2, 1, 1]  # the shared call, then one per request
        assert (c.pending, c.inflight) == (0, 0)

    run(main())


def test_systemic_failures_are_not_rerun_per_request():
    async def main():
        enc = RecordingEncoder(fail_when=lambda p: True)
        c = make(enc, max_items=16, wait_s=0.02, isolate=lambda exc: False)
        results = await asyncio.gather(c.submit(items(1)), c.submit(items(2)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results) and enc.calls == [2]

    run(main())


def test_waiting_items_are_bounded_and_overflow_is_refused_at_once():
    from deployments.protocol.errors import APIError

    async def main():
        enc = RecordingEncoder(delay=0.2)
        c = make(enc, max_items=4, max_inflight=1, wait_s=0.0, max_pending=6)
        busy = asyncio.create_task(c.submit(items(0)))  # occupies the only call slot
        await asyncio.sleep(0.01)
        queued = asyncio.create_task(c.submit(items(*range(5))))
        await asyncio.sleep(0)
        assert c.pending == 5
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(APIError) as exc:
            await c.submit(items(1, 2))  # 5 + 2 > 6
        assert loop.time() - started < 0.05  # refused at once, not after the queue drained
        assert exc.value.status_code == 503 and exc.value.headers["Retry-After"] == "1"
        assert exc.value.code == "overloaded"
        await asyncio.gather(busy, queued)
        # an empty queue takes any request, however large
        assert len(await c.submit(items(*range(20)))) == 20
        assert (c.pending, c.inflight) == (0, 0)

    run(main())
