"""The README's first command, minus the install: `python -m deployments serve` serves the
embedded demo model offline (trained once per test session into CLIP_SERVE_HOME, as the
first start would), prints a working example, answers curl through the default ingress
(HAProxy), and stops cleanly on Ctrl-C. (`serve --ingress proxy`, Serve's Python proxy, is
the launch in tests/ops/test_clip_family.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from support.helpers import REPO, b64, encode, free_port, listening_process, natural_image



def start(demo_home) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "CLIP_SERVE_HOME": str(demo_home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments", "serve", "--port", str(port), "--num-cpus", "4"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return proc, port


def check_running(proc: subprocess.Popen, port: int, demo_home, demo_model_dir) -> None:
    output: list[str] = []
    deadline = time.time() + 240
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        output.append(line)
        if "API docs:" in line:  # the banner's last line
            break
    text = "".join(output)
    assert "clip-serve is up" in text, "".join(output[-40:])
    assert "python -m deployments sample-image red circle --out shape.png" in text and "/v1/classify" in text
    assert "training the demo model" not in text  # reused from the cache
    base = f"http://127.0.0.1:{port}"
    r = httpx.post(f"{base}/v1/embeddings", json={
        "model": "clip-demo", "input": ["a photo of a cat", {"image": b64(encode(natural_image(80, 60)))}]})
    assert r.status_code == 200, r.text
    assert [len(d["embedding"]) for d in r.json()["data"]] == [64, 64]
    assert (demo_model_dir / "model.safetensors").is_file() and demo_model_dir.parent == demo_home
    assert listening_process(port).endswith("/haproxy")  # the default ingress answers on the public port


def test_serve_command_runs_the_demo_offline(demo_home, demo_model_dir):
    proc, port = start(demo_home)
    try:
        check_running(proc, port, demo_home, demo_model_dir)
    finally:
        stopping = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0
    assert time.monotonic() - stopping < 30  # Ctrl-C does not sit out Serve's 30 s ingress drain
