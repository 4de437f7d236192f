"""A separate Ray cluster for job tests: `ray start --head --block` in a subprocess with
its own ports and temp dir, stopped by terminating that subprocess's process group.
Never `ray stop`: it would stop every Ray cluster on the machine, other people's too."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .helpers import free_port

PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", "--node-manager-port",
              "--object-manager-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
              "--metrics-export-port", "--runtime-env-agent-port")


def _processes_mentioning(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@contextmanager
def ray_head(num_cpus: int = 4, timeout_s: float = 180) -> Iterator[tuple[str, Path]]:
    """Yields (dashboard address for JobSubmissionClient, temp dir)."""
    from ray.job_submission import JobSubmissionClient

    # Short path: Ray puts unix sockets under it (path length limit).
    temp_dir = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))
    ports = {flag: free_port() for flag in PORT_FLAGS}
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    cmd = [ray_cli, "start", "--head", "--block", f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
           *(f"{flag}={port}" for flag, port in ports.items())]
    # Jobs must get this checkout from their runtime env (working_dir), not from ours.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    # Ray enables token auth when ~/.ray/auth_token exists; whether it does depends on the
    # machine's history, so this loopback-only test cluster says so explicitly.
    env["RAY_AUTH_MODE"] = "disabled"
    log = open(temp_dir / "ray-start.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        deadline = time.time() + timeout_s
        while True:
            assert proc.poll() is None, (temp_dir / "ray-start.log").read_text()[-3000:]
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        yield address, temp_dir
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # our session only: `ray start` and its children
        except ProcessLookupError:
            pass
        # Once a job has run, `ray start --block` takes about half a minute to stop on SIGTERM
        # (its components wait out their grace periods); this cluster is disposable, so it
        # gets a few seconds and then SIGKILL, and the check below still finds any process
        # of it that survived.
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=60)
        deadline = time.time() + 30
        while _processes_mentioning(str(temp_dir)) and time.time() < deadline:
            time.sleep(0.5)
        leftovers = _processes_mentioning(str(temp_dir))
        for pid in leftovers:  # started by this cluster (they carry its temp dir), so ours to end
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftovers, f"processes of the test cluster outlived it: {leftovers}"
