"""Moving batches to the device and running them there.

On CUDA each forward thread gets its own stream, and inputs go through pinned (page-locked)
host memory with asynchronous copies: with two batches in flight per replica (the encoder's
`batches_in_flight`), one batch's host-to-device copy runs while the other computes. On CPU
both are no-ops: the array is used in place.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import numpy as np
import torch


class DeviceRunner:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._local = threading.local()

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(array)
        if not self.cuda:
            return host
        # Pinned memory comes from torch's caching host allocator, so this is a memcpy,
        # not a cudaHostAlloc per batch; only pinned sources make non_blocking truly async.
        return host.pin_memory().to(self.device, non_blocking=True)

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """This thread's CUDA stream for everything inside (no-op on CPU)."""
        if not self.cuda:
            yield
            return
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(stream):
            yield
