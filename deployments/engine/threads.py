"""Thread pools whose threads carry their role into the OS thread name.

Python 3.11 names threads for itself only; the kernel keeps the creator's name
(`ray::IDLE` in a replica). Named threads let `top -H`, `perf` and
`/proc/<pid>/task/*/comm` attribute CPU to a role: the benchmark splits an encoder's
forward threads (and the BLAS/OpenMP threads they start, which inherit the name) from
the rest of its process, and a router's decode threads from its request handling.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from concurrent.futures import ThreadPoolExecutor

FORWARD_THREAD = "clip-forward"
DECODE_THREAD = "clip-decode"
TOKENIZE_THREAD = "clip-tokenize"
_PR_SET_NAME = 15


def _set_os_thread_name(name: str) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except OSError:  # no libc to call: the name is a convenience, never a requirement
        pass


def named_pool(workers: int, os_name: str) -> ThreadPoolExecutor:
    """A pool whose threads are named `os_name` in the OS (at most 15 characters)."""
    return ThreadPoolExecutor(workers, thread_name_prefix=os_name, initializer=_set_os_thread_name,
                              initargs=(os_name,))
