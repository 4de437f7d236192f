"""Parsed input items -> model inputs, with the API's limits and error messages.

The router (EmbeddingService) and the offline batch job both go through here, so a text
or image is tokenized, decoded, resized and rejected the same way online and offline.
"""

from __future__ import annotations

import numpy as np

from ..protocol.errors import APIError
from ..protocol.inputs import Item, TextItem, TokensItem
from .images import ImageError, ImageLimits
from .tokenizer import ClipTokenizer, InvalidTokensError, TextTooLongError


def image_api_error(error: ImageError, param: str | None) -> APIError:
    return APIError(error.status, str(error), param=param,
                    code="image_too_large" if error.status == 413 else "invalid_image")


class ItemPreprocessor:
    def __init__(self, image_limits: ImageLimits, max_text_chars: int, max_request_chars: int) -> None:
        self.image_limits = image_limits
        self.max_text_chars = max_text_chars
        self.max_request_chars = max_request_chars

    def tokenize(self, tokenizer: ClipTokenizer, items: list[Item], truncate: bool) -> list[np.ndarray]:
        """Text and token items -> id sequences (BOS ... EOS), in order; APIError names the bad item."""
        out: list[np.ndarray | None] = [None] * len(items)
        plain = [(k, it) for k, it in enumerate(items) if isinstance(it, TextItem)]
        self.check_chars([it for _, it in plain])
        try:
            encoded = tokenizer.encode([it.text for _, it in plain], truncate)
        except TextTooLongError as exc:
            raise APIError.invalid(str(exc), param=plain[exc.index][1].param, code="context_length_exceeded") from None
        for (k, _), enc in zip(plain, encoded):
            out[k] = enc.ids
        for k, it in enumerate(items):
            if isinstance(it, TokensItem):
                try:
                    out[k] = tokenizer.wrap_ids(it.ids, truncate).ids
                except TextTooLongError as exc:
                    raise APIError.invalid(str(exc), param=it.param, code="context_length_exceeded") from None
                except InvalidTokensError as exc:
                    raise APIError.invalid(str(exc), param=it.param) from None
        return out  # type: ignore[return-value]

    def check_chars(self, items: list[TextItem], param: str = "input") -> None:
        """Each text within limits.max_text_chars, all of them within limits.max_request_text_chars."""
        total = 0
        for it in items:
            if len(it.text) > self.max_text_chars:
                raise APIError.too_large(
                    f"text has {len(it.text)} characters, over the limit of {self.max_text_chars}", param=it.param
                )
            total += len(it.text)
        if total > self.max_request_chars:
            raise APIError.too_large(
                f"the texts of this request have {total} characters in all, over the limit of "
                f"{self.max_request_chars} per request (limits.max_request_text_chars)", param=param,
            )
