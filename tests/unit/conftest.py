"""The unit tier runs without a Ray cluster: fail any test after which one is running."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def no_ray_cluster():
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        pytest.fail("a unit test started Ray; it belongs in tests/serve or tests/ops")
