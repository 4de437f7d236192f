"""The demo model, trained in the background while the rest of the session runs.

Training it is the largest piece of CPU work in the suite, and nothing in it depends on
timing, while most other tests spend part of their time waiting (replica start-ups,
polling, load windows). So the session starts the training in its own process at the
lowest CPU priority Linux has (SCHED_IDLE: it runs only on a core nothing else wants, and
is preempted as soon as anything else wakes, so the timing-sensitive scenarios keep the
machine as before), and the tests that need the model run last (tests/conftest.py).
By then it is usually done; if not, its priority is raised and the session waits for it.

It is the product's own `ensure_demo_model`, which takes a file lock per cache folder, so
a second builder (the fixture, a `serve` process) waits for this one rather than racing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .helpers import REPO

_TRAIN = "import sys; from pathlib import Path; from deployments.demo import ensure_demo_model; " \
         "ensure_demo_model(Path(sys.argv[1]))"


def _lowest_priority() -> None:
    """In the child before exec: SCHED_IDLE where the OS has it, else the highest nice value."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def _normal_priority(pid: int) -> None:
    """Every thread of `pid` back to the default policy: the session now waits for it.
    Best effort: an unprivileged user may not be allowed to, and then it still gets every
    core the waiting session leaves idle."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            os.sched_setscheduler(int(task.name), os.SCHED_OTHER, os.sched_param(0))
        except (AttributeError, OSError, ValueError):
            pass


class BackgroundDemoBuild:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder.parent / f"{folder.name}.build.log"
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as out:
            self.process = subprocess.Popen([sys.executable, "-c", _TRAIN, str(folder)], cwd=REPO,
                                            stdout=out, stderr=subprocess.STDOUT, preexec_fn=_lowest_priority)

    def result(self, timeout_s: float) -> Path:
        """The trained folder, once the build is done; its log if it failed."""
        if self.process.poll() is None:
            _normal_priority(self.process.pid)
        code = self.process.wait(timeout=timeout_s)
        if code != 0 or not (self.folder / "model.safetensors").is_file():
            raise RuntimeError(f"the demo model's background build failed (exit {code}):\n"
                               + self.log.read_text()[-4000:])
        return self.folder

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
