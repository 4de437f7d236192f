"""What the request code (`EmbeddingService`) needs from a served variant.

Serving's `VariantRuntime` (encoders behind Ray handles, with router-side coalescing) and
the jobs' `LocalVariant` (towers in this process) both implement it; a unit test checks
both against it, so a change to one cannot silently break the other.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..preprocess.image_spec import ImageSpec
from ..preprocess.tokenizer import ClipTokenizer


@runtime_checkable
class EmbeddingVariant(Protocol):
    @property
    def id(self) -> str:
        """The served model id."""
        ...

    @property
    def towers(self) -> list[str]:
        """The towers served, "image" and/or "text"."""
        ...

    def serves(self, tower: str) -> bool: ...

    async def wait_ready(self, timeout_s: float) -> None:
        """Return once the towers are loaded; raise a 503 APIError after `timeout_s`."""
        ...

    @property
    def image_spec(self) -> ImageSpec | None:
        """How images are prepared for the image tower (None: not loaded or not served)."""
        ...

    @property
    def tokenizer(self) -> ClipTokenizer | None:
        """The text tower's tokenizer (None: not loaded or not served)."""
        ...

    async def submit(self, tower: str, items: list[np.ndarray]) -> list[np.ndarray]:
        """Embed prepared items (uint8 images, or id sequences) on `tower`: one row per item."""
        ...
