"""The session cluster runs the checkout under test (tests/conftest.py sets PYTHONPATH before Ray starts)."""

from __future__ import annotations

from support.helpers import REPO


def test_ray_workers_import_this_checkout(server):
    from ray import serve

    encoder = serve.get_deployment_handle("TextEncoder:openai--clip-vit-base-patch32", app_name="clip")
    assert encoder.stats.remote().result()["module"].startswith(str(REPO))
