"""The README's first command, minus the install: `python -m deployments serve` serves the
embedded demo model offline (trained once per test session into CLIP_SERVE_HOME, as the
first start would), prints a working example, answers curl through the default ingress
(HAProxy), and stops cleanly on Ctrl-C. (`serve --ingress proxy`, Serve's Python proxy, is
the launch in tests/ops/test_clip_family.py.)"""

from __future__ import annotations

import httpx
from support.helpers import b64, encode, listening_process, natural_image
from support.serve_process import serving


def test_serve_command_runs_the_demo_offline(demo_home, demo_model_dir):
    with serving([], {"CLIP_SERVE_HOME": str(demo_home)}) as server:
        text = server.banner(timeout_s=240)
        assert "python -m deployments sample-image red circle --out shape.png" in text and "/v1/classify" in text
        assert "training the demo model" not in text  # reused from the cache
        r = httpx.post(f"{server.base}/v1/embeddings", json={
            "model": "clip-demo", "input": ["a photo of a cat", {"image": b64(encode(natural_image(80, 60)))}]})
        assert r.status_code == 200, r.text
        assert [len(d["embedding"]) for d in r.json()["data"]] == [64, 64]
        assert (demo_model_dir / "model.safetensors").is_file() and demo_model_dir.parent == demo_home
        assert listening_process(server.port).endswith("/haproxy")  # the default ingress answers on the public port
