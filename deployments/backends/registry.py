"""Backend registry: name -> "module:Class". Import strings keep torch/onnxruntime out of
processes that only validate configs or route requests."""

from __future__ import annotations

import importlib
from typing import Any

BACKENDS: dict[str, str] = {
    "torch": "deployments.backends.torch_backend:TorchBackend",
    "onnx": "deployments.backends.onnx_backend:OnnxBackend",
}
# Variant config fields each backend's `load` and `serving_files` take as keyword arguments.
BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {
    "torch": ("allow_pickle_weights", "trust_remote_code", "torch_compile"),
    "onnx": ("onnx_dtype",),
}


def get_backend(name: str) -> Any:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {sorted(BACKENDS)}") from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
