"""Closed-loop HTTP load for the benchmark: N workers each keep one request in flight.

Bodies are pre-encoded bytes so the client spends as little of the (shared) CPU as
possible; the client runs on the same machine as the service and its cost is part of
what the table shows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np


@dataclass
class LoadResult:
    name: str
    concurrency: int
    items_per_request: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def items_per_s(self) -> float:
        return self.ok * self.items_per_request / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


async def _worker(session, url, bodies, stop_at, record_from, result, offset):
    i = offset
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            return
        body = bodies[i % len(bodies)]
        i += 1
        start = time.perf_counter()
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            await resp.read()
            status = resp.status
        end = time.perf_counter()
        if start < record_from or end > stop_at:
            continue  # only requests wholly inside the measured window count
        if status == 200:
            result.latencies.append(end - start)
        else:
            result.errors[status] = result.errors.get(status, 0) + 1


async def _run(name, url, bodies, concurrency, items_per_request, seconds, warmup_s) -> LoadResult:
    result = LoadResult(name, concurrency, items_per_request, seconds)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        begin = time.perf_counter()
        record_from = begin + warmup_s
        stop_at = record_from + seconds
        await asyncio.gather(
            *(_worker(session, url, bodies, stop_at, record_from, result, k) for k in range(concurrency))
        )
    return result


def run_load(name: str, url: str, bodies: list[bytes], *, concurrency: int, items_per_request: int,
             seconds: float, warmup_s: float = 3.0) -> LoadResult:
    return asyncio.run(_run(name, url, bodies, concurrency, items_per_request, seconds, warmup_s))


def run_alternating(pairs: dict[str, tuple[str, bytes]], *, items_per_request: int, rounds: int,
                    warmup: int = 5) -> dict[str, LoadResult]:
    """One client, sequential requests, the kinds interleaved ABBA so that drift and
    ordering hit each alike; returns one result per kind (name -> (url, body))."""
    import urllib.request

    def timed(url: str, body: bytes) -> tuple[float, int]:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                resp.read()
                return time.perf_counter() - start, resp.status
        except urllib.error.HTTPError as exc:
            return time.perf_counter() - start, exc.code

    names = list(pairs)
    results = {n: LoadResult(n, 1, items_per_request, 0.0) for n in names}
    for _ in range(warmup):
        for n in names:
            timed(*pairs[n])
    for i in range(rounds):
        for n in (names if i % 2 == 0 else names[::-1]):
            elapsed, status = timed(*pairs[n])
            r = results[n]
            r.seconds += elapsed
            if status == 200:
                r.latencies.append(elapsed)
            else:
                r.errors[status] = r.errors.get(status, 0) + 1
    return results
