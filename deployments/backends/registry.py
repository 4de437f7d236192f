"""Backend registry: name -> "module:Class". Import strings keep torch/onnxruntime out of
processes that only validate configs or route requests."""

from __future__ import annotations

import importlib
from typing import Any

BACKENDS: dict[str, str] = {
    "torch": "deployments.backends.torch_backend:TorchBackend",
}


def get_backend(name: str) -> Any:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {sorted(BACKENDS)}") from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
