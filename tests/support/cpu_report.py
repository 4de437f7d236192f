"""`pytest --cpu-report FILE`: for each test phase (setup, call, teardown), the wall time and
the machine's busy CPU time over it, so that the phases that wait rather than work (start-ups,
sleeps, polling) stand out: a phase with many seconds and few busy cores is waiting.

Machine-wide CPU (from /proc/stat) rather than this process's: the work of a test is mostly
done by Ray workers and subprocesses. Linux only; elsewhere the option records wall time alone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--cpu-report", metavar="FILE", help="write per-phase wall and busy-CPU seconds to FILE (TSV)")


def _busy_cpu_s() -> float:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class _Recorder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.rows: list[tuple[str, str, float, float]] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item):
        yield from self._timed(item, "setup")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        yield from self._timed(item, "call")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item):
        yield from self._timed(item, "teardown")

    def _timed(self, item, phase):
        wall, busy = time.perf_counter(), _busy_cpu_s()
        yield
        self.rows.append((item.nodeid, phase, time.perf_counter() - wall, _busy_cpu_s() - busy))

    def pytest_sessionfinish(self):
        cores = os.cpu_count() or 1
        wall = sum(r[2] for r in self.rows)
        busy = sum(r[3] for r in self.rows)
        lines = ["wall_s\tbusy_cpu_s\tbusy_cores\tphase\ttest"]
        for nodeid, phase, w, b in sorted(self.rows, key=lambda r: -r[2]):
            lines.append(f"{w:.2f}\t{b:.2f}\t{b / w if w else 0:.2f}\t{phase}\t{nodeid}")
        lines.append(f"# total: {wall:.0f} s wall, {busy:.0f} s busy CPU, {busy / wall if wall else 0:.2f} of "
                     f"{cores} cores on average")
        Path(self.path).write_text("\n".join(lines) + "\n")


def pytest_configure(config):
    path = config.getoption("--cpu-report")
    if path:
        config.pluginmanager.register(_Recorder(path), "cpu-report")
