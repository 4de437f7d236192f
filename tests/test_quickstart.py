"""The README's first command, minus the install: `python -m deployments serve` builds the
embedded demo model offline, serves it, answers curl, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from helpers import REPO, b64, encode, free_port, natural_image


def test_serve_command_runs_the_demo_offline(tmp_path):
    port = free_port()
    env = {**os.environ, "CLIP_SERVE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments", "serve", "--port", str(port), "--num-cpus", "4"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            output.append(line)
            if "clip-serve is up" in line:
                break
        assert any("clip-serve is up" in line for line in output), "".join(output[-40:])
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(f"{base}/v1/embeddings", json={
            "model": "clip-demo", "input": ["a photo of a cat", {"image": b64(encode(natural_image(80, 60)))}]})
        assert r.status_code == 200, r.text
        assert [len(d["embedding"]) for d in r.json()["data"]] == [64, 64]
        assert (tmp_path / "home" / "demo-v1" / "model.safetensors").is_file()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0
