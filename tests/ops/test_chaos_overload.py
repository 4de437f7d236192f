"""Chaos, overload and a short soak on a local multi-node Ray cluster, run by
`python -m deployments bench reliability` in its own process (a second Ray cluster cannot share the test
session's driver). Short windows here; docs/reliability.md records the full-length runs
(`python -m deployments bench reliability overload --seconds 60`, `soak --minutes 30`, `chaos`)."""

from __future__ import annotations

import json
import sys

import pytest
from support.helpers import run_json_scenario

SCENARIO = [sys.executable, "-m", "deployments", "bench", "reliability"]
# Its phases run for the windows given below and wait for healing with deadlines of their
# own; this only stops a hung scenario, before pytest-timeout (600 s) would cut it off.
BUDGET_S = 570
LOAD_CONCURRENCY = 6  # deployments/bench/reliability.py: clients in flight during chaos


@pytest.fixture(scope="module")
def report(model_dir) -> dict:
    command = [*SCENARIO, "all", "--seconds", "8", "--minutes", "0.25", "--heal-wait-s", "8",
               "--model-dir", str(model_dir)]
    return run_json_scenario(command, BUDGET_S)


def test_overload_sheds_fast_in_the_envelope_and_keeps_accepted_latency_bounded(report):
    capacity, over = report["capacity"], report["overload"]
    assert capacity["req_per_s"] > 5 and capacity["failed"] == 0, capacity
    assert over["offered_req_per_s"] >= 2.5 * capacity["req_per_s"], over  # the load really was ~3x
    assert over["failed"] == 0, over  # every answer: 200, or 503 in the envelope (no 5xx, no plain text)
    assert over["rejected"] > over["sent"] / 4, over  # overload was refused ...
    assert over["ok"] >= 0.25 * capacity["req_per_s"] * over["seconds"], over  # ... while work still got done
    # bounds relative to the unloaded run, generous for a shared 2-core machine
    assert over["ok_p99_s"] <= max(5.0, 10 * capacity["ok_p99_s"]), over
    assert over["rejected_p99_s"] <= max(2.0, 4 * capacity["ok_p99_s"]), over
    for replica, before in report["rss_before_mb"].items():
        assert report["rss_after_mb"][replica] - before < 64, (replica, report["rss_after_mb"])  # memory stays flat


def test_short_soak_serves_everything_without_memory_growth(report):
    soak = report["soak"]
    assert soak["sent"] > 100 and soak["failed"] == 0 and soak["rejected"] == 0, soak
    assert all(growth < 32 for growth in soak["rss_growth_mb"].values()), soak["rss_growth_mb"]


def test_a_killed_encoder_replica_fails_no_request(report):
    event = report["chaos"]["encoder_replica_killed"]
    assert event["failed_after_event"] == 0, json.dumps(event)  # its calls were retried on the other replica
    assert event["ok"] > 50, json.dumps(event)


def test_a_killed_router_fails_only_requests_sent_around_its_exit(report):
    """The requests in flight on it had it as their only copy, and a few sent in the moment
    after its process exited still reach it: HAProxy marks it down at its first connection
    error (RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT=1 on local clusters), and never resends a
    request it has sent. Within a second of its exit, every request goes to the other router."""
    event = report["chaos"]["router_replica_killed"]
    assert "gone_after_s" in event["detail"], json.dumps(event)  # its process exited
    assert all(s <= 1.0 for s in event["detail"]["failures_sent_after_gone_s"]), json.dumps(event)
    assert event["recovery_s"] <= 10, json.dumps(event)  # the other router took over
    assert event["ok"] > 50, json.dumps(event)


def test_a_lost_worker_node_is_recovered(report):
    event = report["chaos"]["worker_node_removed"]
    assert event["failed_after_event"] <= LOAD_CONCURRENCY, json.dumps(event)  # encoder calls there were retried
    assert event["recovery_s"] <= 30, json.dumps(event)
    assert event["ok"] > 50, json.dumps(event)
