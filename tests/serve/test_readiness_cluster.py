"""A config asking for more CPUs than the cluster has fails at once, naming the resource, what a
replica asks for and what the cluster has, instead of waiting out a deadline (readiness.py)."""

from __future__ import annotations

import time

import pytest
from support.cluster import app_args, apply

from deployments.launch import app_config
from deployments.readiness import NotReady


def test_a_replica_no_node_can_hold_fails_fast_and_names_the_cause(server_port, wide_model_dir):
    too_big = app_args(wide_model_dir)
    too_big["variants"] = too_big["variants"][1:]
    too_big["variants"][0]["image_deployment"] = {"ray_actor_options": {"num_cpus": 64}}
    session_app = app_config(app_args(wide_model_dir))
    start = time.monotonic()
    try:
        with pytest.raises(NotReady) as exc:
            # The deadline is only a backstop: the cause is known as soon as the replica waits.
            apply([session_app, {**app_config(too_big), "name": "too-big", "route_prefix": "/too-big"}],
                  server_port, timeout_s=120)
    finally:
        apply([session_app], server_port)
    message = str(exc.value)
    assert time.monotonic() - start < 120
    assert "ImageEncoder:local--tiny-wide in application 'too-big' cannot be placed" in message
    assert "asks for CPU 64" in message and "largest node: CPU 16" in message
    assert "free in the cluster now: CPU " in message
