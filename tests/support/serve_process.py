"""`python -m deployments serve` as a user runs it: in its own process with a Ray cluster of
its own, read until its banner, stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from .helpers import REPO, free_port

BANNER_END = "API docs:"  # the banner's last line


class ServeProcess:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **env}
        environment.pop("RAY_ADDRESS", None)  # a cluster of its own, as on a fresh machine
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deployments", "serve", "--port", str(self.port), "--num-cpus", "4", *args],
            cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def banner(self, timeout_s: float) -> str:
        """Everything printed up to the banner's last line; fails with the tail if it never came."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
            self.output.append(line)
            if BANNER_END in line:
                break
        text = "".join(self.output)
        assert "clip-serve is up" in text, "".join(self.output[-40:])
        return text

    def interrupt(self) -> float:
        """Ctrl-C; the seconds it took to exit. Killed, and an error, past 60 s."""
        stopping = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return time.monotonic() - stopping


@contextmanager
def serving(args: list[str], env: dict[str, str]) -> Iterator[ServeProcess]:
    """A `serve` process for the block; on leaving it, Ctrl-C must end it with status 0
    within 30 s (it does not sit out Serve's 30 s ingress drain)."""
    server = ServeProcess(args, env)
    try:
        yield server
    finally:
        seconds = server.interrupt()
    assert server.proc.returncode == 0, "".join(server.output[-40:]) + server.proc.stdout.read()[-4000:]
    assert seconds < 30, seconds
