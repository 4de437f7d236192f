"""Image-heavy load scales the image tower up while the text tower stays at its minimum,
and both come back down after; draining a node (the pods' preStop hook) moves its replicas
elsewhere without failing requests. On a local multi-node Ray cluster whose encoders are
placed on "GPU" worker nodes by a custom resource (tests/support/multinode_autoscale.py, run in its
own process because it starts a second Ray cluster)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support.helpers import run_json_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "support" / "multinode_autoscale.py"
IMAGE, TEXT, ROUTER = "ImageEncoder:tiny", "TextEncoder:tiny", "Router"
# The scenario's phases wait with deadlines of their own (tests/support/multinode_autoscale.py);
# this only stops a hung scenario, in time for pytest-timeout (600 s) not to cut it off first.
BUDGET_S = 570


@pytest.fixture(scope="module")
def report(model_dir) -> dict:
    return run_json_scenario([sys.executable, str(SCENARIO), str(model_dir)], BUDGET_S)


def test_image_load_scales_only_the_image_tower(report):
    assert report["before"] == {IMAGE: 1, TEXT: 1, ROUTER: 1}
    assert report["scaled_up"], report["timeline"]
    under_load = [s for s in report["timeline"] if s["t"] <= report["load_stopped_at"]]
    peak = max(s[IMAGE] for s in under_load)
    assert 2 <= peak <= 3, report["timeline"]  # up, and never past max_replicas
    assert {s[TEXT] for s in under_load} == {1}  # no text traffic: the text tower stays at its minimum
    assert {s[ROUTER] for s in under_load} == {1}  # routers scale on their own (higher) target
    assert set(report["requests"]) == {"ok"} and report["requests"]["ok"] > 100  # nothing failed while scaling


def test_encoders_run_on_the_gpu_standin_nodes(report):
    for deployment in (IMAGE, TEXT):
        nodes = set(report["encoder_nodes"][deployment])
        assert nodes and nodes <= set(report["gpu_nodes"]), (deployment, nodes)


def test_both_towers_come_back_down(report):
    assert report["scaled_down"], report["timeline"]
    final = report["timeline"][-1]
    assert (final[IMAGE], final[TEXT]) == (1, 1)


def test_prestop_drain_moves_replicas_off_the_node_without_failing_requests(report):
    drain = report["drain"]
    assert drain["output"]["accepted"], drain
    assert drain["output"]["replicas_left"] == []  # it returned because the node emptied, not by deadline
    assert drain["node"] not in drain["image_nodes_after"]  # the image replica now runs elsewhere
    assert set(drain["image_nodes_after"]) <= set(report["gpu_nodes"])
    assert set(drain["requests"]) == {"ok"} and drain["requests"]["ok"] > 10  # no request failed meanwhile
