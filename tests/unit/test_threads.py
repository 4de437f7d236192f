"""Named worker threads: the OS sees their role (top -H, perf, the benchmark's CPU split)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from deployments.engine.threads import DECODE_THREAD, FORWARD_THREAD, TOKENIZE_THREAD, named_pool


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OS thread names are read from /proc")
@pytest.mark.parametrize("name", [FORWARD_THREAD, DECODE_THREAD, TOKENIZE_THREAD])
def test_pool_threads_carry_their_name_into_the_os(name):
    pool = named_pool(2, name)
    try:
        tids = set(pool.map(lambda _: threading.get_native_id(), range(8)))
        comms = {Path(f"/proc/self/task/{tid}/comm").read_text().strip() for tid in tids}
    finally:
        pool.shutdown()
    assert comms == {name}
    # The caller's own thread keeps its name.
    assert Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip() != name
