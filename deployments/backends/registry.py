"""Backend registry: name -> "module:Class". Import strings keep torch/onnxruntime out of
processes that only validate configs or route requests: a backend module imports its
runtime only when a tower loads, so importing it for its `Options` model is cheap."""

from __future__ import annotations

import importlib
from typing import Any

BACKENDS: dict[str, str] = {
    "torch": "deployments.backends.torch_backend:TorchBackend",
    "onnx": "deployments.backends.onnx_backend:OnnxBackend",
}


def get_backend(name: str) -> Any:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {sorted(BACKENDS)}") from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def options_models() -> dict[str, Any]:
    """Each backend's options model (its class attribute `Options`), by backend name."""
    return {name: get_backend(name).Options for name in BACKENDS}
