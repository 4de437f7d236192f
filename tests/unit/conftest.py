"""The unit tier runs without a Ray cluster: fail any unit test that starts one. (In a full
run the serve tier's session cluster may already be up; only a cluster started by the
test itself counts.)"""

from __future__ import annotations

import sys

import pytest


def ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.fixture(autouse=True)
def no_ray_cluster():
    before = ray_running()
    yield
    if not before and ray_running():
        pytest.fail("a unit test started Ray; it belongs in tests/serve or tests/ops")
