"""`torch_compile: true`: a tower's forward compiled by torch.compile (inductor) at load,
then served without ever compiling again.

Why: on CPU the compiled forward embeds a few percent more items per CPU-second than eager,
served too (docs/benchmarks.md has the figures; inductor's weight freezing gained nothing
more, so the weights stay shared with the eager module). The cost, and why it is opt-in:
a replica takes markedly longer to start, most with inductor's on-disk cache empty.

One graph covers every batch size >= 2 and every text length (shapes are dynamic); batch 1
gets its own, because dynamo specializes sizes 0 and 1. Both are compiled by warm-up calls
here, so no request ever waits for a compile: the forward that serves runs in dynamo's
run-only mode, where an input no compiled graph accepts runs eagerly instead of compiling
(in the calling forward thread, for tens of seconds).
"""

from __future__ import annotations

import shutil
import types
from typing import Callable

import numpy as np
import torch


class CompileError(RuntimeError):
    pass


def cpu_compiler_available() -> bool:
    """Whether inductor can compile for the CPU: it emits C++ there (Triton on CUDA)."""
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def _own_code(method: Callable) -> Callable:
    """A bound method re-bound as a copy with its own code object. Dynamo keeps graphs per
    code object, and their guards also check process-wide state (torch's thread count,
    transformers' registry of loaded model classes): sharing one cache, every tower instance
    in a process would add entries and invalidate others' until dynamo's recompile limit
    silently turns compiling off. Per instance, a tower has its two graphs, as in a replica."""
    fn = method.__func__
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    return types.MethodType(copy, method.__self__)


def compile_forward(forward: Callable[[torch.Tensor], torch.Tensor], warmup_batches: list[np.ndarray],
                    to_device: Callable[[np.ndarray], torch.Tensor], what: str) -> tuple[Callable, Callable]:
    """(compiled, serving): `compiled` compiles on a guard miss (tests check that warm-up
    covered what they call); `serving` never compiles. Warm-up batches reach the device as
    served ones do: the graphs' guards check strides and inference-mode dispatch keys too."""
    compiled = torch.compile(_own_code(forward), dynamic=True)
    try:
        with torch.inference_mode():
            # The global stance could have been left elsewhere in this process (tests set it).
            with torch.compiler.set_stance("default"):
                for batch in warmup_batches:
                    compiled(to_device(batch))
            # Proof that the graphs now take these batches: a needed compile raises here.
            with torch.compiler.set_stance("fail_on_recompile"):
                for batch in warmup_batches:
                    compiled(to_device(batch))
    except Exception as exc:  # inductor on CPU needs a C++ compiler; remote model code may not trace
        raise CompileError(f"torch_compile: compiling the {what} failed ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); set torch_compile: false "
                           "to serve it eagerly") from exc
    return compiled, torch._dynamo.run(compiled)


def image_warmup(input_hw: tuple[int, int]) -> list[np.ndarray]:
    """uint8 NHWC batches of 2 (the dynamic graph) and 1 (its own graph)."""
    return [np.zeros((n, *input_hw, 3), dtype=np.uint8) for n in (2, 1)]


def text_warmup(bos_id: int, eos_id: int) -> list[np.ndarray]:
    """int32 ids, batches of 2 and 1, three tokens: the length stays dynamic (2..context)."""
    ids = np.array([[bos_id, eos_id, eos_id], [bos_id, bos_id, eos_id]], dtype=np.int32)
    return [ids[:n] for n in (2, 1)]
