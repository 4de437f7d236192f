"""The README's first command, minus the install: `python -m deployments serve` serves the
embedded demo model offline (trained once per test session into CLIP_SERVE_HOME, as the
first start would), prints a working example, answers curl, and stops cleanly on Ctrl-C,
through either ingress (HAProxy, the default, or Serve's Python proxy)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from support.helpers import REPO, b64, encode, free_port, listening_process, natural_image

LISTENER = {"haproxy": "/haproxy", "proxy": "ray::ProxyActor"}  # what answers on the public port


INGRESSES = {"default-haproxy": None, "proxy": "proxy"}  # `--ingress` as given (None: the default)


def start(demo_home, ingress: str | None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "CLIP_SERVE_HOME": str(demo_home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments", "serve", "--port", str(port), "--num-cpus", "4",
         *(["--ingress", ingress] if ingress else [])],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return proc, port


def check_running(proc: subprocess.Popen, port: int, ingress: str | None, demo_home, demo_model_dir) -> None:
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
    listener = listening_process(port)
    expected = LISTENER[ingress or "haproxy"]
    assert listener.endswith(expected) if expected.startswith("/") else listener.startswith(expected), listener


def test_serve_command_runs_the_demo_offline(demo_home, demo_model_dir):
    """Both ingresses at once, each `serve` with a cluster of its own: their start-ups and
    shutdowns mostly wait, so side by side they take little longer than one."""
    servers = {name: start(demo_home, ingress) for name, ingress in INGRESSES.items()}
    try:
        for name, (proc, port) in servers.items():
            check_running(proc, port, INGRESSES[name], demo_home, demo_model_dir)
    finally:
        stopping = time.monotonic()
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGINT)
        for proc, _ in servers.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                for other, _ in servers.values():
                    other.kill()
                raise
    assert {name: proc.returncode for name, (proc, _) in servers.items()} == dict.fromkeys(INGRESSES, 0)
    assert time.monotonic() - stopping < 30  # Ctrl-C does not sit out Serve's 30 s ingress drain
