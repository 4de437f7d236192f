"""OpenAI's own CLIP model code (`clip/model.py` of clip-anytorch), as a reference to check
our architectures and loaders against.

Only that one file is loaded, by path: the package's __init__ imports torchvision (for its
preprocessing), which clip-anytorch is installed without (scripts/install.sh: --no-deps, as
its dependencies would replace the pinned torch). `find_spec` of a top-level package finds
it without running its __init__."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import pytest

INSTALL = "pip install --no-deps clip-anytorch==2.6.0"


@lru_cache(maxsize=1)
def _load() -> ModuleType | None:
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "model.py"
    if not path.is_file():
        return None
    model_spec = importlib.util.spec_from_file_location("openai_clip_model", path)
    module = importlib.util.module_from_spec(model_spec)
    model_spec.loader.exec_module(module)
    return module


def openai_clip_module() -> ModuleType:
    """OpenAI's clip/model.py as a module (CLIP, ModifiedResNet, VisionTransformer, build_model);
    skips the calling test when clip-anytorch is not installed, saying how to install it."""
    module = _load()
    if module is None:
        pytest.skip(f"OpenAI's CLIP code is not installed: {INSTALL} (scripts/install.sh does)")
    return module
