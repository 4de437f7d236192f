"""Closed-loop HTTP load for the benchmark: N workers each keep one request in flight.

Bodies are pre-encoded bytes so the client spends as little of the (shared) CPU as
possible; the client runs on the same machine as the service and its cost is part of
what the table shows.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from ..tools import command_parser
from .common import body, captions, request_bodies


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


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("bench load", __doc__)
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="a running clip-serve")
    ap.add_argument("--model", help="served model id (default: the first one /v1/models lists)")
    ap.add_argument("--modality", choices=["image", "text"], default="image")
    ap.add_argument("--items", type=int, default=16, help="images (640x480 JPEG) or texts per request")
    ap.add_argument("--concurrency", type=int, default=4, help="clients, each with one request in flight")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds (after 3 s of warm-up)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..client import ClipClient

    model = args.model or ClipClient(args.url).default_model()
    if args.modality == "image":
        bodies = request_bodies(4, args.items, model)
    else:
        texts = captions(4 * args.items)
        bodies = [body({"input": texts[k:k + args.items]}, model) for k in range(0, len(texts), args.items)]
    result = run_load(f"{args.modality} x{args.items}", f"{args.url}/v1/embeddings", bodies,
                      concurrency=args.concurrency, items_per_request=args.items, seconds=args.seconds)
    print(f"{result.name}, {args.concurrency} in flight: {result.items_per_s:.1f} items/s, p50 {result.pct(50):.3f} s, "
          f"p99 {result.pct(99):.3f} s, errors {result.errors or 'none'}")
    return 0
