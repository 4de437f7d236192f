"""One heavy request at the limits while a small client keeps sending: the small client's
latency with and without it.

A server's limits bound what one request may claim (pixels, characters, a share of the
decode and tokenizer threads); this measures what a request at those limits does to the
others. Phase one: the small client alone (alternating one small image and one short text
per request, back to back). Phase two: the same, while heavy requests run back to back
beside it, alternating a request of 1-bit PNGs at the pixel limits (5 kB each: every
byte limit respected) and one of texts at the character limits. Targets loopback only.
Prints one JSON report as its last line.

    python -m deployments bench heavy --url http://127.0.0.1:8000 --model clip-demo --seconds 20
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import threading
import time
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image

from ..tools import command_parser

SMALL_TEXT = "a photo of a cat on a sofa"


def png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def small_bodies(model: str) -> list[dict]:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    return [{"model": model, "input": [{"image": png_b64(Image.fromarray(pixels))}]},
            {"model": model, "input": [SMALL_TEXT]}]


def heavy_bodies(model: str, limits: dict) -> dict[str, dict]:
    """Requests at the limits (the ones given; the server's defaults elsewhere)."""
    side = int(limits["max_image_pixels"] ** 0.5)
    images = max(1, min(limits["max_items_per_request"], limits["max_request_pixels"] // (side * side)))
    texts = max(1, min(limits["max_items_per_request"], limits["max_request_text_chars"] // limits["max_text_chars"]))
    words = " ".join(f"word{i}" for i in range(limits["max_text_chars"]))[: limits["max_text_chars"]]
    return {
        f"{images} 1-bit PNGs of {side}x{side}": {
            "model": model, "input": [{"image": png_b64(Image.new("1", (side, side)))}] * images},
        f"{texts} texts of {limits['max_text_chars']} characters": {"model": model, "input": [words] * texts},
    }


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


class Loop:
    """Sends `bodies` in turn, back to back, on one connection until stopped; records each."""

    def __init__(self, url: str, bodies: list[dict], timeout_s: float) -> None:
        self.url, self.bodies, self.timeout_s = url, bodies, timeout_s
        self.results: list[tuple[int, float, int]] = []  # (status, seconds, which body)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as client:
            k = 0
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    status = client.post("/v1/embeddings", json=self.bodies[k % len(self.bodies)]).status_code
                except httpx.HTTPError:
                    status = 0
                self.results.append((status, time.perf_counter() - started, k % len(self.bodies)))
                k += 1

    def run_for(self, seconds: float) -> Loop:
        self.thread.start()
        time.sleep(seconds)
        return self

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(self.timeout_s + 5)


def summary(results: list[tuple[int, float, int]]) -> dict:
    seconds = [s for status, s, _ in results if status == 200]
    return {"requests": len(results), "failed": sum(status != 200 for status, _, _ in results),
            "p50_s": percentile(seconds, 50), "p99_s": percentile(seconds, 99), "max_s": percentile(seconds, 100)}


def measure(url: str, model: str, seconds: float, limits: dict, timeout_s: float = 60.0) -> dict:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"loopback targets only, not {host}")
    small = small_bodies(model)
    alone = Loop(url, small, timeout_s).run_for(seconds)
    alone.finish()
    heavy = heavy_bodies(model, limits)
    beside = Loop(url, small, timeout_s)
    loader = Loop(url, list(heavy.values()), timeout_s)
    loader.thread.start()
    beside.run_for(seconds)
    beside.finish()
    loader.finish()
    names = list(heavy)
    return {
        "seconds_per_phase": seconds,
        "small_alone": summary(alone.results),
        "small_beside_heavy": summary(beside.results),
        "heavy": {names[k]: summary([r for r in loader.results if r[2] == k]) for k in range(len(names))},
    }


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("bench heavy", __doc__)
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="a running clip-serve (loopback only)")
    ap.add_argument("--model", default="clip-demo", help="served model id")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per phase")
    ap.add_argument("--limits", default="{}", help="the server's limits where not the defaults (JSON)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..config import LimitsConfig

    limits = LimitsConfig(**json.loads(args.limits)).model_dump()
    print(json.dumps(measure(args.url, args.model, args.seconds, limits)))
    return 0
