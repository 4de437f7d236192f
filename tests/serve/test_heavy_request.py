"""A request at every limit at once (pixels, characters) does not starve the others: a small
client keeps getting answers, with its p99 within a bound of its p99 alone, while heavy
requests run back to back beside it (`python -m deployments bench heavy`; docs/reliability.md has
the figures)."""

from __future__ import annotations

import json
from support.cluster import app_args
from support.helpers import HUB_ID

from deployments.bench.heavy import measure
from deployments.config import LimitsConfig


def test_small_requests_keep_going_beside_heavy_ones(server, wide_model_dir):
    limits = LimitsConfig(**app_args(wide_model_dir)["limits"]).model_dump()
    report = measure(server, HUB_ID, seconds=12, limits=limits)
    print(json.dumps(report))
    alone, beside = report["small_alone"], report["small_beside_heavy"]
    assert alone["failed"] == 0 and beside["failed"] == 0, report
    for name, heavy in report["heavy"].items():
        assert heavy["requests"] >= 1 and heavy["failed"] == 0, (name, report)
    # Other sessions share this machine's CPUs: compare within the run, with a floor.
    assert beside["p99_s"] <= max(10 * alone["p99_s"], 2.0), report
